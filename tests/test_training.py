"""training.py with plain arguments: the recipe, the run directory's bookkeeping through kills and resumes, and
train() in-process: learning from the tiny MLM checkpoint, failing early and cleanly from a random BERT on data of
the tests' own; the training scripts end to end. Resuming a stopped run exactly: test_resuming.py."""

import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import time
import types

import loopback
import pytest
import tensorflow as tf
from absl import flags
from helpers import (
    HUGGINGFACE_NUMERICS,
    MICRO,
    QUICK_RECIPE,
    SELF_MADE_STAND_IN_ROWS,
    SMALL,
    TINY,
    VOCAB,
    assert_failed_cleanly,
    command_line,
    eval_history,
    make_recipe,
    needs_openssl,
    optimizer_step,
    run_script,
    saved_optimizer_variable,
    tfds_korean_downloads,
    train,
)

import checkpointing
import data
import distribution
import errors
import google_checkpoint
import huggingface
import model
import optimization
import run_directory
import training
import training_flags

# === Recipe ===


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"total_steps": 0}, "total_steps must be positive, got 0"),
        ({"mini_batch_size": 0}, "mini_batch_size must be positive, got 0"),
        ({"batch_size": 1}, "batch_size must be at least 2 (in-batch negatives), got 1"),
        ({"learning_rate": -1.0}, "learning_rate must be positive and finite, got -1.0"),
        ({"learning_rate": 0.0}, "learning_rate must be positive and finite, got 0.0"),
        ({"learning_rate": float("inf")}, "learning_rate must be positive and finite, got inf"),
        ({"warmup_ratio": 1.0}, "warmup_ratio must be in [0, 1), got 1.0"),
        ({"warmup_ratio": -0.5}, "warmup_ratio must be in [0, 1), got -0.5"),
        ({"temperature": 0.0}, "temperature must be positive and finite, got 0.0"),
        ({"temperature": float("nan")}, "temperature must be positive and finite, got nan"),
        ({"max_sequence_length": 1}, "max_sequence_length must leave room for [CLS] and [SEP], got 1"),
        ({"evaluation_frequency": 0}, "evaluation_frequency must be positive, got 0"),
    ],
)
def test_recipe_refuses_values_out_of_range(change, message):
    with pytest.raises(errors.TrainingError, match=re.escape(message)):
        make_recipe(**change)


def test_run_config_holds_the_recipe_and_the_bert_config():
    config = model.BertConfig.from_dict(SMALL)
    run_config = make_recipe().run_config(config)
    assert run_config == {**QUICK_RECIPE, "bert_config": SMALL}
    supervised = make_recipe(kind="supervised", train_splits=("xnli_dev",), epochs=3).run_config(config)
    assert supervised["train_splits"] == ["xnli_dev"] and supervised["epochs"] == 3
    assert make_recipe(total_steps=1000, warmup_ratio=0.05).warmup_steps == 50


# === Run directory ===


def record(step, korsts_spearman):
    return {
        "step": step,
        "loss": 1.0,
        "learning_rate": 1e-5,
        "klue_sts_pearson": 0.1,
        "korsts_spearman": korsts_spearman,
    }


class SmallRun:
    """A run directory driven as the training callback drives it, with a small encoder whose word embeddings
    are set to the step, so every checkpoint says which step it holds."""

    def __init__(self, path, keep_step_checkpoints=run_directory.KEEP_STEP_CHECKPOINTS):
        self.run = run_directory.RunDirectory(str(path), keep_step_checkpoints)
        self.run.create({"run_config.json": {"kind": "test"}})
        self.encoder = model.BertEncoder(model.BertConfig.from_dict(SMALL), dtype="float32")
        self.step = tf.Variable(0)
        self.states = tf.train.CheckpointManager(tf.train.Checkpoint(step=self.step), self.run.state_dir, 2)
        self.history = []

    def evaluate(self, step, korsts_spearman, until="end"):
        """One evaluation's saves, stopping (as a kill would) before the training state or before `best/`."""
        word_embeddings = self.encoder.embeddings.word_embeddings
        word_embeddings.assign(tf.fill(word_embeddings.shape, float(step)))
        self.run.save_evaluation(record(step, korsts_spearman), self.encoder, self.history)
        if until == "before state":
            return
        self.states.save(checkpoint_number=step)
        if until == "before best":
            return
        self.run.point_best_at(run_directory.best_step(self.history))

    def resume(self):
        return run_directory.RunDirectory(self.run.path).resume(run_directory.state_step(self.run.readable_state()))

    def best(self):
        """The step the checkpoint in best/ holds, and the files there."""
        encoder = model.BertEncoder(model.BertConfig.from_dict(SMALL), dtype="float32")
        google_checkpoint.load_checkpoint(encoder, self.run.best_dir)
        files = sorted(p.name for p in pathlib.Path(self.run.best_dir).iterdir())
        return int(encoder.embeddings.word_embeddings.numpy()[0, 0]), files


def test_step_checkpoints_are_pruned_to_the_newest_and_best_holds_the_best(tmp_path):
    run = SmallRun(tmp_path / "run", keep_step_checkpoints=2)
    for step, spearman in [(10, 0.1), (20, 0.3), (30, 0.2), (40, 0.25)]:
        run.evaluate(step, spearman)
    assert run.run.step_checkpoints() == [30, 40]
    assert sorted(p.name for p in (tmp_path / "run").glob("step-*")) == [
        "step-30.data-00000-of-00001", "step-30.index", "step-40.data-00000-of-00001", "step-40.index",
    ]  # fmt: skip
    assert run.best() == (20, ["checkpoint", "model.ckpt-20.data-00000-of-00001", "model.ckpt-20.index"])
    assert [r["step"] for r in eval_history(tmp_path / "run")] == [10, 20, 30, 40]


def test_best_is_found_in_a_relative_run_directory_and_after_a_move(tmp_path, monkeypatch):
    # --model_checkpoints is relative by default (models/): TensorFlow's own state-file writer named the checkpoint
    # relative to the current directory there ("../../../model.ckpt-20"), so best/ pointed at nothing.
    monkeypatch.chdir(tmp_path)
    run = SmallRun("models/run")
    run.evaluate(10, 0.1)
    run.evaluate(20, 0.3)
    assert run.best()[0] == 20
    assert tf.train.latest_checkpoint("models/run/best") == "models/run/best/model.ckpt-20"
    (tmp_path / "models" / "run").rename(tmp_path / "moved")
    assert tf.train.latest_checkpoint(str(tmp_path / "moved" / "best")) == str(tmp_path / "moved/best/model.ckpt-20")


@pytest.mark.parametrize(
    ("killed", "resumed_steps", "best_step"),
    [
        # History written, state not: the evaluation at 20 is undone, best/ keeps 10.
        ("before state", [10], 10),
        # State written, best/ not yet switched: the evaluation at 20 stands, and best/ is switched to it.
        ("before best", [10, 20], 20),
    ],
)
def test_resume_after_a_kill_cuts_back_to_the_saved_state(tmp_path, killed, resumed_steps, best_step):
    run = SmallRun(tmp_path / "run")
    run.evaluate(10, 0.1)
    run.evaluate(20, 0.3, until=killed)
    # What a kill in the middle of a save leaves: temporary files.
    (tmp_path / "run" / "step-30.tmp-1.index").write_bytes(b"partial")
    (tmp_path / "run" / "best" / "model.ckpt-30.tmp-1.index").write_bytes(b"partial")

    history = run.resume()
    assert [r["step"] for r in history] == [r["step"] for r in eval_history(tmp_path / "run")] == resumed_steps
    assert run.run.step_checkpoints() == resumed_steps
    step, files = run.best()
    assert step == best_step and files == sorted(
        ["checkpoint", f"model.ckpt-{best_step}.data-00000-of-00001", f"model.ckpt-{best_step}.index"]
    )
    assert not list((tmp_path / "run").glob("**/*.tmp-*"))


def test_a_metric_that_is_not_finite_is_null_and_never_best(tmp_path):
    results = {
        "korsts:dev": {"n": 3, "pearson": None, "spearman": None, "alignment": None, "uniformity": -1.0},
        "klue_sts:dev": {"n": 3, "pearson": 0.5, "spearman": 0.4, "alignment": 0.2, "uniformity": -2.0},
    }
    assert checkpointing.history_record(10, 1.5, 1e-5, results) == {
        "step": 10, "loss": 1.5, "learning_rate": 1e-5, "klue_sts_pearson": 0.5, "korsts_spearman": None,
        "korsts_alignment": None, "korsts_uniformity": -1.0, "klue_sts_alignment": 0.2, "klue_sts_uniformity": -2.0,
    }  # fmt: skip
    run = SmallRun(tmp_path / "run")
    run.evaluate(10, None)
    assert "null" in (tmp_path / "run" / "eval_history.jsonl").read_text()
    assert not list((tmp_path / "run" / "best").glob("*"))  # nothing to be best yet
    run.evaluate(20, -0.5)
    run.evaluate(30, None)
    assert run.best()[0] == 20


def test_corrupt_history_and_run_config_are_named(tmp_path):
    run = SmallRun(tmp_path / "run")
    run.evaluate(10, 0.1)
    history = tmp_path / "run" / "eval_history.jsonl"
    history.write_text(history.read_text() + '{"step": 20, "loss": 0.9, "learning')
    with pytest.raises(errors.TrainingError, match=f"{re.escape(str(history))} line 2 is not an evaluation record"):
        run.resume()
    (tmp_path / "run" / "run_config.json").write_text('{"kind": ')
    with pytest.raises(errors.InputError, match="run_config.json is not valid JSON"):
        run.run.check_recipe({"kind": "test"})


def test_a_run_directory_is_held_by_one_process_at_a_time(tmp_path, caplog):
    run = SmallRun(tmp_path / "run").run
    lock = tmp_path / "run" / "lock"
    host = socket.gethostname()
    with run.held():
        assert json.loads(lock.read_text()) == {"host": host, "pid": os.getpid()}
    assert not lock.exists()
    # Held by another process that runs on this host (the test's parent), or by one on another host (whether it
    # runs cannot be told): refused, naming it.
    for holder in ({"host": host, "pid": os.getppid()}, {"host": "elsewhere", "pid": 1}):
        lock.write_text(json.dumps(holder))
        message = f"{run.path} is in use by process {holder['pid']} on {holder['host']} (its lock file {lock})"
        with pytest.raises(errors.TrainingError, match=re.escape(message)), run.held():
            pytest.fail("held twice")
        assert json.loads(lock.read_text()) == holder
    # Left by a process of this host that ended (killed, say): taken over with a warning, removed at the end.
    ended = subprocess.Popen(["true"])
    ended.wait()
    lock.write_text(json.dumps({"host": host, "pid": ended.pid}))
    with caplog.at_level("WARNING"), run.held():
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert f"held by process {ended.pid}, which no longer runs: taken over" in caplog.text
    assert not lock.exists()


def test_a_run_another_process_trains_in_is_refused_before_anything_is_changed(
    self_made_data_dir, random_bert, tmp_path
):
    # The run's directory as a running process leaves it: its lock, and a save in flight.
    recipe = make_recipe()
    run_dir = tmp_path / "runs" / "run"
    run_dir.mkdir(parents=True)
    config = model.BertConfig.from_json_file(random_bert["config"])
    (run_dir / "run_config.json").write_text(json.dumps(recipe.run_config(config)))
    (run_dir / "lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid()}))
    (run_dir / "step-20.tmp-1.index").write_bytes(b"in flight")
    with pytest.raises(errors.TrainingError, match=f"is in use by process {os.getppid()}"):
        train(self_made_data_dir, tmp_path, recipe, files=random_bert, pretrained=False)
    assert sorted(path.name for path in run_dir.iterdir()) == ["lock", "run_config.json", "step-20.tmp-1.index"]


# === train(), in-process ===


def korsts_and_some_klue(data_dir):
    """The evaluation sets, KLUE STS dev cut to 128 pairs: the learning tests check KorSTS dev alone."""
    sets = training.load_evaluation_sets(data_dir)
    return {**sets, "klue_sts:dev": sets["klue_sts:dev"].take(128)}


# The learning tests' short CPU runs: smaller batches and sentences than the recipes, a higher learning rate, to
# move in 40-50 steps.
SHORT_CPU_RUN = {"precision": "mixed_bfloat16", "batch_size": 32, "max_sequence_length": 32, "learning_rate": 1e-4}


@pytest.mark.slow
def test_unsupervised_simcse_spreads_embeddings_and_report_py_scores_it_as_recorded(
    prepared_data_dir, scores_before_training, tmp_path
):
    data_dir = prepared_data_dir[0]
    recipe = make_recipe(**SHORT_CPU_RUN, total_steps=40, evaluation_frequency=40)
    run_dir = tmp_path / "runs" / "run"
    assert train(data_dir, tmp_path, recipe, sets=korsts_and_some_klue(data_dir)) == str(run_dir)
    assert tf.keras.mixed_precision.global_policy().name == "float32"  # train() leaves the policy as it was
    history = eval_history(run_dir)
    assert [record["step"] for record in history] == [40]
    assert set(history[0]) == {
        "step", "loss", "learning_rate", "klue_sts_pearson", "korsts_spearman",
        "korsts_alignment", "korsts_uniformity", "klue_sts_alignment", "klue_sts_uniformity",
    }  # fmt: skip
    assert json.loads((run_dir / "run_config.json").read_text())["precision"] == "mixed_bfloat16"
    assert list((tmp_path / "logs" / "run").glob("events.out.tfevents.*"))
    assert [p.name for p in run_dir.glob("step-*.index")] == ["step-40.index"]

    before = scores_before_training["korsts:dev"]
    # Measured here: KorSTS dev uniformity -0.229 -> -1.341 in 40 steps, alignment 0.021 -> 0.201.
    assert history[-1]["korsts_uniformity"] < before["uniformity"] - 0.6
    assert history[-1]["korsts_alignment"] < 0.5
    # report.py on the run, as a user runs it (its end-to-end run): best/ scores, in float32 as evaluate.py does,
    # what training recorded, and the start what the tiny checkpoint scored before training.
    output = tmp_path / "report"
    result = run_script(
        "report.py", f"--runs={run_dir}", "--datasets=korsts:dev", f"--data_dir={data_dir}", f"--output={output}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(output / "results.md")
    stored = json.loads((output / "results.json").read_text())
    [entry], [start] = stored["runs"], stored["starts"]
    assert (entry["best_step"], entry["max_sequence_length"], entry["pooling"]) == (40, 32, "cls")
    assert entry["results"]["korsts:dev"]["n"] == 1500
    assert entry["results"]["korsts:dev"]["spearman"] == pytest.approx(history[-1]["korsts_spearman"], abs=1e-4)
    assert start["pretrained_weight"] == str(pathlib.Path(TINY["pretrained_weight"]).absolute())
    assert start["results"]["korsts:dev"]["spearman"] == pytest.approx(before["spearman"], abs=1e-6)
    assert "| tiny-char-mlm (4 layers, hidden 256) | unsupervised | 1 |" in (output / "results.md").read_text()


@pytest.mark.slow
def test_a_damaged_newest_state_is_passed_over_for_the_one_before(self_made_data_dir, random_bert, tmp_path, caplog):
    data_dir = self_made_data_dir
    untrained = {"files": random_bert, "pretrained": False}
    sentences = data.corpus_sentences(data_dir)
    recipe = make_recipe(learning_rate=1e-3)
    sets = training.load_evaluation_sets(data_dir)

    def stopping_at_25(tokenizer, seed):
        return data.unsupervised_batches(sentences, tokenizer, recipe.batch_size, seed).take(25)

    run_dir = tmp_path / "runs" / "run"
    train(data_dir, tmp_path, recipe, stopping_at_25, None, sets, **untrained)
    assert sorted(path.name for path in (run_dir / "state").glob("*.index")) == ["ckpt-10.index", "ckpt-20.index"]
    # The newest state cut short, as a disk that filled up leaves it.
    damaged = run_dir / "state" / "ckpt-20.data-00000-of-00001"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])

    with caplog.at_level("WARNING"):
        train(data_dir, tmp_path, recipe, None, None, sets, **untrained)
    passed_over = [record.getMessage() for record in caplog.records if "passed over" in record.getMessage()]
    assert len(passed_over) == 1 and f"training state {run_dir / 'state' / 'ckpt-20'} cannot be read" in passed_over[0]
    # Resumed from step 10: step 20 evaluated anew, the optimizer's counter went on from 10.
    assert [record["step"] for record in eval_history(run_dir)] == [10, 20, 30]
    assert optimizer_step(tf.train.latest_checkpoint(run_dir / "state")) == 30

    # No state that reads: one error naming what to do, nothing trained.
    for path in (run_dir / "state").glob("*.data-*"):
        path.write_bytes(b"")
    with pytest.raises(errors.TrainingError, match=f"no training state in {re.escape(str(run_dir / 'state'))} can be"):
        train(data_dir, tmp_path, recipe, None, None, sets, **untrained)


@pytest.mark.slow
def test_steps_skipped_by_the_loss_scaler_leave_one_step_counter(
    self_made_data_dir, random_bert, tmp_path, monkeypatch
):
    # mixed_float16 (on CPU, emulated) from a loss scale that overflows: the scaler skips steps (halving the
    # scale) and the optimizer counts fewer steps than were taken. Checkpoints, history and resuming count the
    # steps taken, through a stop after step 6 and a resume.
    monkeypatch.setattr(optimization, "INITIAL_LOSS_SCALE", 2.0**20)
    data_dir = self_made_data_dir
    untrained = {"files": random_bert, "pretrained": False}
    sentences = data.corpus_sentences(data_dir)
    recipe = make_recipe(precision="mixed_float16", total_steps=8, evaluation_frequency=4, learning_rate=1e-3)
    sets = training.load_evaluation_sets(data_dir)
    seeds = []

    def stopping_after(steps):
        def make_batches(tokenizer, seed):
            seeds.append(seed)
            return data.unsupervised_batches(sentences, tokenizer, recipe.batch_size, seed).take(steps)

        return make_batches

    run_dir = tmp_path / "runs" / "run"
    train(data_dir, tmp_path, recipe, stopping_after(6), None, sets, **untrained)
    assert [record["step"] for record in eval_history(run_dir)] == [4]
    state = tf.train.latest_checkpoint(run_dir / "state")
    assert state.endswith("ckpt-4") and optimizer_step(state) < 4  # steps were skipped
    assert saved_optimizer_variable(state, "dynamic_scale") < 2.0**20

    train(data_dir, tmp_path, recipe, stopping_after(100), None, sets, **untrained)
    assert seeds == [recipe.seed] * 2  # one sequence of batches, the 4 steps taken skipped
    # Resumed after the 4 steps taken, whatever the optimizer counted.
    assert [record["step"] for record in eval_history(run_dir)] == [4, 8]
    state = tf.train.latest_checkpoint(run_dir / "state")
    assert state.endswith("ckpt-8") and optimizer_step(state) < 8
    assert sorted(int(path.name[5:-6]) for path in run_dir.glob("step-*.index")) == [4, 8]
    train(data_dir, tmp_path, recipe, stopping_after(100), None, sets, **untrained)
    assert seeds == [recipe.seed] * 2  # finished: nothing trained again


@pytest.mark.slow
def test_supervised_simcse_raises_korsts(prepared_data_dir, scores_before_training, tmp_path):
    data_dir = prepared_data_dir[0]
    triples, counts = data.nli_triples_of_splits(["xnli_dev"], data_dir)
    assert counts == {"xnli_dev": 830}
    # 2 epochs of 830 // 32 = 25 steps on the 830 XNLI dev triples.
    recipe = make_recipe(
        **SHORT_CPU_RUN,
        kind="supervised",
        total_steps=50,
        evaluation_frequency=50,
        train_splits=("xnli_dev",),
        epochs=2,
    )

    def make_batches(tokenizer, seed):
        return data.supervised_batches(triples, tokenizer, recipe.batch_size, seed)

    sets = korsts_and_some_klue(data_dir)
    train(data_dir, tmp_path, recipe, make_batches, sets=sets, run_files={"data_stats.json": {"triples": counts}})
    run_dir = tmp_path / "runs" / "run"
    assert json.loads((run_dir / "data_stats.json").read_text()) == {"triples": {"xnli_dev": 830}}
    history = eval_history(run_dir)
    assert [record["step"] for record in history] == [50]
    # Measured here: KorSTS dev Spearman 0.372 -> 0.412.
    assert history[-1]["korsts_spearman"] > scores_before_training["korsts:dev"]["spearman"] + 0.025


def test_diverging_loss_stops_training_and_leaves_nothing_half_made(self_made_data_dir, random_bert, tmp_path):
    # A learning rate no model survives: the loss turns NaN or infinite within the first steps.
    with pytest.raises(errors.TrainingError, match="the loss became .* training stopped; last good state: none"):
        train(self_made_data_dir, tmp_path, make_recipe(learning_rate=1e30), files=random_bert, pretrained=False)
    # It stopped before its first evaluation: there is nothing to resume, and nothing is left behind.
    assert not (tmp_path / "runs" / "run").exists() and not (tmp_path / "logs" / "run").exists()


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"pretrained_weight": "missing/model.ckpt"}, errors.CheckpointError, "checkpoint not found: missing/model"),
        ({"vocab": "missing_vocab.txt"}, errors.ConfigError, "vocab file not found: missing_vocab.txt"),
        ({"max_sequence_length": 600}, errors.ConfigError, "max_sequence_length 600 is more than the config's"),
        ({"replicas": 2, "batch_size": 15}, errors.TrainingError, "batch_size 15 does not split over 2 replicas"),
        (
            {"replicas": 2, "batch_size": 16, "mini_batch_size": 3},
            errors.TrainingError,
            "mini_batch_size 3 does not divide the batch of each replica (16 over 2 replica(s): 8)",
        ),
        (
            {"run_config": {"kind": "unsupervised", "mini_batch_size": 8}},
            errors.TrainingError,
            "mini_batch_size 8 -> None",
        ),
        ({"run_config": {"kind": "unsupervised", "learning_rate": 1.0}}, errors.TrainingError, "another recipe"),
        ({"run_config": "not a run directory"}, errors.TrainingError, "exists but is not a run directory"),
        ({"runs_below_a_file": True}, errors.InputError, "cannot make directory"),
    ],
)
def test_bad_input_fails_before_any_model_is_built(
    self_made_data_dir, random_bert, two_replicas, tmp_path, change, error, message
):
    recipe = make_recipe(
        **{key: change[key] for key in ("max_sequence_length", "batch_size", "mini_batch_size") if key in change}
    )
    run_dir = tmp_path / "runs" / "run"
    if "runs_below_a_file" in change:
        (tmp_path / "runs").write_text("a file, not a directory")
    if "run_config" in change:
        run_dir.mkdir(parents=True)
        if isinstance(change["run_config"], dict):
            (run_dir / "run_config.json").write_text(json.dumps(change["run_config"]))

    def no_batches(tokenizer, seed):
        raise AssertionError("bad input got as far as making batches")

    with pytest.raises(error, match=re.escape(message)):
        training.train(
            recipe,
            model.BertConfig.from_json_file(random_bert["config"]),
            change.get("vocab", str(random_bert["vocab_path"])),
            no_batches,
            training.load_evaluation_sets(self_made_data_dir),
            run_dir=str(run_dir),
            tensorboard_dir=str(tmp_path / "logs" / "run"),
            pretrained_weight=change.get("pretrained_weight", str(random_bert["pretrained_weight"])),
            strategy=two_replicas if change.get("replicas") else None,
        )
    assert not (tmp_path / "logs").exists()
    if isinstance(change.get("run_config"), dict):  # the run directory is left as it was
        assert [p.name for p in run_dir.iterdir()] == ["run_config.json"]
        assert json.loads((run_dir / "run_config.json").read_text()) == change["run_config"]
    elif "run_config" in change:
        assert not list(run_dir.iterdir())
    elif "runs_below_a_file" in change:
        assert (tmp_path / "runs").read_text() == "a file, not a directory"
    else:
        assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("--batch_size=1", "flag --batch_size=1: 1 is not integer >= 2"),
        ("--learning_rate=-1", "flag --learning_rate=-1.0: must be positive and finite"),
        ("--learning_rate=0", "flag --learning_rate=0.0: must be positive and finite"),
        ("--learning_rate=inf", "flag --learning_rate=inf: must be positive and finite"),
        ("--temperature=0", "flag --temperature=0.0: must be positive and finite"),
        ("--temperature=nan", "flag --temperature=nan: must be positive and finite"),
        ("--warmup_ratio=2", "flag --warmup_ratio=2.0: must be in [0, 1)"),
        ("--warmup_ratio=-0.1", "flag --warmup_ratio=-0.1: must be in [0, 1)"),
        ("--max_sequence_length=1", "flag --max_sequence_length=1: 1 is not integer >= 2"),
        ("--evaluation_frequency=0", "flag --evaluation_frequency=0: 0 is not a positive integer"),
        ("--num_cpu_devices=0", "flag --num_cpu_devices=0: 0 is not a positive integer"),
        ("--batch_size=abc", "flag --batch_size=abc: invalid literal for int()"),
    ],
)
def test_training_flags_out_of_range_fail_at_parsing(argument, message):
    parsed_training_flags()  # the defaults are valid
    with pytest.raises(flags.Error, match=re.escape(message)):
        parsed_training_flags(argument)


def parsed_training_flags(*arguments):
    values = flags.FlagValues()
    training_flags.define_flags("unsupervised", flag_values=values)
    values(["script", *arguments])
    return values


def test_a_worker_waits_for_datasets_the_chief_prepares(self_made_data_dir, tmp_path):
    started = time.monotonic()
    distribution.wait_for_the_chiefs_datasets(["korsts", "klue_sts"], str(self_made_data_dir), 60)
    assert time.monotonic() - started < 5  # prepared already: no wait
    with pytest.raises(errors.DataError, match=re.escape("korsts not prepared after 0 s of waiting for the chief")):
        distribution.wait_for_the_chiefs_datasets(["korsts"], str(tmp_path / "empty"), 0)
    assert not (tmp_path / "empty").exists()


def test_a_default_run_name_is_logged_with_the_flag_that_resumes_it(
    self_made_data_dir, random_bert, monkeypatch, caplog
):
    values = parsed_training_flags(f"--data_dir={self_made_data_dir}", "--model_checkpoints=models")
    recipe = training_flags.make_recipe(values, "unsupervised", 10)
    model_files = types.SimpleNamespace(
        config=model.BertConfig.from_json_file(random_bert["config"]),
        vocab_path=str(random_bert["vocab_path"]),
        weights=None,
        lower_case=False,
    )
    trained = []
    monkeypatch.setattr(training, "train", lambda *args, run_dir, **kwargs: trained.append(run_dir))
    with caplog.at_level("INFO"):
        training_flags.train(values, model_files, recipe, None, None)
    (run_dir,) = trained
    name = pathlib.Path(run_dir).name
    assert re.fullmatch(r"unsupervised-\d{8}-\d{6}", name)
    assert f"run name: {name} (to resume this run, rerun the command with --run_name={name})" in caplog.text


def test_precision_is_mixed_precisions_choice_or_given():
    def precision(*arguments):
        return training_flags.make_recipe(parsed_training_flags(*arguments), "unsupervised", 10).precision

    assert precision() == "float32"
    assert precision("--mixed_precision") == distribution.default_precision(True)
    assert precision("--mixed_precision", "--distribution_strategy=tpu") == "mixed_bfloat16"
    assert precision("--precision=mixed_bfloat16") == "mixed_bfloat16"
    assert precision("--precision=mixed_float16") == "mixed_float16"
    with pytest.raises(flags.Error, match="give --mixed_precision or --precision, not both"):
        parsed_training_flags("--mixed_precision", "--precision=float32")
    with pytest.raises(flags.Error, match="give --run_name with --distribution_strategy=multi_worker_mirrored"):
        parsed_training_flags("--distribution_strategy=multi_worker_mirrored")
    parsed_training_flags("--distribution_strategy=multi_worker_mirrored", "--run_name=run")
    with pytest.raises(flags.Error, match=re.escape("flag --precision=float16: value should be one of")):
        parsed_training_flags("--precision=float16")
    with pytest.raises(errors.TrainingError, match="precision must be one of float32, mixed_float16, mixed_bfloat16"):
        make_recipe(precision="float16")


# === The scripts, end to end ===


def script_options(data_dir, tmp_path, **options):
    """The command line of a short run of the MICRO config from random initialisation."""
    (tmp_path / "micro_config.json").write_text(json.dumps(MICRO))
    return {
        "config": tmp_path / "micro_config.json",
        "pretrained_weight": "",
        "vocab_path": VOCAB,
        "data_dir": data_dir,
        "model_checkpoints": tmp_path / "runs",
        "tensorboard_log_path": tmp_path / "logs",
        "run_name": "run",
        **options,
    }


@pytest.mark.slow
@needs_openssl
def test_train_unsupervised_py_first_run_in_one_command_on_two_cpu_replicas_and_its_one_line_errors(
    self_made_source_dir, random_bert, run_in_fork, tmp_path, monkeypatch
):
    """A first run on a connected machine: no dataset prepared, a Hub id for the weights, nothing else given. The
    internet is two loopback servers: an HTTPS mirror of the tfds-korean builders' URLs, through which tfds
    downloads, verifies and prepares what the script reads (the stand-ins' checksums registered by
    tests/stand_in_checksums.py), and a Hub (HF_ENDPOINT) with the model, downloaded into a cache of the test's own.
    The data and the model are the tests' own: the self-made upstream files, the random BERT's config and vocab."""
    huggingface.write_directory(
        model.BertEncoder(model.BertConfig.from_json_file(random_bert["config"]), dtype="float32"),
        str(random_bert["vocab_path"]),
        False,
        16,
        "cls",
        str(tmp_path / "hf"),
        "card\n",
    )
    (tmp_path / "checksums").mkdir()
    downloads = tfds_korean_downloads(tmp_path / "checksums", self_made_source_dir, SELF_MADE_STAND_IN_ROWS)
    options = script_options(
        tmp_path / "tfds",
        tmp_path,
        pretrained_weight="test/micro-bert",
        mixed_precision=True,
        batch_size=16,
        max_sequence_length=16,
        total_steps=10,
        evaluation_frequency=10,
        distribution_strategy="mirrored",
        num_cpu_devices=2,
        mini_batch_size=4,  # gradient caching: each replica's 8 sentences, 4 at a time
    )
    del options["config"], options["vocab_path"]
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with (
        loopback.HttpsMirror(downloads, tmp_path) as mirror,
        loopback.FakeHub({"test/micro-bert": tmp_path / "hf"}) as hub,
    ):
        for variable, value in {**mirror.environment, "HF_ENDPOINT": hub.url}.items():
            monkeypatch.setenv(variable, value)
        command = command_line("train_unsupervised.py", options)
        result = run_script("tests/stand_in_checksums.py", tmp_path / "checksums", *command)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"loaded pretrained weights from {tmp_path / 'hf_home'}" in result.stderr
        fetched = {url.rsplit("/", 1)[-1] for method, url in mirror.requests if method == "GET"}
        assert fetched == {"corpus.zip", "sts-train.tsv", "sts-dev.tsv", "sts-test.tsv"} | {
            f"klue-sts-v1.1_{split}.json" for split in ("train", "dev")
        }
        prepared = sorted(path.name for path in (tmp_path / "tfds").iterdir())
        assert prepared == ["downloads", "klue_sts", "korean_wikipedia_corpus", "korsts"]
        assert "precision policy: mixed_bfloat16" in result.stderr and "mirrored, 2 replica(s)" in result.stderr
        run_dir = tmp_path / "runs" / "run"
        assert [record["step"] for record in eval_history(run_dir)] == [10]
        run_config = json.loads((run_dir / "run_config.json").read_text())
        assert (run_config["kind"], run_config["batch_size"], run_config["total_steps"]) == ("unsupervised", 16, 10)
        assert run_config["mini_batch_size"] == 4
        # Where it started, as report.py names it: the Hub id, not the cache it was downloaded into.
        assert json.loads((run_dir / "start.json").read_text()) == {"pretrained_weight": "test/micro-bert"}
        assert (run_dir / "best" / "checkpoint").exists() and list((tmp_path / "logs" / "run").iterdir())

        # Stopped after the evaluation of step 10 but before its state was saved (as in a kill), with the history
        # line cut short: the rerun resumes from step 0 and meets the line.
        shutil.move(run_dir / "state", tmp_path / "state")
        history = run_dir / "eval_history.jsonl"
        complete = history.read_text()
        history.write_text(complete[: len(complete) // 2])
        result = run_script(*command_line("train_unsupervised.py", options))
        assert_failed_cleanly(result, f"error: {history} line 1 is not an evaluation record")
        # A broken run_config.json and a run directory under a file are tested in-process (above).
        result = run_in_fork(*command_line("train_unsupervised.py", {**options, "total_steps": 0, "run_name": "none"}))
        assert_failed_cleanly(result, "error: flag --total_steps=0: 0 is not a positive integer")


@pytest.mark.slow
def test_train_supervised_py_end_to_end(prepared_data_dir, run_in_fork, tmp_path, monkeypatch):
    """From a Hugging Face Hub id (the erf GELU, another LayerNorm epsilon), its config and vocab its own, downloaded
    from a loopback Hub (HF_ENDPOINT) into a cache of the test's own (HF_HOME)."""
    config = model.BertConfig.from_dict({**MICRO, **HUGGINGFACE_NUMERICS})
    huggingface.write_directory(
        model.BertEncoder(config, dtype="float32"), str(VOCAB), False, 16, "cls", str(tmp_path / "hf"), "card\n"
    )
    options = script_options(
        prepared_data_dir[0],
        tmp_path,
        pretrained_weight="test/micro-bert",
        train_splits="xnli_dev",
        epochs=1,
        batch_size=64,
        max_sequence_length=16,
        evaluation_frequency=100,
    )
    del options["config"], options["vocab_path"]
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with loopback.FakeHub({"test/micro-bert": tmp_path / "hf"}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        result = run_script(*command_line("train_supervised.py", options))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"loaded pretrained weights from {tmp_path / 'hf_home'}" in result.stderr
    assert "kornli:xnli_dev: 830 triples" in result.stderr
    run_dir = tmp_path / "runs" / "run"
    # What evaluate.py and export.py read for the run's checkpoints (model_files.find).
    assert model.BertConfig.from_json_file(run_dir / "bert_config.json") == config
    assert (run_dir / "vocab.txt").read_bytes() == VOCAB.read_bytes()
    assert json.loads((run_dir / "tokenizer_config.json").read_text())["do_lower_case"] is False
    assert json.loads((run_dir / "data_stats.json").read_text()) == {"triples": {"xnli_dev": 830}}
    run_config = json.loads((run_dir / "run_config.json").read_text())
    assert (run_config["train_splits"], run_config["epochs"], run_config["total_steps"]) == (["xnli_dev"], 1, 12)
    assert [record["step"] for record in eval_history(run_dir)] == [12]  # 830 // 64 steps, evaluated at the last

    # The one-line errors in forks, from the downloaded directory as a local path (a fork keeps the Hub settings
    # of the process it was forked from).
    local = {**options, "pretrained_weight": tmp_path / "hf", "run_name": "big"}
    result = run_in_fork(*command_line("train_supervised.py", {**local, "batch_size": 1000}))
    assert_failed_cleanly(result, "error: 830 triples in xnli_dev do not fill one batch of 1000")
    result = run_in_fork(*command_line("train_supervised.py", {**local, "warmup_ratio": 2}))
    assert_failed_cleanly(result, "error: flag --warmup_ratio=2.0: must be in [0, 1)")
    assert not (tmp_path / "runs" / "big").exists()


UNSUPERVISED_RECIPE = {
    # KR-BERT character from the Hugging Face Hub, with its own config and vocab.
    "config": None,
    "pretrained_weight": "snunlp/KR-BERT-char16424",
    "vocab_path": None,
    "mixed_precision": False,
    "precision": None,
    "batch_size": 64,
    "total_steps": 25000,
    "warmup_ratio": 0.05,
    "learning_rate": 3e-5,
    "temperature": 0.05,
    "max_sequence_length": 64,
    "evaluation_frequency": 250,
    "mini_batch_size": None,
}
SUPERVISED_RECIPE = {
    # KR-BERT character from the Hugging Face Hub, with its own config and vocab.
    "config": None,
    "pretrained_weight": "snunlp/KR-BERT-char16424",
    "vocab_path": None,
    "train_splits": ["mnli_train", "snli_train"],
    "batch_size": 128,
    "epochs": 3,
    "warmup_ratio": 0.05,
    "learning_rate": 5e-5,
    "temperature": 0.05,
    "max_sequence_length": 48,
    "evaluation_frequency": 125,
    "mini_batch_size": None,
}


@pytest.mark.parametrize(
    ("script", "recipe"), [("train_unsupervised", UNSUPERVISED_RECIPE), ("train_supervised", SUPERVISED_RECIPE)]
)
def test_defaults_are_the_original_recipe(run_in_fork, script, recipe):
    print_defaults = f"flags.FLAGS(['x']); print(json.dumps({{n: flags.FLAGS[n].value for n in {list(recipe)!r}}}))"
    result = run_in_fork(f"{script}.py", code=f"import json\nfrom absl import flags\n{print_defaults}")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == recipe
