"""export.py's SavedModel against the checkpoint it came from; evaluate.py --saved_model; search.py."""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf
from conftest import SHARED_DATA, TINY, VOCAB, assert_failed_cleanly, command_line, needs_shared, run_script

import data
import model
import sts

SENTENCES = ["안전모를 가진 한 남자가 춤을 추고 있다.", "KR-BERT 문장 임베딩", "😀", "", "가" * 500]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny checkpoint exported with a vocab that is deleted afterwards."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    directory = tmp_path_factory.mktemp("export")
    vocab = directory / "vocab.txt"
    shutil.copy(VOCAB, vocab)
    options = {"config": TINY["config"], "checkpoint": TINY["pretrained_weight"], "vocab_path": vocab}
    result = run_script(*command_line("export.py", {**options, "output": directory / "model"}))
    assert result.returncode == 0, result.stderr[-3000:]
    vocab.unlink()
    return directory / "model"


def checkpoint_embedder():
    encoder = model.BertEncoder(model.BertConfig.from_json_file(TINY["config"]), dtype="float32")
    model.load_checkpoint(encoder, str(TINY["pretrained_weight"]))
    return model.sentence_embedder(encoder, "cls"), data.KrBertTokenizer(str(VOCAB), 64)


@needs_shared
def test_saved_model_embeds_as_the_checkpoint_without_its_vocab_file(exported):
    assert list((exported / "assets").iterdir())  # the vocab travels with the model
    loaded = tf.saved_model.load(str(exported))
    embeddings = loaded.signatures["serving_default"](sentences=tf.constant(SENTENCES))["embeddings"].numpy()
    embedder, tokenizer = checkpoint_embedder()
    expected = embedder(tokenizer(tf.constant(SENTENCES))).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert embeddings.shape == (len(SENTENCES), 256) and embeddings.dtype == np.float32
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)


def test_export_evaluates_as_the_checkpoint(exported, prepared_data_dir, tmp_path):
    data_dir = prepared_data_dir[0]
    results_json = tmp_path / "results.json"
    result = run_script(
        "evaluate.py", f"--saved_model={exported}", f"--data_dir={data_dir}", "--datasets=korsts:dev",
        f"--results_json={results_json}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    exported_scores = json.loads(results_json.read_text())["korsts:dev"]
    embedder, tokenizer = checkpoint_embedder()
    evaluator = sts.StsEvaluator({"korsts:dev": data.sts_pairs("korsts", "dev", data_dir)}, tokenizer, 64)
    checkpoint_scores = evaluator(embedder)["korsts:dev"]
    for key in ("spearman", "pearson", "alignment", "uniformity"):
        assert exported_scores[key] == pytest.approx(checkpoint_scores[key], abs=1e-5)


def korsts_paraphrases(count):
    rows = [line.split("\t") for line in (SHARED_DATA / "korsts" / "sts-dev.tsv").read_text().splitlines()[1:]]
    return [(row[5], row[6]) for row in rows if float(row[4]) == 5.0][:count]


def test_search_finds_the_paraphrase(exported, tmp_path):
    pairs = korsts_paraphrases(30)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(second for _, second in pairs) + "\n", encoding="utf-8")
    queries = "\n".join(first for first, _ in pairs) + "\n"

    def search():
        return run_script("search.py", f"--model={exported}", f"--corpus={corpus}", "--top_k=1", stdin=queries)

    result = search()
    assert result.returncode == 0, result.stderr[-3000:]
    blocks = result.stdout.split("query: ")[1:]
    assert len(blocks) == len(pairs)
    top = [block.strip().splitlines()[1].split("  ", 2)[-1] for block in blocks]
    hits = sum(found == second for found, (_, second) in zip(top, pairs, strict=True))
    # Measured with the tiny checkpoint: 17 of 30 paraphrases ranked first (chance: 1 in 30).
    assert top[0] == pairs[0][1] and hits >= 12
    (cache,) = tmp_path.glob("corpus.txt.*.npy")
    modified = cache.stat().st_mtime_ns
    again = search()
    assert again.stdout == result.stdout and cache.stat().st_mtime_ns == modified


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty corpus", "error: corpus {corpus} has no sentences"),
        ("missing model", "error: no SavedModel at {missing}"),
    ],
)
def test_search_bad_input(exported, tmp_path, case, message):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n  \n" if case == "empty corpus" else "문장\n", encoding="utf-8")
    model_dir = exported if case == "empty corpus" else tmp_path / "missing"
    result = run_script("search.py", f"--model={model_dir}", f"--corpus={corpus}", "--query=문장")
    assert_failed_cleanly(result, message.format(corpus=corpus, missing=tmp_path / "missing"))


def test_export_refuses_an_existing_output(exported):
    options = {"config": TINY["config"], "checkpoint": TINY["pretrained_weight"], "vocab_path": VOCAB}
    result = run_script(*command_line("export.py", {**options, "output": exported}))
    assert_failed_cleanly(result, f"error: --output {exported} exists already")
