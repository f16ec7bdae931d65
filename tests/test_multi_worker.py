"""train_unsupervised.py as two worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy, TF_CONFIG): only the
chief writes, a killed worker ends the other with one line, the same command resumes, and the loss is the
single-process loss of the same global batches."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import tensorflow as tf
from helpers import (
    MICRO_NO_DROPOUT,
    REPO,
    VOCAB,
    assert_failed_cleanly,
    command_line,
    eval_history,
    google_bert_weights,
    last_stderr_line,
    write_tf1_checkpoint,
)

import data
import model
import training

pytestmark = pytest.mark.slow


STEPS, EVALUATION_FREQUENCY, BATCH_SIZE, MAX_SEQUENCE_LENGTH, LEARNING_RATE = 6, 3, 16, 16, 1e-4


def free_ports(count):
    """Ports on 127.0.0.1 nobody listens on now (the OS's choice)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(options, tmp_path, attempt, interpreter_options=()):
    """Both workers of a new cluster, each `python [interpreter_options] train_unsupervised.py ...` with its
    TF_CONFIG; their output goes to files (tmp_path/<attempt>-worker-<i>.log), their temporary files to
    tmp_path/tmp."""
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    workers = []
    for index in range(2):
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        log = open(tmp_path / f"{attempt}-worker-{index}.log", "w")  # noqa: SIM115 (closed by the caller)
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TMPDIR": str(tmp_path / "tmp")}
        command = [sys.executable, *interpreter_options, *map(str, command_line("train_unsupervised.py", options))]
        workers.append((subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    return workers


def finish(workers, timeout=300):
    """Waits for the workers; returns a CompletedProcess each, its output as `stderr`."""
    results = []
    for process, log in workers:
        try:
            process.wait(timeout)
        finally:
            process.kill()
            log.close()
        output = pathlib.Path(log.name).read_text()
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stderr=output))
    return results


def worker_options(tmp_path, data_dir, **changes):
    """The flags of both workers: a random BERT of one narrow layer over KR-BERT's vocab, as a Google-format
    checkpoint (its loss depends on which sentences a batch holds, and its steps and evaluations take little time
    beside the processes' start), trained in tmp_path/runs/run."""
    (tmp_path / "config.json").write_text(json.dumps(MICRO_NO_DROPOUT))
    return {
        "config": tmp_path / "config.json",
        "pretrained_weight": write_tf1_checkpoint(tmp_path / "model.ckpt", google_bert_weights(MICRO_NO_DROPOUT)),
        "vocab_path": VOCAB,
        "data_dir": data_dir,
        "model_checkpoints": tmp_path / "runs",
        "tensorboard_log_path": tmp_path / "logs",
        "run_name": "run",
        "distribution_strategy": "multi_worker_mirrored",
        "batch_size": BATCH_SIZE,
        "max_sequence_length": MAX_SEQUENCE_LENGTH,
        "total_steps": STEPS,
        "evaluation_frequency": EVALUATION_FREQUENCY,
        "learning_rate": LEARNING_RATE,
        **changes,
    }


def wait_for(workers, ready, timeout=300):
    """Polls `ready()` until it holds, both workers running all the while, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert workers[0][0].poll() is None and workers[1][0].poll() is None, "a worker ended before it was stopped"
        assert time.monotonic() < deadline, "the workers never got there"
        time.sleep(0.02)


def state_saved(run_dir, step):
    """Whether the chief has saved the training state of `step` (the `checkpoint` file names it)."""
    return (tf.train.latest_checkpoint(str(run_dir / "state")) or "").endswith(f"ckpt-{step}")


def evaluated_after(run_dir, step):
    """Whether the chief has recorded an evaluation of a step after `step`."""
    if not (run_dir / "eval_history.jsonl").exists():
        return False
    records = eval_history(run_dir)
    return bool(records) and records[-1]["step"] > step


def test_two_workers_write_once_survive_a_killed_worker_and_match_one_process(prepared_data_dir, tmp_path):
    data_dir = prepared_data_dir[0]
    (tmp_path / "tmp").mkdir()
    options = worker_options(tmp_path, data_dir)
    checkpoint = options["pretrained_weight"]
    run_dir = tmp_path / "runs" / "run"

    # Worker 1 is killed once the chief has saved its first evaluation (its training state last): the chief cannot
    # take another step.
    workers = start_workers(options, tmp_path, "first")
    wait_for(workers, lambda: state_saved(run_dir, 3))
    workers[1][0].kill()
    chief, _ = finish(workers)
    # After step 3, or 4 if the chief took another step before the kill landed: it resumes from 3 all the same.
    assert re.fullmatch(
        r"error: lost contact with another worker after step [34] \(.*\): rerun the same command on every worker "
        "to resume from step 3",
        last_stderr_line(chief),
    )
    assert [record["step"] for record in eval_history(run_dir)] == [3]

    # The same command on both workers resumes and finishes: every evaluation once, one best/, nothing left over.
    results = finish(start_workers(options, tmp_path, "second"))
    assert [result.returncode for result in results] == [0, 0], results[0].stderr[-3000:] + results[1].stderr[-3000:]
    records = eval_history(run_dir)
    assert [record["step"] for record in records] == [3, 6]
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["run"]
    assert sorted(path.name for path in run_dir.glob("*.index")) == ["step-3.index", "step-6.index"]
    assert (run_dir / "best" / "checkpoint").exists() and len(list((run_dir / "best").glob("*.index"))) == 1
    assert sorted(path.name for path in (run_dir / "state").glob("*.index")) == ["ckpt-3.index", "ckpt-6.index"]
    # The other worker's training state, the killed process's too, is gone.
    assert not list((tmp_path / "tmp").glob("simcse-worker-*"))
    # TensorBoard: the chief's two processes wrote, the other worker nothing.
    assert len(list((tmp_path / "logs" / "run").glob("events.out.tfevents.*"))) == 2

    # One process, the same recipe, stopped after step 3 and resumed: the same losses (evaluated on a few pairs:
    # only the losses are compared).
    recipe = training.Recipe(
        kind="unsupervised",
        total_steps=STEPS,
        batch_size=BATCH_SIZE,
        learning_rate=LEARNING_RATE,
        warmup_ratio=0.05,
        temperature=0.05,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
        evaluation_frequency=EVALUATION_FREQUENCY,
        seed=42,
        precision="float32",
    )
    sentences = data.corpus_sentences(data_dir)

    def batches(take):
        return lambda tokenizer, seed: data.unsupervised_batches(sentences, tokenizer, BATCH_SIZE, seed).take(take)

    single_dir = tmp_path / "single"
    sets = {name: pairs.take(8) for name, pairs in training.load_evaluation_sets(data_dir).items()}
    for take in (EVALUATION_FREQUENCY, STEPS):
        training.train(
            recipe,
            model.BertConfig.from_dict(MICRO_NO_DROPOUT),
            str(VOCAB),
            batches(take),
            sets,
            run_dir=str(single_dir / "run"),
            tensorboard_dir=str(single_dir / "logs"),
            pretrained_weight=checkpoint,
        )
    single = eval_history(single_dir / "run")
    assert [record["step"] for record in single] == [3, 6]
    for one_process, two_workers in zip(single, records, strict=True):
        assert two_workers["loss"] == pytest.approx(one_process["loss"], abs=1e-5)
        assert two_workers["learning_rate"] == pytest.approx(one_process["learning_rate"], rel=1e-6)


# TensorFlow's own log lines (E1204 08:43:37.539073 ... or E0000 00:00:...), and the gRPC detail a failed
# heartbeat adds: a worker whose chief is gone may log them after its error line, from the coordination service.
RUNTIME_LOG = re.compile(r"^([EWIF]\d{4} \d\d:\d\d:\d+\.\d+ |Additional GRPC error|:UNKNOWN:)")


def without_runtime_logs(result):
    """`result` with TensorFlow's own log lines taken out of its standard error."""
    kept = [line for line in result.stderr.splitlines() if not RUNTIME_LOG.match(line)]
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout, "\n".join(kept))


def test_only_the_chief_prepares_datasets_and_the_other_worker_waits_for_them(random_bert, tmp_path):
    # Both workers on a data directory nothing is prepared in, with no network: the chief tries to prepare and
    # fails with its one line, leaving nothing; worker 1 downloads and prepares nothing (two preparations in one
    # shared directory remove each other's files), waits for the chief (its wait cut to 5 s here) and says how to
    # prepare the datasets first.
    (tmp_path / "tmp").mkdir()
    options = {
        **{name: random_bert[name] for name in ("config", "vocab_path", "pretrained_weight")},
        "data_dir": tmp_path / "tfds",
        "model_checkpoints": tmp_path / "runs",
        "tensorboard_log_path": tmp_path / "logs",
        "run_name": "run",
        "distribution_strategy": "multi_worker_mirrored",
    }
    with_a_short_wait = (
        "import runpy, sys; sys.argv = sys.argv[1:]; import distribution; distribution.COLLECTIVE_TIMEOUT_SECONDS = 5; "
        "runpy.run_path('train_unsupervised.py', run_name='__main__')"
    )
    chief, worker = finish(start_workers(options, tmp_path, "first", ["-c", with_a_short_wait]))
    assert_failed_cleanly(chief, "error: korean_wikipedia_corpus is not prepared in")
    assert_failed_cleanly(
        without_runtime_logs(worker),
        "error: korean_wikipedia_corpus, korsts, klue_sts not prepared after 5 s of waiting for the chief, which "
        "prepares a multi-worker run's datasets: prepare them before starting the workers, `python data.py prepare "
        f"--datasets=korean_wikipedia_corpus,korsts,klue_sts --data_dir={tmp_path / 'tfds'}`",
    )
    assert "is not prepared in" not in worker.stderr and "downloading" not in worker.stderr.lower()
    assert not (tmp_path / "tfds").exists() and not (tmp_path / "runs").exists()


def interrupted_step(workers, signalled, run_dir, after_step):
    """Once the chief has recorded an evaluation after `after_step`, SIGTERM to the workers `signalled` (indices), at
    once; both must end with status 143 and one line naming one step: that step, whose training state the chief
    (alone) has saved."""
    wait_for(workers, lambda: evaluated_after(run_dir, after_step))
    for index in signalled:
        workers[index][0].send_signal(signal.SIGTERM)
    results = finish(workers)
    assert [result.returncode for result in results] == [128 + signal.SIGTERM] * 2
    steps = {
        int(re.search(r"error: interrupted by SIGTERM at step (\d+) of 100000", without_runtime_logs(r).stderr)[1])
        for r in results
    }
    assert len(steps) == 1, steps  # the same step on both
    (step,) = steps
    assert tf.train.latest_checkpoint(str(run_dir / "state")).endswith(f"ckpt-{step}")  # the chief's
    return step, results


def test_sigterm_to_one_worker_or_both_stops_both_after_the_same_step_with_its_state_saved(prepared_data_dir, tmp_path):
    (tmp_path / "tmp").mkdir()
    options = worker_options(tmp_path, prepared_data_dir[0], total_steps=100_000)
    run_dir = tmp_path / "runs" / "run"
    # The other worker alone: a preempted VM.
    first, _ = interrupted_step(start_workers(options, tmp_path, "first"), [1], run_dir, 0)
    # Both at once, after the same command resumed from that step: a job scheduler stopping the job.
    second, (chief, _) = interrupted_step(start_workers(options, tmp_path, "second"), [0, 1], run_dir, first)
    assert f"resuming from {run_dir}/state/ckpt-{first}" in chief.stderr
    assert second > first
    assert not list((tmp_path / "tmp").glob("simcse-worker-*"))
    # Only the chief writes the run: no other state directory, and no step evaluated twice.
    steps = [record["step"] for record in eval_history(run_dir)]
    assert steps == sorted(set(steps))
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["run"]
