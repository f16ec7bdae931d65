"""SavedModels against the checkpoint they came from (a random BERT), for every pooling; export.py and search.py
end to end (search.py's ranking with the tiny checkpoint)."""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf
from helpers import (
    MICRO_CHARACTER,
    SHARED_DATA,
    TINY,
    assert_failed_cleanly,
    command_line,
    require_shared,
    run_script,
)

import data
import errors
import evaluation
import export as export_module
import google_checkpoint
import model
import model_files
import saved_model
import sts
import tokenization
import training

SENTENCES = ["안전모를 가진 한 남자가 춤을 추고 있다.", "KR-BERT 문장 임베딩", "😀", "", "가" * 500]


def export(run, files, directory):
    """export.py's SavedModel of a model's `files`, pooler output, made with a vocab deleted afterwards: `run` is
    run_script, or the run_in_fork fixture."""
    vocab = directory / "vocab.txt"
    shutil.copy(files["vocab_path"], vocab)
    options = {"config": files["config"], "checkpoint": files["pretrained_weight"], "vocab_path": vocab}
    result = run(*command_line("export.py", {**options, "output": directory / "model", "pooling": "pooled"}))
    assert result.returncode == 0, result.stderr[-3000:]
    vocab.unlink()
    return directory / "model"


@pytest.fixture(scope="module")
def exported(run_in_fork, random_bert, tmp_path_factory):
    """The random BERT's SavedModel."""
    return export(run_in_fork, random_bert, tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def exported_tiny(tmp_path_factory):
    """The tiny checkpoint's SavedModel, by export.py as a user runs it."""
    require_shared()
    return export(run_script, TINY, tmp_path_factory.mktemp("export_tiny"))


def checkpoint_embeddings(files, pooling, sentences):
    """A model's L2-normalised embeddings of `sentences`, float32, without any SavedModel."""
    encoder = model.BertEncoder(model.BertConfig.from_json_file(files["config"]), dtype="float32")
    google_checkpoint.load_checkpoint(encoder, str(files["pretrained_weight"]))
    features = tokenization.KrBertTokenizer(str(files["vocab_path"]), 64)(tf.constant(sentences))
    embeddings = model.sentence_embedder(encoder, pooling)(features).numpy()
    return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)


def test_exported_model_embeds_as_the_checkpoint_without_its_vocab_file(exported, random_bert):
    assert list((exported / "assets").iterdir())  # the vocab travels with the model
    embeddings = saved_model.load_saved_embedder(str(exported))(tf.constant(SENTENCES)).numpy()
    assert embeddings.shape == (len(SENTENCES), MICRO_CHARACTER["hidden_size"]) and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, checkpoint_embeddings(random_bert, "pooled", SENTENCES), atol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_saved_embedder_of_every_pooling_embeds_as_the_checkpoint(exported, random_bert, tmp_path, pooling):
    encoder = model.BertEncoder(model.BertConfig.from_json_file(random_bert["config"]), dtype="float32")
    google_checkpoint.load_checkpoint(encoder, str(random_bert["pretrained_weight"]))
    tokenizer = tokenization.KrBertTokenizer(str(random_bert["vocab_path"]), 64)
    saved_model.save_embedder(model.sentence_embedder(encoder, pooling), tokenizer, str(tmp_path / "model"))
    embeddings = saved_model.load_saved_embedder(str(tmp_path / "model"))(tf.constant(SENTENCES)).numpy()
    np.testing.assert_allclose(embeddings, checkpoint_embeddings(random_bert, pooling, SENTENCES), atol=1e-5)
    # Another model, another fingerprint (search.py's cache key); the same model, the same one.
    fingerprint = saved_model.saved_model_fingerprint(str(tmp_path / "model"))
    assert fingerprint != saved_model.saved_model_fingerprint(str(exported))
    # Nothing is overwritten, and nothing half-written is left.
    with pytest.raises(errors.FileError, match="exists already: choose a new directory"):
        saved_model.save_embedder(model.sentence_embedder(encoder, "pooled"), tokenizer, str(tmp_path / "model"))
    assert saved_model.saved_model_fingerprint(str(tmp_path / "model")) == fingerprint
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    # The same graph with one weight changed: another fingerprint.
    weight = encoder.checkpoint_variables()["bert/encoder/layer_0/output/dense/bias"]
    weight.assign(weight + 1e-3)
    saved_model.save_embedder(model.sentence_embedder(encoder, pooling), tokenizer, str(tmp_path / "changed"))
    assert saved_model.saved_model_fingerprint(str(tmp_path / "changed")) != fingerprint


def test_exported_model_evaluates_as_the_checkpoint(exported, random_bert, self_made_data_dir):
    pairs = {"korsts:dev": data.sts_pairs("korsts", "dev", self_made_data_dir).take(256)}
    # What `evaluate.py --saved_model` runs: the SavedModel tokenizes inside, so the sentences go in as they are.
    exported_scores = sts.StsEvaluator(pairs, tf.identity, saved_model.load_saved_embedder(str(exported)), 64)()
    encoder = model.BertEncoder(model.BertConfig.from_json_file(random_bert["config"]), dtype="float32")
    google_checkpoint.load_checkpoint(encoder, str(random_bert["pretrained_weight"]))
    tokenizer = tokenization.KrBertTokenizer(str(random_bert["vocab_path"]), 64)
    checkpoint_scores = sts.StsEvaluator(pairs, tokenizer.trimmed, model.sentence_embedder(encoder, "pooled"), 64)()
    for key in ("spearman", "pearson", "alignment", "uniformity"):
        assert exported_scores["korsts:dev"][key] == pytest.approx(checkpoint_scores["korsts:dev"][key], abs=1e-5)


def korsts_paraphrases(count):
    rows = [line.split("\t") for line in (SHARED_DATA / "korsts" / "sts-dev.tsv").read_text().splitlines()[1:]]
    return [(row[5], row[6]) for row in rows if float(row[4]) == 5.0][:count]


@pytest.mark.slow
def test_search_finds_the_paraphrase_and_caches_the_corpus(exported_tiny, run_in_fork, tmp_path):
    pairs = korsts_paraphrases(30)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(second for _, second in pairs) + "\n", encoding="utf-8")
    queries = "\n".join(first for first, _ in pairs) + "\n"

    def search(run=run_in_fork):
        """search.py's top sentence for each query; the first run as a user runs it, the others in forks."""
        result = run("search.py", f"--model={exported_tiny}", f"--corpus={corpus}", "--top_k=3", stdin=queries)
        assert result.returncode == 0, result.stderr[-3000:]
        blocks = [block.strip().splitlines()[1:] for block in result.stdout.split("query: ")[1:]]
        assert len(blocks) == len(pairs) and all(len(lines) == 3 for lines in blocks)
        for lines in blocks:  # "  1. 0.9876  sentence", best first
            scores = [float(line.split()[1]) for line in lines]
            assert scores == sorted(scores, reverse=True)
        return [lines[0].split("  ", 2)[-1] for lines in blocks]

    top = search(run_script)
    hits = sum(found == second for found, (_, second) in zip(top, pairs, strict=True))
    # Measured with the tiny checkpoint's pooler output: 16 of 30 paraphrases ranked first (chance: 1 in 30).
    assert top[0] == pairs[0][1] and hits >= 10
    (cache,) = tmp_path.glob("corpus.txt.*.npy")
    embeddings = np.load(cache)
    # Embedded shortest first, stored in corpus order.
    expected = checkpoint_embeddings(TINY, "pooled", [second for _, second in pairs])
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)
    # The same corpus again: its cache is read, not written.
    modified = cache.stat().st_mtime_ns
    assert search() == top and cache.stat().st_mtime_ns == modified
    # A changed corpus is embedded anew, under another key.
    corpus.write_text("\n".join(second for _, second in pairs[1:]) + "\n", encoding="utf-8")
    search()
    (new_cache,) = set(tmp_path.glob("corpus.txt.*.npy")) - {cache}
    assert np.load(new_cache).shape == (29, 256)


@pytest.mark.parametrize(
    ("corpus_bytes", "message"),
    [
        (b"\n  \n", "error: corpus {corpus} has no sentences"),
        ("문장\n".encode() + "문장\n".encode("cp949"), "error: {corpus} line 2 is not UTF-8 text"),
    ],
)
def test_search_bad_input(run_in_fork, exported, tmp_path, corpus_bytes, message):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(corpus_bytes)
    result = run_in_fork("search.py", f"--model={exported}", f"--corpus={corpus}", "--query=문장")
    assert_failed_cleanly(result, message.format(corpus=corpus))
    assert [p.name for p in tmp_path.iterdir()] == ["corpus.txt"]


def test_export_to_a_path_below_a_file(run_in_fork, random_bert, tmp_path):
    (tmp_path / "file").write_text("x")
    options = {
        "config": random_bert["config"],
        "checkpoint": random_bert["pretrained_weight"],
        "vocab_path": random_bert["vocab_path"],
    }
    result = run_in_fork(*command_line("export.py", {**options, "output": tmp_path / "file" / "model"}))
    assert_failed_cleanly(result, f"error: cannot make directory {tmp_path / 'file' / 'model'}")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_loading_what_is_not_a_saved_model(tmp_path):
    with pytest.raises(errors.CheckpointError, match=f"no SavedModel at {tmp_path / 'missing'}"):
        saved_model.load_saved_embedder(str(tmp_path / "missing"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "saved_model.pb").write_bytes(b"not a graph")
    with pytest.raises(errors.CheckpointError, match="is not a loadable SavedModel"):
        saved_model.load_saved_embedder(str(tmp_path / "broken"))


def test_a_supervised_runs_best_is_evaluated_and_exported_at_the_runs_own_length(
    self_made_data_dir, random_bert, tmp_path
):
    """No length given: the run's own (its run_config.json), 48 for the supervised recipe, not the default 64."""
    recipe = training.Recipe(
        kind="supervised", total_steps=2, batch_size=8, learning_rate=5e-5, warmup_ratio=0.05, temperature=0.05,
        max_sequence_length=48, evaluation_frequency=2, seed=42, precision="float32", train_splits=("xnli_dev",),
        epochs=1,
    )  # fmt: skip
    triples, _ = data.nli_triples_of_splits(["xnli_dev"], self_made_data_dir)
    run = training.train(
        recipe, model.BertConfig.from_json_file(random_bert["config"]), str(random_bert["vocab_path"]),
        lambda tokenizer, seed: data.supervised_batches(triples, tokenizer, recipe.batch_size, seed),
        training.load_evaluation_sets(self_made_data_dir), run_dir=str(tmp_path / "run"),
        tensorboard_dir=str(tmp_path / "logs"), pretrained_weight=str(random_bert["pretrained_weight"]),
    )  # fmt: skip
    results = evaluation.evaluate(["korsts:dev"], checkpoint=f"{run}/best", data_dir=str(self_made_data_dir))
    assert results["korsts:dev"]["max_sequence_length"] == 48
    # The score training recorded, at 48: the same length, the same number.
    recorded = json.loads((tmp_path / "run" / "eval_history.jsonl").read_text().splitlines()[-1])
    assert results["korsts:dev"]["spearman"] == pytest.approx(recorded["korsts_spearman"], abs=1e-6)
    export_module.export(f"{run}/best", str(tmp_path / "exported"))
    assert saved_model.load_saved_embedder(str(tmp_path / "exported")).max_sequence_length == 48
    # A checkpoint that is not a run's: 64.
    assert model_files.run_sequence_length(str(random_bert["pretrained_weight"])) == 64
