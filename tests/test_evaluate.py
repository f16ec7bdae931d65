"""STS scores of the tiny checkpoint (and of a random BERT, on data of the test's own) against an independent
numpy BERT and tokenizer, in-process and through evaluate.py end to end; odd sentences; evaluate.py's one-line
errors."""

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
from helpers import (
    KORSTS_HEADER,
    REPO,
    SHARED_DATA,
    TINY,
    VOCAB,
    assert_failed_cleanly,
    float32_embedder,
    last_stderr_line,
    require_shared,
    sts_scores,
)
from reference_bert import bert
from reference_tokenizer import encode, load_vocab

import data
import google_checkpoint
import huggingface
import model

MAX_SEQUENCE_LENGTH = 64


@pytest.fixture(scope="module")
def reference_korsts_dev_spearman():
    """{pooling: KorSTS dev Spearman} of the tiny checkpoint by the numpy BERT and the reference tokenizer."""
    require_shared()
    return reference_spearman(TINY, SHARED_DATA / "korsts" / "sts-dev.tsv")


def reference_spearman(files, korsts_file):
    """{pooling: Spearman of the KorSTS file} of a model's `files` by the numpy BERT and the reference tokenizer."""
    config = json.loads(files["config"].read_text())
    reader = tf.train.load_checkpoint(str(files["pretrained_weight"]))
    names = [name for name in reader.get_variable_to_shape_map() if name.startswith("bert/") and "adam" not in name]
    weights = {name: reader.get_tensor(name) for name in names}
    vocab = load_vocab(files["vocab_path"])
    rows = [line.split("\t") for line in korsts_file.read_text().splitlines()[1:]]

    def embed(sentences):
        """{pooling: [sentences, hidden]}."""
        ids, masks = map(np.array, zip(*(encode(s, vocab, MAX_SEQUENCE_LENGTH) for s in sentences), strict=True))
        length = masks.sum(axis=1).max()
        ids, masks = ids[:, :length], masks[:, :length]  # padded positions are masked out
        # float32: the Spearman compared to 1e-3 needs no more, and 3,000 sentences take half the time of float64's.
        sequence, _ = bert(
            weights, config["num_hidden_layers"], config["num_attention_heads"], ids, masks, 0 * ids, np.float32
        )
        mean = (sequence * masks[:, :, None]).sum(axis=1) / masks.sum(axis=1, keepdims=True)
        return {"cls": sequence[:, 0], "mean": mean}

    def embed_all(column):
        # Shortest first, so batches carry little padding (numpy is slow), then back in row order.
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][column]))
        batches = [embed([rows[i][column] for i in order[start : start + 100]]) for start in range(0, len(rows), 100)]
        embeddings = {pooling: np.empty((len(rows), config["hidden_size"])) for pooling in ("cls", "mean")}
        for pooling in embeddings:
            embeddings[pooling][order] = np.concatenate([batch[pooling] for batch in batches])
        return embeddings

    first, second = embed_all(5), embed_all(6)
    gold = [float(row[4]) for row in rows]
    spearman = {}
    for pooling in ("cls", "mean"):
        a, b = first[pooling], second[pooling]
        cosine = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        spearman[pooling] = scipy.stats.spearmanr(cosine, gold).statistic
    return spearman


@pytest.mark.slow
def test_cls_scores_match_an_independent_bert(prepared_data_dir, reference_korsts_dev_spearman):
    scores = sts_scores(prepared_data_dir[0], float32_embedder(TINY, "cls"), MAX_SEQUENCE_LENGTH, sets=["korsts:dev"])
    assert scores["korsts:dev"]["n"] == 1500
    assert scores["korsts:dev"]["spearman"] == pytest.approx(reference_korsts_dev_spearman["cls"], abs=1e-3)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_scores_of_a_random_bert_match_an_independent_bert(
    random_bert, self_made_source_dir, self_made_data_dir, pooling
):
    reference = reference_spearman(random_bert, self_made_source_dir / "korsts" / "sts-dev.tsv")
    embedder = float32_embedder(random_bert, pooling)
    vocab_path = random_bert["vocab_path"]
    scores = sts_scores(self_made_data_dir, embedder, MAX_SEQUENCE_LENGTH, ["korsts:dev"], vocab_path)["korsts:dev"]
    assert scores["n"] == 24 and abs(scores["spearman"]) > 0.1  # a random BERT's scores, but not nothing
    assert scores["spearman"] == pytest.approx(reference[pooling], abs=1e-3)


@pytest.mark.slow
def test_evaluate_py_mean_pooling_matches_an_independent_bert(
    prepared_data_dir, reference_korsts_dev_spearman, run_in_fork, tmp_path
):
    """The tiny checkpoint as a Hugging Face directory, given alone: its config and vocab come with it. (evaluate.py's
    run in a fresh interpreter is the SIGTERM test's.)"""
    encoder = model.BertEncoder(model.BertConfig.from_json_file(TINY["config"]), dtype="float32")
    google_checkpoint.load_checkpoint(encoder, str(TINY["pretrained_weight"]))
    huggingface.write_directory(encoder, str(VOCAB), False, 64, "cls", str(tmp_path / "tiny"), "card\n")
    results_json = tmp_path / "results.json"
    result = run_in_fork(
        "evaluate.py", f"--checkpoint={tmp_path / 'tiny'}", f"--data_dir={prepared_data_dir[0]}",
        "--datasets=korsts:dev,klue_sts:dev", "--pooling=mean", f"--results_json={results_json}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(results_json.read_text())
    assert list(results) == ["korsts:dev", "klue_sts:dev"]
    assert results["korsts:dev"]["n"] == 1500 and results["klue_sts:dev"]["n"] == 519
    for scores in results.values():
        assert set(scores) == {
            "n",
            "pearson",
            "spearman",
            "alignment",
            "uniformity",
            "max_examples",
            "max_sequence_length",
            "precision",
        }
        assert scores["max_examples"] is None and scores["max_sequence_length"] == 64  # not a run's checkpoint: 64
        assert scores["precision"] == "float32"
    assert "mean pooling, max length 64, float32" in result.stdout
    assert f"{results['korsts:dev']['spearman'] * 100:.2f}" in result.stdout
    assert results["korsts:dev"]["spearman"] == pytest.approx(reference_korsts_dev_spearman["mean"], abs=1e-3)


ODD_SENTENCES = ["", "   ", "😀🎉👍🏽", "가" * 10_000, "\u200b\u3000"]


def test_odd_sentences_are_scored_not_refused(random_bert, tmp_path):
    rows = [
        f"main-captions\tMSRvid\t2012test\t{i:04d}\t{i % 5}.0\t{sentence}\t남자가 춤을 추고 있다."
        for i, sentence in enumerate(["한 남자가 춤을 춘다.", *ODD_SENTENCES], start=1)
    ]
    source = tmp_path / "source" / "korsts"
    source.mkdir(parents=True)
    # Empty sentences would break the builder's own row split (strip() drops trailing tabs): odd text leads.
    (source / "sts-dev.tsv").write_text("\n".join([KORSTS_HEADER, *rows]) + "\n", encoding="utf-8")
    data.prepare(["korsts"], str(tmp_path / "source"), str(tmp_path / "tfds"))
    embedder, vocab_path = float32_embedder(random_bert), random_bert["vocab_path"]
    scores = sts_scores(tmp_path / "tfds", embedder, MAX_SEQUENCE_LENGTH, ["korsts:dev"], vocab_path)["korsts:dev"]
    assert scores["n"] == 1 + len(ODD_SENTENCES)
    assert all(np.isfinite(scores[name]) for name in ("pearson", "spearman", "alignment", "uniformity"))


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (
            "--max_sequence_length=100000",
            "max_sequence_length 100000 is more than the config's max_position_embeddings",
        ),
        ("--results_json={tmp}/missing/results.json", "cannot write {tmp}/missing/results.json: {tmp}/missing is not"),
        ("--batch_size=0", "flag --batch_size=0: 0 is not a positive integer"),
    ],
)
def test_bad_input_ends_in_one_line_and_no_results(
    run_in_fork, random_bert, self_made_data_dir, tmp_path, flag, message
):
    results_json = tmp_path / "results.json"
    result = run_in_fork(
        "evaluate.py", f"--config={random_bert['config']}", f"--checkpoint={random_bert['pretrained_weight']}",
        f"--vocab_path={random_bert['vocab_path']}", f"--data_dir={self_made_data_dir}", "--datasets=korsts:dev",
        f"--results_json={results_json}", flag.format(tmp=tmp_path),
    )  # fmt: skip
    assert_failed_cleanly(result, "error: " + message.format(tmp=tmp_path))
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_evaluate_py_stopped_by_sigterm_is_one_line_and_writes_nothing(prepared_data_dir, random_bert, tmp_path):
    """A long evaluation (12,540 sentences one at a time) sent SIGTERM once the model is loaded."""
    results_json = tmp_path / "results.json"
    command = [
        sys.executable, "-u", "evaluate.py", f"--checkpoint={random_bert['pretrained_weight']}", "--batch_size=1",
        f"--data_dir={prepared_data_dir[0]}", "--datasets=question_pair:validation", f"--results_json={results_json}",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith("checkpoint ")  # loaded: embedding begins
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in stderr
    assert last_stderr_line(subprocess.CompletedProcess([], 143, "", stderr)) == "error: interrupted by SIGTERM"
    assert not list(tmp_path.iterdir())
