"""The suite's fixtures and its process-wide set-up (two logical CPUs, no internet); the helpers they and the test
modules use are in helpers.py."""

import atexit
import os
import pathlib
import socket
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Before anything starts the runtime: the host CPU as two logical devices, so the multi-replica path runs
# in-process (tf.distribute.MirroredStrategy over /cpu:0 and /cpu:1); everything else runs on /cpu:0.
(_cpu,) = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from helpers import (  # noqa: E402
    SHARED_DATA,
    TINY,
    float32_embedder,
    require_shared,
    run_script,
    sts_scores,
    write_random_bert,
    write_upstream_files,
)

import data  # noqa: E402

# Every https request of the suite to another host than 127.0.0.1, in-process or in a script's subprocess, goes
# through a proxy on 127.0.0.1: a test's loopback.HttpsMirror, else this socket, bound but not listening, which
# refuses the connection. So no test reaches the internet, and an unprepared dataset meets "no network" (tfds
# downloads with requests, which reads HTTPS_PROXY). 127.0.0.1 itself is reached directly: the gRPC of several
# workers reads the same variables.
_NO_INTERNET = socket.socket()
_NO_INTERNET.bind(("127.0.0.1", 0))
atexit.register(_NO_INTERNET.close)
os.environ["HTTPS_PROXY"] = os.environ["https_proxy"] = f"http://127.0.0.1:{_NO_INTERNET.getsockname()[1]}"
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


@pytest.fixture(scope="session")
def prepared_data_dir(tmp_path_factory):
    """Every tfds-korean dataset prepared offline from the shared data with `python data.py prepare`."""
    require_shared()
    data_dir = tmp_path_factory.mktemp("tensorflow_datasets")
    result = run_script("data.py", "prepare", f"--source_dir={SHARED_DATA}", f"--data_dir={data_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return data_dir, result.stderr


@pytest.fixture(scope="session")
def self_made_source_dir(tmp_path_factory):
    """helpers.write_upstream_files: tiny upstream files of Korean sentences, laid out as the shared data is."""
    return write_upstream_files(tmp_path_factory.mktemp("upstream_files"))


@pytest.fixture(scope="session")
def self_made_data_dir(self_made_source_dir, tmp_path_factory):
    """Every tfds-korean dataset prepared in-process from `self_made_source_dir`: no shared data needed."""
    data_dir = tmp_path_factory.mktemp("tensorflow_datasets")
    data.prepare(list(data.BUILDERS), str(self_made_source_dir), str(data_dir))
    return data_dir


@pytest.fixture(scope="session")
def random_bert(tmp_path_factory):
    """helpers.write_random_bert: a random BERT as a Google-format checkpoint with its config and vocab beside it,
    {config, pretrained_weight, vocab_path} as helpers.TINY is, for the tests that need no shared data."""
    return write_random_bert(tmp_path_factory.mktemp("random_bert"))


@pytest.fixture(scope="session")
def fork_runner(tmp_path_factory):
    """The session's tests/fork_runner.py: every script imported once, each run in a fork of it."""
    import fork_runner

    with fork_runner.ForkRunner(tmp_path_factory.mktemp("fork_runner") / "stderr") as runner:
        yield runner


@pytest.fixture(scope="session")
def run_in_fork(fork_runner):
    """run_in_fork("evaluate.py", *args[, code=...]): the script run with `args` as `run_script` runs it, but in a
    fork of a process that imported it already (`fork_runner`): a run costs no TensorFlow import.
    With `code`, that Python code runs instead of the script's main; `cwd`, the directory it runs in; `stdin`, the
    text on its standard input."""
    import subprocess

    def run(script, *args, code=None, timeout=120, cwd=REPO, stdin=None):
        answer = fork_runner.run([script, *map(str, args)], cwd, timeout, code, stdin)
        status = answer["exit"] if answer["signal"] is None else -answer["signal"]
        return subprocess.CompletedProcess([script, *args], status, answer["stdout"], answer["stderr"])

    return run


@pytest.fixture(scope="session")
def two_replicas():
    """MirroredStrategy over the two logical CPUs: one for the session, as strategies made one after another in
    one process would reuse each other's collective keys."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture(scope="session")
def scores_before_training(prepared_data_dir):
    """The tiny checkpoint's KorSTS dev scores at length 32, [CLS] pooling."""
    return sts_scores(prepared_data_dir[0], float32_embedder(TINY), max_sequence_length=32, sets=["korsts:dev"])
