"""Scale-out and reliability: cross-replica negatives, resuming after kill -9, diverged loss, recipe changes."""

import json
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf
from conftest import REPO, TINY, assert_failed_cleanly, command_line, eval_history, run_script, run_training

# Small and fast: every evaluation and save happens within seconds.
QUICK_RUN = {
    "batch_size": 16,
    "max_sequence_length": 16,
    "total_steps": 30,
    "evaluation_frequency": 10,
    "run_name": "run",
}


@pytest.mark.parametrize("kind", ["supervised", "unsupervised"])
def test_two_cpu_replicas_give_the_single_device_loss_and_gradients(kind):
    result = subprocess.run(
        [sys.executable, "distributed_gradients.py", kind],
        cwd=REPO / "tests",
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.splitlines()[-1])
    assert measured["replicas"] == 2
    assert measured["loss_difference"] <= 1e-5
    # Float32 sums in another order: equal to 1e-5 relative to the largest gradient.
    assert measured["gradient_difference"] <= 1e-5 * max(1.0, measured["largest_gradient"])


def optimizer_step(state_prefix):
    reader = tf.train.load_checkpoint(state_prefix)
    (name,) = [n for n in reader.get_variable_to_shape_map() if n.startswith("optimizer/") and "iterations" in n]
    return int(reader.get_tensor(name))


def test_kill_9_then_rerun_finishes_with_every_evaluation_once(prepared_data_dir, tmp_path):
    options = {
        **TINY,
        **QUICK_RUN,
        "data_dir": prepared_data_dir[0],
        "model_checkpoints": tmp_path / "runs",
        "tensorboard_log_path": tmp_path / "logs",
        # The multi-replica path, on two logical CPU devices.
        "distribution_strategy": "mirrored",
        "num_cpu_devices": 2,
    }
    run_dir = tmp_path / "runs" / "run"
    process = subprocess.Popen(
        [sys.executable, *command_line("train_unsupervised.py", options)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 600
    while not (run_dir / "state" / "checkpoint").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert process.poll() is None, "training ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert [record["step"] for record in eval_history(run_dir)] in ([10], [10, 20])
    # What a kill in the middle of a save leaves: temporary files, which the rerun must ignore and remove.
    (run_dir / "step-20.tmp-1.index").write_bytes(b"partial")
    (run_dir / "best" / "model.ckpt-20.tmp-1.index").write_bytes(b"partial")

    result = run_script(*command_line("train_unsupervised.py", options))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming" in result.stderr and "starting at step 10" in result.stderr
    history = eval_history(run_dir)
    assert [record["step"] for record in history] == [10, 20, 30]
    # The optimizer came back: its step counter went on from 10 (a fresh one would end at 20), the schedule
    # continued, and the loss kept falling.
    assert optimizer_step(tf.train.latest_checkpoint(run_dir / "state")) == 30
    assert history[1]["learning_rate"] < history[0]["learning_rate"]
    assert history[1]["loss"] < history[0]["loss"]
    assert not list(run_dir.glob("*.tmp-*")) and not list((run_dir / "best").glob("*.tmp-*"))
    assert sorted(p.name for p in run_dir.glob("step-*.index")) == ["step-10.index", "step-20.index", "step-30.index"]

    # Once more: the run is complete, nothing is trained or evaluated again.
    again = run_script(*command_line("train_unsupervised.py", options))
    assert again.returncode == 0 and "has finished all 30 steps already" in again.stderr
    assert eval_history(run_dir) == history


def test_run_directory_of_another_recipe_is_refused(prepared_data_dir, tmp_path):
    run_dir = tmp_path / "runs" / "run"
    run_dir.mkdir(parents=True)
    config = {"kind": "unsupervised", "learning_rate": 1.0}
    (run_dir / "run_config.json").write_text(json.dumps(config))
    result = run_training("train_unsupervised.py", prepared_data_dir[0], tmp_path, QUICK_RUN)
    assert_failed_cleanly(result, f"error: {run_dir} was made with another recipe")
    assert "learning_rate 1.0 -> 3e-05" in result.stderr
    assert json.loads((run_dir / "run_config.json").read_text()) == config


def test_diverging_loss_stops_training_and_keeps_the_last_good_state(prepared_data_dir, tmp_path):
    # A learning rate no model survives: the loss turns NaN or infinite within the first steps.
    result = run_training("train_unsupervised.py", prepared_data_dir[0], tmp_path, {**QUICK_RUN, "learning_rate": 1e30})
    assert_failed_cleanly(result, "error: the loss became")
    assert "training stopped; last good state:" in result.stderr
