"""errors.run turns every kind of bad input into one line on stderr and exit status 1, and a signal into one line
and 128 + its number; JSON reads name the file; atomic writes leave nothing behind when they fail."""

import json
import re
import signal
import sys

import pytest
import tensorflow as tf
from absl import flags
from helpers import assert_failed_cleanly

import errors
import files


def exit_message(monkeypatch, main, argv=("script",)):
    """What `errors.run(main)` exits with: sys.exit(message) prints the message to stderr, status 1."""
    monkeypatch.setattr(sys, "argv", list(argv))
    with pytest.raises(SystemExit) as exit_info:
        errors.run(main)
    return exit_info.value.code


def raising(error):
    def main():
        raise error

    return main


@pytest.mark.parametrize(
    ("make_error", "message"),
    [
        (lambda tmp_path: errors.InputError("vocab file not found: x.txt"), "error: vocab file not found: x.txt"),
        (lambda tmp_path: IsADirectoryError(21, "Is a directory", str(tmp_path)), "error: {tmp}: Is a directory"),
        (lambda tmp_path: PermissionError(13, "Permission denied", "/root/x"), "error: /root/x: Permission denied"),
        (lambda tmp_path: OSError(28, "No space left on device"), "error: [Errno 28] No space left on device"),
        (lambda tmp_path: tf.errors.NotFoundError(None, None, "a\nb"), "error: a b"),
    ],
)
def test_every_kind_of_bad_input_is_one_line(monkeypatch, tmp_path, make_error, message):
    assert exit_message(monkeypatch, raising(make_error(tmp_path))) == message.format(tmp=tmp_path)


def test_reading_a_directory_and_bad_json_are_one_line(monkeypatch, tmp_path):
    message = exit_message(monkeypatch, lambda: files.read_json(str(tmp_path)))
    assert message == f"error: {tmp_path}: Is a directory"
    (tmp_path / "run_config.json").write_text('{"kind": ')
    message = exit_message(monkeypatch, lambda: files.read_json(str(tmp_path / "run_config.json")))
    assert message.startswith(f"error: {tmp_path / 'run_config.json'} is not valid JSON: Expecting value: line 1")
    (tmp_path / "latin1.json").write_bytes('{"é": 1}'.encode("latin-1"))
    message = exit_message(monkeypatch, lambda: files.read_json(str(tmp_path / "latin1.json")))
    assert message.startswith(f"error: {tmp_path / 'latin1.json'} is not valid JSON: 'utf-8' codec can't decode")


def test_a_bad_flag_value_is_one_line(monkeypatch):
    flags.DEFINE_integer("test_errors_count", 1, "A flag of this test.", lower_bound=1)
    try:
        message = exit_message(monkeypatch, raising(AssertionError("main ran")), ["script", "--test_errors_count=0"])
    finally:
        flags.FLAGS.unparse_flags()
        delattr(flags.FLAGS, "test_errors_count")
    assert message.startswith("error: flag --test_errors_count=0: ") and "\n" not in message


def test_errors_that_are_bugs_are_not_hidden(monkeypatch):
    with pytest.raises(KeyError):
        exit_message(monkeypatch, raising(KeyError("a bug")))


def test_atomic_write_replaces_whole_files_and_leaves_nothing_when_it_fails(tmp_path):
    path = tmp_path / "results.json"
    files.write_json_atomically(str(path), {"spearman": 0.5})
    files.write_json_atomically(str(path), {"spearman": None})
    assert json.loads(path.read_text()) == {"spearman": None}
    with pytest.raises(ValueError):  # NaN is not JSON
        files.write_json_atomically(str(path), {"spearman": float("nan")})
    assert json.loads(path.read_text()) == {"spearman": None}
    with pytest.raises(FileNotFoundError):
        files.write_json_atomically(str(tmp_path / "missing" / "results.json"), {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_paths_to_write_are_checked_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    files.check_can_write_file(str(tmp_path / "results.json"))
    files.check_can_make_directory(str(tmp_path / "new" / "deeper"))
    files.check_can_make_directory(str(tmp_path))
    cases = [
        (files.check_can_write_file, tmp_path / "missing" / "results.json", "is not a directory"),
        (files.check_can_write_file, tmp_path / "file" / "results.json", "is not a directory"),
        (files.check_can_write_file, tmp_path, "it is a directory"),
        (files.check_can_make_directory, tmp_path / "file" / "runs", f"{tmp_path / 'file'} is not a directory"),
        (files.check_can_make_directory, tmp_path / "file", f"{tmp_path / 'file'} is not a directory"),
    ]
    for check, path, message in cases:
        with pytest.raises(errors.InputError, match=re.escape(f"{path}: ") + ".*" + re.escape(message)):
            check(str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_text_that_is_not_utf8_is_named_by_file_and_line(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes("첫 줄\n둘째 줄\n".encode() + "셋째 줄\n".encode("cp949"))
    with pytest.raises(errors.InputError, match=re.escape(f"{path} line 3 is not UTF-8 text")):
        files.read_lines(str(path))
    path.write_bytes("첫 줄\n둘째 줄".encode())
    assert files.read_lines(str(path)) == ["첫 줄\n", "둘째 줄"]
    with pytest.raises(errors.InputError, match="is a directory, not a text file"):
        files.read_lines(str(tmp_path))


def test_positional_arguments_are_refused_unless_they_are_the_scripts_command(monkeypatch):
    ran = []
    message = exit_message(monkeypatch, lambda: ran.append("main"), ["script", "x", "y"])
    assert message == "error: expected no positional arguments, got: x y" and not ran
    for argv, expected in [(["data.py"], "none"), (["data.py", "prepare", "x"], "prepare x")]:
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exit_info:
            errors.run(lambda: ran.append("main"), command="prepare")
        assert exit_info.value.code == f"error: expected the command prepare, got: {expected}" and not ran
    monkeypatch.setattr(sys, "argv", ["data.py", "prepare"])
    with pytest.raises(SystemExit):
        errors.run(lambda: ran.append("main"), command="prepare")
    assert ran == ["main"]


@pytest.mark.parametrize(
    ("script", "arguments", "command", "signal_number"),
    [
        ("export.py", ["--checkpoint=c", "--output=o"], None, signal.SIGINT),
        ("report.py", ["--runs=r", "--output=o"], None, signal.SIGTERM),
        ("data.py", ["prepare"], "prepare", signal.SIGINT),
    ],
)
def test_a_signal_ends_any_script_in_one_line_with_128_plus_its_number(
    run_in_fork, script, arguments, command, signal_number
):
    """What errors.run makes of Ctrl-C or SIGTERM while a script's main runs (here: it signals itself)."""
    code = (
        "import os, signal, errors\n"
        f"errors.run(lambda: os.kill(os.getpid(), {int(signal_number)}), command={command!r})"
    )
    result = run_in_fork(script, *arguments, code=code)
    assert result.returncode == 128 + signal_number
    assert_failed_cleanly(result, f"error: interrupted by {signal.Signals(signal_number).name}")
