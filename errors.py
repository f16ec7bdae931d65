"""Bad input and how every script reports it: one line on stderr and a non-zero exit, never a traceback.

Library code raises `InputError` (or a subclass) for anything the user can put right: a flag value, a path,
the contents of a file. Scripts run their `main` through `run`, which turns that, a file-system error and a
file that cannot be decoded into the one line. Writers of result files use `write_json_atomically`, so a
failed write leaves the previous file or none, never half of one.
"""

import json
import math
import os
import re
import sys
import unicodedata

import tensorflow as tf
from absl import app, flags


class InputError(Exception):
    """Something the user gave is wrong: a flag value, a path, a file's contents. The message says which."""


# A model's JSON files (config.json, tokenizer_config.json) are a few KB: this bounds what a hostile one costs to
# parse (4 MiB of "{}," is about 100 MB of dicts).
MODEL_JSON_BYTES = 4 * 2**20
# Deeper than any config, results or dataset file (Hugging Face configs nest 3 levels); json.loads recurses per level.
MAX_JSON_DEPTH = 64
# Characters of one JSON number: float64's shortest round trip is at most 24; an int of 5,000 digits is an attack.
MAX_JSON_NUMBER_LENGTH = 40
# An error line is cut here: a file can put a name of any length into a message.
MAX_ERROR_LENGTH = 2000

# What TensorFlow raises for a path it cannot read or write (tf.io.gfile, checkpoints, SavedModels).
FILE_SYSTEM_ERRORS = (
    tf.errors.NotFoundError,
    tf.errors.PermissionDeniedError,
    tf.errors.FailedPreconditionError,
    tf.errors.AlreadyExistsError,
)


def one_line(error):
    """The message of an error the user can act on, as one line: control characters a file put into it escaped
    (a terminal would obey them), cut at MAX_ERROR_LENGTH."""
    if isinstance(error, OSError) and error.filename is not None:
        message = f"{error.filename}: {error.strerror or error}"
    elif isinstance(error, tf.errors.OpError):
        message = error.message
    else:
        message = str(error)
    message = "".join(_printable(char) for char in " ".join(message.split()))
    return message if len(message) <= MAX_ERROR_LENGTH else message[: MAX_ERROR_LENGTH - 3] + "..."


def _printable(char):
    """`char`, or its escape if it is a control, format, surrogate or unassigned character."""
    return char if unicodedata.category(char)[0] != "C" else char.encode("unicode_escape").decode("ascii")


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


def read_json(path, max_bytes=None):
    """The JSON value in the file `path`; InputError naming the file if it is not UTF-8 JSON, is larger than
    `max_bytes`, nests deeper than MAX_JSON_DEPTH, holds a number of more than MAX_JSON_NUMBER_LENGTH characters
    or NaN / Infinity (which JSON does not have)."""
    with open(path, "rb") as f:
        raw = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(raw) > max_bytes:
        raise InputError(f"{path} is larger than {max_bytes:,} bytes: too large for the JSON it should hold")
    try:
        return parse_json(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{path} is not valid JSON: {error}") from None


def parse_json(text):
    """json.loads(text), refusing what a hostile file would use to exhaust the parser or what reads it (ValueError):
    nesting deeper than MAX_JSON_DEPTH (json recurses per level), numbers longer than MAX_JSON_NUMBER_LENGTH or
    beyond float64, NaN and Infinity."""
    depth = 0
    for bracket in re.findall(r"[][{}]", re.sub(r'"(?:[^"\\]|\\.)*"', "", text)):  # brackets outside strings
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"it nests deeper than {MAX_JSON_DEPTH} levels")
    return json.loads(text, parse_int=_json_number(int), parse_float=_json_number(float), parse_constant=_no_constant)


def _json_number(kind):
    def parse(text):
        if len(text) > MAX_JSON_NUMBER_LENGTH:
            raise ValueError(f"it holds a number of {len(text)} characters (at most {MAX_JSON_NUMBER_LENGTH})")
        number = kind(text)
        if not math.isfinite(number):
            raise ValueError(f"it holds {text}, beyond the range of a float")
        return number

    return parse


def _no_constant(name):
    raise ValueError(f"it holds {name}, which is not a JSON number")


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
