"""File operations on the paths a user gives: checks before anything is written, text and JSON read with the
checks a hostile file needs, and every write made atomic by one helper, `renamed_into_place`: a failed or killed
write leaves the previous file or none, never half of one.
"""

import contextlib
import json
import math
import os
import re
import shutil

import tensorflow as tf

import errors

# A model's JSON files (config.json, tokenizer_config.json) are a few KB: this bounds what a hostile one costs to
# parse (4 MiB of "{}," is about 100 MB of dicts).
MODEL_JSON_BYTES = 4 * 2**20
# Deeper than any config, results or dataset file (Hugging Face configs nest 3 levels); json.loads recurses per level.
MAX_JSON_DEPTH = 64
# Characters of one JSON number: float64's shortest round trip is at most 24; an int of 5,000 digits is an attack.
MAX_JSON_NUMBER_LENGTH = 40
# What a write in progress is named: `path` and this suffix. A run directory's resume deletes what a kill left.
TEMPORARY_SUFFIX = ".tmp-"


def check_can_write_file(path):
    """Raises FileError unless a file can be written at `path`: its directory exists, and it is no directory."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise errors.FileError(f"cannot write {path}: it is a directory")
    if not os.path.isdir(directory):
        raise errors.FileError(f"cannot write {path}: {directory} is not a directory")
    if not os.access(directory, os.W_OK):
        raise errors.FileError(f"cannot write {path}: no permission to write in {directory}")


def check_new_directory(path):
    """Raises FileError if `path` exists, else unless it can be made a directory: what is written as a whole
    (a SavedModel, a Hugging Face directory) is never written over another."""
    if os.path.exists(path):
        raise errors.FileError(f"{path} exists already: choose a new directory")
    check_can_make_directory(path)


def check_can_make_directory(path):
    """Raises FileError unless `path` is a directory or can be made one: the nearest existing path on the way
    up is a directory that can be written in."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise errors.FileError(f"cannot make directory {path}: {existing} is not a directory")
    if existing != os.path.abspath(path) and not os.access(existing, os.W_OK):
        raise errors.FileError(f"cannot make directory {path}: no permission to write in {existing}")


def read_lines(path):
    """The lines of the text file `path` (local or any file system TensorFlow reads), newlines kept; FileError
    naming the line that is not UTF-8."""
    if tf.io.gfile.isdir(path):
        raise errors.FileError(f"{path} is a directory, not a text file")
    with tf.io.gfile.GFile(path, "rb") as f:
        return decode_lines(f.readlines(), path)


def decode_lines(raw_lines, source):
    """Byte lines (of a file, of standard input) as text; FileError naming `source` and the line that is not
    UTF-8."""
    lines = []
    for number, raw in enumerate(raw_lines, start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            reason = f"{error.reason} at byte {error.start}"
            raise errors.FileError(f"{source} line {number} is not UTF-8 text ({reason})") from None
    return lines


def read_json(path, max_bytes=None):
    """The JSON value in the file `path`; FileError naming the file if it is not UTF-8 JSON, is larger than
    `max_bytes`, nests deeper than MAX_JSON_DEPTH, holds a number of more than MAX_JSON_NUMBER_LENGTH characters
    or NaN / Infinity (which JSON does not have)."""
    with open(path, "rb") as f:
        raw = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(raw) > max_bytes:
        raise errors.FileError(f"{path} is larger than {max_bytes:,} bytes: too large for the JSON it should hold")
    try:
        return parse_json(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as error:
        raise errors.FileError(f"{path} is not valid JSON: {error}") from None


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


@contextlib.contextmanager
def renamed_into_place(path):
    """A temporary path next to `path`, for the block to write a file or a directory at; renamed to `path` when the
    block ends, removed if it raises. A file at `path` is replaced; a directory must not exist yet."""
    temporary = f"{path}{TEMPORARY_SUFFIX}{os.getpid()}"
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.isdir(temporary):
            shutil.rmtree(temporary, ignore_errors=True)
        elif os.path.exists(temporary):
            os.remove(temporary)


def write_text_atomically(path, text):
    """Writes `text` to `path` through `renamed_into_place`."""
    with renamed_into_place(path) as temporary, open(temporary, "w", encoding="utf-8") as f:
        f.write(text)


def write_json_atomically(path, value):
    """Writes `value` as indented JSON to `path` through `renamed_into_place`; NaN is refused (ValueError)."""
    write_text_atomically(path, json.dumps(value, indent=2, allow_nan=False) + "\n")
