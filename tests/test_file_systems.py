"""Runs, evaluations, exports and searches on a file system of TensorFlow's other than the local disk: ram://, its
in-memory one, which goes through tf.io.gfile as gs:// does. Every file lands where it was asked to, and nothing
appears on the local disk (a path handled by os.path instead would make a local `ram:` folder)."""

import json
import os
import uuid

import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO

import data
import errors
import evaluation
import export
import files
import google_checkpoint
import model
import model_files
import saved_model
import search
import training

RECIPE = {
    "kind": "unsupervised",
    "total_steps": 4,
    "batch_size": 8,
    "learning_rate": 1e-3,
    "warmup_ratio": 0.0,
    "temperature": 0.05,
    "max_sequence_length": 16,
    "evaluation_frequency": 2,
    "seed": 0,
    "precision": "float32",
}


def ram_root():
    return f"ram://{uuid.uuid4().hex}"


def tree(root):
    """Every file under `root` (tf.io.gfile), relative to it."""
    return sorted(
        os.path.relpath(os.path.join(directory, name), root)
        for directory, _, names in tf.io.gfile.walk(root)
        for name in names
    )


@pytest.fixture(scope="module")
def empty_cwd(tmp_path_factory):
    """An empty current directory for the module's tests: a path taken for a local one would appear in it."""
    directory = tmp_path_factory.mktemp("cwd")
    previous = os.getcwd()
    os.chdir(directory)
    yield directory
    os.chdir(previous)
    assert not list(directory.iterdir())


@pytest.fixture(scope="module")
def ram_run(self_made_data_dir, random_bert, empty_cwd):
    """A run trained on ram:// from weights on ram://, stopped after step 3 and resumed to step 4: (root, run)."""
    root = ram_root()
    for path in random_bert["config"].parent.iterdir():
        tf.io.gfile.makedirs(f"{root}/pretrained")
        tf.io.gfile.copy(str(path), f"{root}/pretrained/{path.name}")
    found = model_files.find(f"{root}/pretrained/model.ckpt")
    recipe = training.Recipe(**RECIPE)
    sentences = data.corpus_sentences(self_made_data_dir)
    run = f"{root}/runs/run"

    def train(steps):
        def make_batches(tokenizer, seed):
            return data.unsupervised_batches(sentences, tokenizer, recipe.batch_size, seed).take(steps)

        training.train(
            recipe,
            found.config,
            found.vocab_path,
            make_batches,
            training.load_evaluation_sets(self_made_data_dir),
            run_dir=run,
            tensorboard_dir=f"{root}/logs/run",
            pretrained_weight=found.weights,
        )
        return [json.loads(line)["step"] for line in tf.io.gfile.GFile(f"{run}/eval_history.jsonl")]

    assert train(3) == [2]  # the batches end after step 3: stopped, as a killed run stops
    assert train(4) == [2, 4]  # resumed from the state of step 2
    return root, run


def test_a_run_on_ram_is_all_there_and_nothing_is_local(ram_run, empty_cwd):
    root, run = ram_run
    written = tree(run)
    for name in ("run_config.json", "eval_history.jsonl", "bert_config.json", "vocab.txt", "tokenizer_config.json"):
        assert name in written
    assert {"step-2.index", "step-4.index", "best/checkpoint", "state/checkpoint"} <= set(written)
    assert not [name for name in written if files.TEMPORARY_SUFFIX in name]
    assert any(name.startswith("events.out.tfevents") for name in tree(f"{root}/logs/run"))
    assert not list(empty_cwd.iterdir())


def test_evaluation_export_and_search_on_ram(ram_run, self_made_data_dir, random_bert, empty_cwd):
    root, run = ram_run
    best = google_checkpoint.resolve_checkpoint(f"{run}/best")
    step = int(best.rsplit("-", 1)[1])
    history = [json.loads(line) for line in tf.io.gfile.GFile(f"{run}/eval_history.jsonl")]
    recorded = next(record for record in history if record["step"] == step)

    # evaluate.py's work, its results JSON on ram://: the scores training recorded for the same checkpoint.
    results = evaluation.evaluate(
        ["korsts:dev"], checkpoint=f"{run}/best", data_dir=str(self_made_data_dir), max_sequence_length=16, batch_size=8
    )
    files.write_json_atomically(f"{root}/results.json", results)
    assert files.read_json(f"{root}/results.json") == results
    assert results["korsts:dev"]["spearman"] == pytest.approx(recorded["korsts_spearman"], abs=1e-6)

    # A SavedModel on ram://, read back: the checkpoint's embeddings.
    export.export(f"{run}/best", f"{root}/exported", max_sequence_length=16)
    embed = saved_model.load_saved_embedder(f"{root}/exported")
    sentences = ["한 남자가 공원에서 춤을 춘다.", "고양이가 집에서 잠을 잔다."]
    encoder = model.BertEncoder(model.BertConfig.from_json_file(f"{run}/bert_config.json"), dtype="float32")
    google_checkpoint.load_checkpoint(encoder, best)
    tokenizer = model_files.load_encoder(model_files.find(f"{run}/best"), 16)[0]
    expected = model.sentence_embedder(encoder, "cls")(tokenizer.trimmed(tf.constant(sentences))).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(embed(tf.constant(sentences)).numpy(), expected, atol=1e-5)

    # A Hugging Face directory on ram://, read back through its safetensors: the checkpoint's weights.
    export.export(f"{run}/best", f"{root}/huggingface", output_format="huggingface", max_sequence_length=16)
    found = model_files.find(f"{root}/huggingface")
    assert found.config == encoder.config and found.vocab_path == f"{root}/huggingface/vocab.txt"
    loaded = model.BertEncoder(found.config, dtype="float32")
    model_files.load_encoder_weights(loaded, found.weights)
    for name, variable in encoder.checkpoint_variables().items():
        np.testing.assert_array_equal(loaded.checkpoint_variables()[name].numpy(), variable.numpy())

    # Search over a corpus on ram://, its embeddings cached beside it and read from there the second time.
    files.write_file(f"{root}/corpus.txt", "\n".join([*sentences, "아이가 바닷가에서 책을 읽는다."]) + "\n")
    ranked = search.Searcher(f"{root}/exported", f"{root}/corpus.txt").search([sentences[1]], top_k=1)
    assert ranked[0][1][0][1] == sentences[1]
    (cache,) = tf.io.gfile.glob(f"{root}/corpus.txt.*.npy")
    again = search.Searcher(f"{root}/exported", f"{root}/corpus.txt")
    assert again.search([sentences[1]], top_k=1) == ranked and tf.io.gfile.glob(f"{root}/corpus.txt.*.npy") == [cache]
    assert not list(empty_cwd.iterdir())
    assert not (REPO / "ram:").exists()


def test_path_checks_take_urls_as_they_are():
    root = ram_root()
    assert files.absolute("gs://bucket/runs") == "gs://bucket/runs" and files.parent("gs://bucket") is None
    assert files.parent(f"{root}/runs/run") == f"{root}/runs"
    files.check_can_make_directory(f"{root}/runs/run")  # nothing on the way up: a bucket's directories are names
    files.write_file(f"{root}/a_file", "x")
    with pytest.raises(errors.FileError, match=f"cannot make directory {root}/a_file/run: {root}/a_file is not a"):
        files.check_can_make_directory(f"{root}/a_file/run")
    with pytest.raises(errors.FileError, match=f"cannot write {root}/a_file/x.json: {root}/a_file is not a"):
        files.check_can_write_file(f"{root}/a_file/x.json")
    files.makedirs(f"{root}/a_directory")
    with pytest.raises(errors.FileError, match=f"cannot write {root}/a_directory: it is a directory"):
        files.check_can_write_file(f"{root}/a_directory")
    with pytest.raises(errors.FileError, match="exists already"):
        files.check_new_directory(f"{root}/a_directory")
    # ram:// takes a name that begins another for a file and a directory; files.py does not.
    files.write_file(f"{root}/model.ckpt.index", "x")
    assert tf.io.gfile.isdir(f"{root}/model.ckpt") and not files.exists(f"{root}/model.ckpt")


# === Each script, its outputs on ram:// ===

# Run in the fork after the script: what it wrote under ram://out, as one JSON line on stdout.
LIST_OUTPUTS = """
import json, tensorflow as tf, errors, {script}
try:
    errors.run({script}.main)
finally:
    print(json.dumps(sorted(tf.io.gfile.glob("ram://out/*/*"))))
"""


def run_with_ram_outputs(run_in_fork, tmp_path, script, *args):
    """(exit status, what the script wrote under ram://out) of `script` run in a fork from an empty directory."""
    result = run_in_fork(
        f"{script}.py",
        *args,
        code=LIST_OUTPUTS.format(script=script),
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(tmp_path.iterdir()), "the script wrote to the local disk"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train_unsupervised", "train_supervised"])
def test_training_scripts_write_runs_and_logs_to_ram(run_in_fork, tmp_path, self_made_data_dir, random_bert, script):
    model_flags = [f"--{name}={random_bert[name]}" for name in ("config", "vocab_path", "pretrained_weight")]
    steps = ["--total_steps=2"] if script == "train_unsupervised" else ["--train_splits=xnli_dev", "--epochs=1"]
    written = run_with_ram_outputs(
        run_in_fork,
        tmp_path,
        script,
        *model_flags,
        *steps,
        f"--data_dir={self_made_data_dir}",
        "--model_checkpoints=ram://out/runs",
        "--tensorboard_log_path=ram://out/logs",
        "--run_name=run",
        "--batch_size=8",
        "--max_sequence_length=16",
        "--evaluation_frequency=1000",
    )
    assert {"ram://out/runs/run", "ram://out/logs/run"} <= set(written)


@pytest.mark.slow
def test_evaluate_and_export_write_to_ram(run_in_fork, tmp_path, self_made_data_dir, random_bert):
    model = [f"--checkpoint={random_bert['pretrained_weight']}", f"--config={random_bert['config']}"]
    model.append(f"--vocab_path={random_bert['vocab_path']}")
    written = run_with_ram_outputs(
        run_in_fork,
        tmp_path,
        "evaluate",
        *model,
        f"--data_dir={self_made_data_dir}",
        "--datasets=korsts:dev",
        "--max_sequence_length=16",
        "--results_json=ram://out/results/scores.json",
    )
    assert written == ["ram://out/results/scores.json"]
    written = run_with_ram_outputs(run_in_fork, tmp_path, "export", *model, "--output=ram://out/exported")
    assert "ram://out/exported/saved_model.pb" in written
