"""File operations on the paths a user gives, local or on any file system TensorFlow reads (gs://, and ram://,
its in-memory one, for tests): checks before anything is written, text and JSON read with the checks a hostile
file needs, and every write made atomic by one helper, `renamed_into_place`.

Everything goes through tf.io.gfile, but for files opened on the local disk, which keep Python's `open` (and its
errors). A local rename is atomic: a failed or killed write leaves the previous file or none, never half of one.
On a bucket a rename is a copy and a delete, file by file: a kill during it can leave the new file beside the
temporary one, or a directory half moved under its final name (a run directory's resume deletes temporaries).
"""

import contextlib
import errno
import itertools
import json
import math
import os
import re
import tempfile

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


# === Paths ===


def is_url(path):
    """Whether `path` names a file system of TensorFlow's other than the local one (gs://bucket/x, ram://x)."""
    return "://" in os.fspath(path)


def absolute(path):
    """`path` made absolute against the current directory; a URL as it is."""
    return os.fspath(path) if is_url(path) else os.path.abspath(path)


def parent(path):
    """The directory of `path`; None above a URL's root (`gs://bucket` has none) or the local root."""
    directory = os.path.dirname(absolute(path).rstrip("/"))
    if directory == os.fspath(path) or (is_url(path) and "://" not in directory) or directory.endswith("://"):
        return None
    return directory


def exists(path):
    return tf.io.gfile.exists(path) and _listed(path)


def isdir(path):
    return tf.io.gfile.isdir(path) and _listed(path)


def exists_as_path_or_prefix(path):
    """Whether `path` is a file or directory, or the prefix of a TensorFlow checkpoint (`path.index`)."""
    return exists(path) or exists(f"{path}.index")


def _listed(path):
    """Whether a URL is listed in its directory (a local path: True). ram:// takes a name that begins another for
    a file and a directory (model.ckpt, of model.ckpt.index); the listing of its directory does not."""
    directory = parent(path) if is_url(path) else None
    if directory is None:
        return True
    return os.path.basename(os.fspath(path).rstrip("/")) in {
        name.rstrip("/") for name in tf.io.gfile.listdir(directory)
    }


def makedirs(path):
    tf.io.gfile.makedirs(path)


def glob(pattern):
    return tf.io.gfile.glob(pattern)


def remove(path):
    tf.io.gfile.remove(path)


def rmtree(path):
    """Removes the directory `path` with everything in it, if it exists."""
    if isdir(path):
        tf.io.gfile.rmtree(path)


def copy(source, target):
    tf.io.gfile.copy(source, target, overwrite=True)


def size(path):
    return tf.io.gfile.stat(path).length


def open_file(path, mode="rb"):
    """A file object of `path`: Python's `open` on the local disk, tf.io.gfile.GFile elsewhere."""
    if is_url(path):
        return tf.io.gfile.GFile(path, mode)
    return open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"}))  # noqa: SIM115 (the caller's with)


# === Checks before writing ===


def check_can_write_file(path):
    """Raises FileError unless a file can be written at `path`: its directory exists, and it is no directory."""
    directory = parent(path)
    if isdir(path):
        raise errors.FileError(f"cannot write {path}: it is a directory")
    # On a bucket directories are only names: there, only a file in the way is wrong.
    if directory is not None and not isdir(directory) and (exists(directory) or not is_url(path)):
        raise errors.FileError(f"cannot write {path}: {directory} is not a directory")
    if not is_url(path) and not os.access(directory, os.W_OK):
        raise errors.FileError(f"cannot write {path}: no permission to write in {directory}")


def check_new_directory(path):
    """Raises FileError if `path` exists, else unless it can be made a directory: what is written as a whole
    (a SavedModel, a Hugging Face directory) is never written over another."""
    if exists(path):
        raise errors.FileError(f"{path} exists already: choose a new directory")
    check_can_make_directory(path)


def check_can_make_directory(path):
    """Raises FileError unless `path` is a directory or can be made one: the nearest existing path on the way
    up is a directory that can be written in (on a bucket, where directories are only names, no file is on the
    way up)."""
    existing = absolute(path)
    while existing is not None and not exists(existing):
        existing = parent(existing)
    if existing is None:
        return
    if not isdir(existing):
        raise errors.FileError(f"cannot make directory {path}: {existing} is not a directory")
    if not is_url(path) and existing != absolute(path) and not os.access(existing, os.W_OK):
        raise errors.FileError(f"cannot make directory {path}: no permission to write in {existing}")


# === Reading ===


def read_bytes(path, max_bytes=None):
    """The bytes of the file `path`, at most `max_bytes` of them; FileError for a directory."""
    if isdir(path):
        raise errors.FileError(f"{path}: Is a directory")
    if is_url(path) and not exists(path):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
    with open_file(path, "rb") as f:
        return f.read() if max_bytes is None else f.read(max_bytes)


def read_lines(path, max_lines=None):
    """The lines of the text file `path` (its first `max_lines`, the rest never read), newlines kept; FileError
    naming the line that is not UTF-8."""
    if isdir(path):
        raise errors.FileError(f"{path} is a directory, not a text file")
    with tf.io.gfile.GFile(path, "rb") as f:
        return decode_lines(itertools.islice(f, max_lines), path)


@contextlib.contextmanager
def local_copy(path, max_bytes):
    """A local path of the file `path` for a library that reads only local files (safetensors maps them): `path`
    itself on the local disk, else a temporary copy, refused (FileError) if it is larger than `max_bytes`."""
    if not is_url(path):
        yield path
        return
    if size(path) > max_bytes:
        raise errors.FileError(f"{path} is larger than {max_bytes:,} bytes: too large for what it should hold")
    with tempfile.TemporaryDirectory() as directory:
        local = os.path.join(directory, os.path.basename(path))
        copy(path, local)
        yield local


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
    raw = read_bytes(path, None if max_bytes is None else max_bytes + 1)
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


# === Writing ===


def write_file(path, content):
    """Writes `content` (str or bytes) to `path` as it is: for files inside a directory that
    `renamed_into_place` moves as a whole."""
    with open_file(path, "wb" if isinstance(content, bytes) else "w") as f:
        f.write(content)


def create_exclusively(path, text):
    """Writes `text` to `path` if no file is there (True), else nothing (False). Exclusive on the local disk
    (O_EXCL); a URL file system creates no file exclusively, so there it is a check, then a write."""
    if is_url(path):
        if exists(path):
            return False
        write_file(path, text)
        return True
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w", encoding="utf-8") as f:
        f.write(text)
    return True


def rename(source, target):
    """Moves the file or directory `source` to `target` (a file there is replaced; a directory must not exist). A
    directory on a bucket moves file by file, as TensorFlow's file systems rename no directory at once."""
    if not is_url(source) or not isdir(source):
        tf.io.gfile.rename(source, target, overwrite=True)
        return
    for directory, _, names in tf.io.gfile.walk(source):
        moved = target + directory[len(source) :]
        makedirs(moved)
        for name in names:
            tf.io.gfile.rename(os.path.join(directory, name), os.path.join(moved, name), overwrite=True)
    rmtree(source)


@contextlib.contextmanager
def renamed_into_place(path):
    """A temporary path next to `path`, for the block to write a file or a directory at; renamed to `path` when the
    block ends, removed if it raises. A file at `path` is replaced; a directory must not exist yet."""
    temporary = f"{path}{TEMPORARY_SUFFIX}{os.getpid()}"
    try:
        yield temporary
        rename(temporary, path)
    finally:
        if isdir(temporary):
            rmtree(temporary)
        elif exists(temporary):
            remove(temporary)


def write_text_atomically(path, text):
    """Writes `text` to `path` through `renamed_into_place`."""
    with renamed_into_place(path) as temporary:
        write_file(temporary, text)


def write_json_atomically(path, value):
    """Writes `value` as indented JSON to `path` through `renamed_into_place`; NaN is refused (ValueError)."""
    write_text_atomically(path, json.dumps(value, indent=2, allow_nan=False) + "\n")
