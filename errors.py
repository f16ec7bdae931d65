"""Bad input and how every script reports it: one line on stderr and a non-zero exit, never a traceback.

Library code raises `InputError` (or a subclass) for anything the user can put right: a flag value, a path,
the contents of a file. Scripts run their `main` through `run`, which turns that, a file-system error and a
file that cannot be decoded into the one line. Writers of result files use `write_json_atomically`, so a
failed write leaves the previous file or none, never half of one.
"""

import json
import os
import sys

import tensorflow as tf
from absl import app, flags


class InputError(Exception):
    """Something the user gave is wrong: a flag value, a path, a file's contents. The message says which."""


# What TensorFlow raises for a path it cannot read or write (tf.io.gfile, checkpoints, SavedModels).
FILE_SYSTEM_ERRORS = (
    tf.errors.NotFoundError,
    tf.errors.PermissionDeniedError,
    tf.errors.FailedPreconditionError,
    tf.errors.AlreadyExistsError,
)


def one_line(error):
    """The message of an error the user can act on, as one line."""
    if isinstance(error, OSError) and error.filename is not None:
        message = f"{error.filename}: {error.strerror or error}"
    elif isinstance(error, tf.errors.OpError):
        message = error.message
    else:
        message = str(error)
    return " ".join(message.split())


def run(main):
    """`absl.app.run(main)`, with bad input, flag values included, reported as `error: <one line>` on stderr
    and exit status 1."""

    def parse_flags(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            sys.exit(f"error: {one_line(error)}")

    def main_reporting_bad_input(argv):
        try:
            return main(argv)
        except (InputError, OSError, UnicodeDecodeError, *FILE_SYSTEM_ERRORS) as error:
            sys.exit(f"error: {one_line(error)}")

    app.run(main_reporting_bad_input, flags_parser=parse_flags)


def read_json(path):
    """The JSON value in the file `path`; InputError naming the file if it is not UTF-8 JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON: {error}") from None


def write_json_atomically(path, value):
    """Writes JSON next to `path` and renames it into place: a reader sees the old file or the new one."""
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=2, allow_nan=False)
            f.write("\n")
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
