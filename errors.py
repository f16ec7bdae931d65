"""Bad input and how every script reports it: one line on stderr and a non-zero exit, never a traceback.

Library code raises `InputError`, or the subclass of its domain, for anything the user can put right: a flag value,
a path, the contents of a file. Scripts run their `main` through `run`, which turns that, a file-system error and
a file that cannot be decoded into the one line; and Ctrl-C or SIGTERM (`Interrupted`) into one line and exit
status 128 + the signal's number.
"""

import signal
import sys
import unicodedata

import tensorflow as tf
from absl import app, flags


class InputError(Exception):
    """Something the user gave is wrong: a flag value, a path, a file's contents. The message says which."""


class FileError(InputError):
    """A path that cannot be used as asked (missing, a directory, existing already, not writable), or a file that
    is not the text or JSON it should be."""


class ConfigError(InputError):
    """A model's config or tokenizer settings (bert_config.json, config.json, tokenizer_config.json, the vocab)
    that are missing, malformed or inconsistent."""


class CheckpointError(InputError):
    """Weights (a checkpoint, a weights file, a SavedModel, a Hub model) that are missing, unreadable or do not
    fit the model."""


class DataError(InputError):
    """A dataset, or an upstream file of one, that is missing or malformed."""


class TrainingError(InputError):
    """Training that cannot start or go on: a recipe out of range, a run directory of another recipe, a diverged
    loss, a lost worker."""


class Interrupted(BaseException):  # noqa: N818  (not an error: a stop the user asked for)
    """SIGINT (Ctrl-C) or SIGTERM (a preemption, a scheduler): `run` ends the script with the message, or with
    "interrupted", and exit status 128 + the signal's number, as a shell reports a process the signal ended. A
    BaseException, as KeyboardInterrupt: no `except Exception` of a library swallows it."""

    def __init__(self, signal_number, message=None):
        super().__init__(message or f"interrupted by {signal.Signals(signal_number).name}")
        self.signal_number = signal_number


def raise_interrupted(signal_number, frame):
    """A signal handler: the signal as `Interrupted`, raised where the main thread is."""
    del frame
    raise Interrupted(signal_number)


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
    """The message of an error as one line, however many it had: control characters a file put into it escaped
    (a terminal would obey them), cut at MAX_ERROR_LENGTH."""
    if isinstance(error, OSError) and error.filename is not None:
        message = f"{error.filename}: {error.strerror or error}"
    elif isinstance(error, tf.errors.OpError):
        message = error.message
    else:
        message = str(error) or type(error).__name__
    message = "".join(_printable(char) for char in " ".join(message.split()))
    return message if len(message) <= MAX_ERROR_LENGTH else message[: MAX_ERROR_LENGTH - 3] + "..."


def first_line(error):
    """The first line of a library error's message, for a message of ours to quote: the lines after it are context
    (a graph node, a stack, the paths of a download)."""
    message = error.message if isinstance(error, tf.errors.OpError) else str(error)
    return (message.strip() or type(error).__name__).splitlines()[0]


def _printable(char):
    """`char`, or its escape if it is a control, format, surrogate or unassigned character."""
    return char if unicodedata.category(char)[0] != "C" else char.encode("unicode_escape").decode("ascii")


def run(main, command=None):
    """`absl.app.run(main)` with no positional arguments (or exactly `command`, data.py's `prepare`), and with bad
    input, flag values included, reported as `error: <one line>` on stderr and exit status 1. `main` takes no
    arguments."""

    def parse_flags(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            sys.exit(f"error: {one_line(error)}")

    def main_reporting_bad_input(argv):
        try:
            if argv[1:] != ([command] if command else []):
                expected = f"the command {command}" if command else "no positional arguments"
                raise InputError(f"expected {expected}, got: {' '.join(argv[1:]) or 'none'}")
            return main()
        except (InputError, OSError, UnicodeDecodeError, *FILE_SYSTEM_ERRORS) as error:
            sys.exit(f"error: {one_line(error)}")

    signal.signal(signal.SIGTERM, raise_interrupted)  # SIGINT raises KeyboardInterrupt already
    try:
        app.run(main_reporting_bad_input, flags_parser=parse_flags)
    except (Interrupted, KeyboardInterrupt) as stop:
        signal_number = getattr(stop, "signal_number", signal.SIGINT)
        print(f"error: {one_line(stop) if isinstance(stop, Interrupted) else 'interrupted by SIGINT'}", file=sys.stderr)
        sys.exit(128 + signal_number)
