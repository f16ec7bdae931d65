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


def check_can_write_file(path):
    """Raises InputError unless a file can be written at `path`: its directory exists, and it is no directory."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise InputError(f"cannot write {path}: it is a directory")
    if not os.path.isdir(directory):
        raise InputError(f"cannot write {path}: {directory} is not a directory")
    if not os.access(directory, os.W_OK):
        raise InputError(f"cannot write {path}: no permission to write in {directory}")


def check_can_make_directory(path):
    """Raises InputError unless `path` is a directory or can be made one: the nearest existing path on the way
    up is a directory that can be written in."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise InputError(f"cannot make directory {path}: {existing} is not a directory")
    if existing != os.path.abspath(path) and not os.access(existing, os.W_OK):
        raise InputError(f"cannot make directory {path}: no permission to write in {existing}")


def read_lines(path):
    """The lines of the text file `path` (local or any file system TensorFlow reads), newlines kept; InputError
    naming the line that is not UTF-8."""
    if tf.io.gfile.isdir(path):
        raise InputError(f"{path} is a directory, not a text file")
    with tf.io.gfile.GFile(path, "rb") as f:
        return decode_lines(f.readlines(), path)


def decode_lines(raw_lines, source):
    """Byte lines (of a file, of standard input) as text; InputError naming `source` and the line that is not
    UTF-8."""
    lines = []
    for number, raw in enumerate(raw_lines, start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            reason = f"{error.reason} at byte {error.start}"
            raise InputError(f"{source} line {number} is not UTF-8 text ({reason})") from None
    return lines


def read_json(path):
    """The JSON value in the file `path`; InputError naming the file if it is not UTF-8 JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON: {error}") from None


def write_json_atomically(path, value):
    """Writes JSON next to `path` and renames it into place: a reader sees the old file or the new one."""
    write_text_atomically(path, json.dumps(value, indent=2, allow_nan=False) + "\n")


def write_text_atomically(path, text):
    """Writes `text` next to `path` and renames it into place; a failed write (a full disk) leaves no trace."""
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
