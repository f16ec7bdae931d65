"""Resuming exactly: runs stopped by a signal (in-process, and train_unsupervised.py in a process), killed (kill -9,
for real, and as a killed run's files are left), or saved by an older version, resumed to the end, against a run
nobody stopped, on one device and on two replicas."""

import os
import signal

import numpy as np
import pytest
import tensorflow as tf
from helpers import command_line, eval_history, last_stderr_line, make_recipe, optimizer_step, train

import checkpointing
import data
import errors
import model

# Eight steps of 8 sentences over the 61 of the self-made corpus (a pass and more, each shuffled anew), evaluated at
# 4 and 8, from the random BERT's checkpoint; the runs below stop at step 6 or 7 and resume.
RESUME_RECIPE = make_recipe(total_steps=8, batch_size=8, evaluation_frequency=4, learning_rate=1e-3)


def final_weights_and_history(directory):
    """The step-8 weights and the history (without timings) of the run in `directory`."""
    run_dir = directory / "runs" / "run"
    reader = tf.train.load_checkpoint(str(run_dir / "step-8"))
    weights = {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}
    return weights, [{k: v for k, v in record.items() if k != "seconds"} for record in eval_history(run_dir)]


@pytest.fixture(scope="module")
def uninterrupted(self_made_data_dir, random_bert, two_replicas, tmp_path_factory):
    """uninterrupted(replicas): `final_weights_and_history` of RESUME_RECIPE's run that nobody stopped, on one device
    or two replicas, made on first use."""
    made = {}

    def run(replicas):
        if replicas not in made:
            directory = tmp_path_factory.mktemp(f"uninterrupted{replicas}")
            strategy = two_replicas if replicas == 2 else None
            train(self_made_data_dir, directory, RESUME_RECIPE, None, strategy, files=random_bert)
            made[replicas] = final_weights_and_history(directory)
        return made[replicas]

    return run


def assert_ends_as(directory, expected):
    """The run in `directory` has `expected`'s weights (to 1e-6) and history (every evaluation, to 1e-6)."""
    weights, history = final_weights_and_history(directory)
    expected_weights, expected_history = expected
    for key, value in expected_weights.items():
        np.testing.assert_allclose(weights[key], value, atol=1e-6, err_msg=key)
    assert [record["step"] for record in history] == [4, 8]
    for record, expected_record in zip(history, expected_history, strict=True):
        assert record == pytest.approx(expected_record, abs=1e-6)


def test_a_stopped_and_resumed_run_ends_as_one_that_was_not(self_made_data_dir, random_bert, uninterrupted, tmp_path):
    """Data-exact resuming: the batches the saved steps took are skipped, the dropout streams and the loss since the
    last evaluation come back with the state. The input ends after step 6, as a killed run stops: it resumes from
    the state of step 4. (A real kill: test_train_unsupervised_py_killed_and_interrupted_...)"""
    sentences = data.corpus_sentences(self_made_data_dir)

    def stopping_after_6(tokenizer, seed):
        return data.unsupervised_batches(sentences, tokenizer, RESUME_RECIPE.batch_size, seed).take(6)

    run_dir = tmp_path / "runs" / "run"
    train(self_made_data_dir, tmp_path, RESUME_RECIPE, stopping_after_6, files=random_bert)
    assert [record["step"] for record in eval_history(run_dir)] == [4]
    train(self_made_data_dir, tmp_path, RESUME_RECIPE, files=random_bert)
    assert_ends_as(tmp_path, uninterrupted(1))
    # The optimizer came back: its step counter went on from 4 (a fresh one would end at 4).
    assert optimizer_step(tf.train.latest_checkpoint(run_dir / "state")) == 8

    # Once more: the run is complete, and nothing is built, trained or evaluated again.
    def no_batches(tokenizer, seed):
        raise AssertionError("a finished run made its batches")

    history = eval_history(run_dir)
    train(self_made_data_dir, tmp_path, RESUME_RECIPE, no_batches, files=random_bert)
    assert eval_history(run_dir) == history


def test_a_state_saved_without_dropout_streams_still_resumes(
    self_made_data_dir, random_bert, tmp_path, monkeypatch, caplog
):
    untrained = {"files": random_bert, "pretrained": False}
    recipe = make_recipe(total_steps=4, batch_size=8, evaluation_frequency=2)
    sentences = data.corpus_sentences(self_made_data_dir)

    def stopping_after_3(tokenizer, seed):
        return data.unsupervised_batches(sentences, tokenizer, recipe.batch_size, seed).take(3)

    with monkeypatch.context() as older_version:
        older_version.setattr(model.BertEncoder, "dropout_seed_states", lambda self: [])
        train(self_made_data_dir, tmp_path, recipe, stopping_after_3, **untrained)
    with caplog.at_level("WARNING"):
        train(self_made_data_dir, tmp_path, recipe, **untrained)
    assert "holds no dropout streams (saved by an older version): new masks are drawn" in caplog.text
    assert [record["step"] for record in eval_history(tmp_path / "runs" / "run")] == [2, 4]


def interrupted_run(data_dir, directory, strategy, signal_number, monkeypatch, files):
    """RESUME_RECIPE's run in `directory`, sent `signal_number` after step 6 (from its evaluation hook, so at that
    very step): the errors.Interrupted it ends with."""
    after_step = checkpointing.EvaluateAndCheckpoint.__call__

    def signalling(self, step, *args):
        going_on = after_step(self, step, *args)
        if step == 6:
            os.kill(os.getpid(), signal_number)
        return going_on

    with monkeypatch.context() as patched:
        patched.setattr(checkpointing.EvaluateAndCheckpoint, "__call__", signalling)
        with pytest.raises(errors.Interrupted) as interrupted:
            train(data_dir, directory, RESUME_RECIPE, None, strategy, files=files)
    return interrupted.value


@pytest.mark.parametrize(
    ("replicas", "signal_number"),
    # Both signals take one path (StopRequests): each is tested on one of the two set-ups here, the other in
    # test_train_unsupervised_py_killed_and_interrupted_...
    [(1, signal.SIGTERM), pytest.param(2, signal.SIGINT, marks=pytest.mark.slow)],
)
def test_a_signal_saves_the_step_reached_and_the_run_resumes_exactly(
    self_made_data_dir, random_bert, two_replicas, uninterrupted, tmp_path, monkeypatch, replicas, signal_number
):
    strategy = two_replicas if replicas == 2 else None
    handler = signal.getsignal(signal_number)
    interrupted = interrupted_run(self_made_data_dir, tmp_path, strategy, signal_number, monkeypatch, random_bert)
    run_dir = tmp_path / "runs" / "run"
    name = signal.Signals(signal_number).name
    assert interrupted.signal_number == signal_number
    assert str(interrupted).startswith(f"interrupted by {name} at step 6 of 8: its training state is saved (")
    # The state of step 6 beside the evaluation's of step 4; step 6 is no evaluation, no step-N, no best/ candidate.
    assert sorted(path.name for path in (run_dir / "state").glob("*.index")) == ["ckpt-4.index", "ckpt-6.index"]
    assert [record["step"] for record in eval_history(run_dir)] == [4]
    assert sorted(path.name for path in run_dir.glob("step-*.index")) == ["step-4.index"]
    assert signal.getsignal(signal_number) is handler  # the handler given back

    train(self_made_data_dir, tmp_path, RESUME_RECIPE, None, strategy, files=random_bert)
    assert_ends_as(tmp_path, uninterrupted(replicas))


def test_a_second_ctrl_c_while_saving_leaves_the_states_before_it(
    self_made_data_dir, random_bert, tmp_path, monkeypatch
):
    save = tf.train.CheckpointManager.save

    def interrupted_save(self, checkpoint_number=None, **kwargs):
        if checkpoint_number == 6:  # the interruption's save, not an evaluation's
            os.kill(os.getpid(), signal.SIGINT)
        return save(self, checkpoint_number=checkpoint_number, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        interrupted_run(self_made_data_dir, tmp_path, None, signal.SIGINT, monkeypatch, random_bert)
    state = tf.train.latest_checkpoint(str(tmp_path / "runs" / "run" / "state"))
    assert state.endswith("ckpt-4")
    tf.train.load_checkpoint(state)  # loadable: the run resumes from it


# The fork's code: train_unsupervised.py, its process sending itself `signal` right after step `step`'s hook (so at
# that very step, as a signal from outside lands between two steps), then ended as the script ends.
SIGNALLED_AFTER_STEP = """
import os, signal
import checkpointing, errors, train_unsupervised
after_step = checkpointing.EvaluateAndCheckpoint.__call__
def signalling(self, step, *args):
    going_on = after_step(self, step, *args)
    if step == {step}:
        os.kill(os.getpid(), signal.{signal})
    return going_on
checkpointing.EvaluateAndCheckpoint.__call__ = signalling
errors.run(train_unsupervised.main)
"""


@pytest.mark.slow
@pytest.mark.parametrize(("replicas", "stop"), [(1, "SIGINT"), (2, "SIGTERM")])
def test_train_unsupervised_py_killed_and_interrupted_ends_as_a_run_nobody_stopped(
    self_made_data_dir, random_bert, uninterrupted, run_in_fork, tmp_path, replicas, stop
):
    """RESUME_RECIPE's run, as train_unsupervised.py runs it: kill -9 after step 6 (its last save the evaluation of
    step 4), the same command, `stop` (SIGINT: a Ctrl-C) after step 7, the same command again."""
    recipe = {name: getattr(RESUME_RECIPE, name) for name in (
        "total_steps", "batch_size", "learning_rate", "warmup_ratio", "temperature", "max_sequence_length",
        "evaluation_frequency", "seed",
    )}  # fmt: skip
    options = {
        **{name: random_bert[name] for name in ("config", "vocab_path", "pretrained_weight")},
        **recipe, "data_dir": self_made_data_dir, "model_checkpoints": tmp_path / "runs",
        "tensorboard_log_path": tmp_path / "logs", "run_name": "run",
        **({"distribution_strategy": "mirrored", "num_cpu_devices": 2} if replicas == 2 else {}),
    }  # fmt: skip
    command = command_line("train_unsupervised.py", options)
    run_dir = tmp_path / "runs" / "run"

    killed = run_in_fork(*command, code=SIGNALLED_AFTER_STEP.format(step=6, signal="SIGKILL"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [record["step"] for record in eval_history(run_dir)] == [4]
    assert tf.train.latest_checkpoint(str(run_dir / "state")).endswith("ckpt-4")

    interrupted = run_in_fork(*command, code=SIGNALLED_AFTER_STEP.format(step=7, signal=stop))
    assert interrupted.returncode == 128 + signal.Signals[stop], interrupted.stderr[-3000:]
    assert "Traceback" not in interrupted.stderr and f"resuming from {run_dir}/state/ckpt-4" in interrupted.stderr
    assert last_stderr_line(interrupted) == (
        f"error: interrupted by {stop} at step 7 of 8: its training state is saved ({run_dir}/state); rerun the "
        "same command, with the same run name, to go on from it"
    )
    assert tf.train.latest_checkpoint(str(run_dir / "state")).endswith("ckpt-7")

    finished = run_in_fork(*command)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"{replicas} replica(s)" in finished.stderr
    assert_ends_as(tmp_path, uninterrupted(replicas))
