"""evaluate.py end to end on real KorSTS / KLUE STS, against an independent BERT and tokenizer; bad input."""

import json

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
from conftest import SHARED_DATA, TINY_CHECKPOINT_DIR, VOCAB, assert_failed_cleanly, last_stderr_line, run_script
from reference_bert import bert
from reference_tokenizer import encode, load_vocab

TINY_CONFIG = TINY_CHECKPOINT_DIR / "bert_config.json"
TINY_CHECKPOINT = TINY_CHECKPOINT_DIR / "model.ckpt"


def evaluate(data_dir, *flags, config=TINY_CONFIG, checkpoint=TINY_CHECKPOINT, vocab=VOCAB):
    return run_script(
        "evaluate.py",
        f"--config={config}",
        f"--checkpoint={checkpoint}",
        f"--vocab_path={vocab}",
        f"--data_dir={data_dir}",
        *flags,
    )


def reference_korsts_dev_spearman():
    """KorSTS dev Spearman of the tiny checkpoint's [CLS], by the numpy BERT and the reference tokenizer."""
    config = json.loads(TINY_CONFIG.read_text())
    reader = tf.train.load_checkpoint(str(TINY_CHECKPOINT))
    weights = {
        name: reader.get_tensor(name).astype(np.float64)
        for name in reader.get_variable_to_shape_map()
        if name.startswith("bert/") and "adam" not in name
    }
    vocab = load_vocab(VOCAB)
    rows = [line.split("\t") for line in (SHARED_DATA / "korsts" / "sts-dev.tsv").read_text().splitlines()[1:]]

    def cls(sentence):
        ids, mask = encode(sentence, vocab, 64)
        length = sum(mask)
        ids = np.array([ids[:length]])
        sequence, _ = bert(weights, config["num_hidden_layers"], config["num_attention_heads"], ids, ids > -1, 0 * ids)
        return sequence[0, 0]

    similarities = []
    for row in rows:
        a, b = cls(row[5]), cls(row[6])
        similarities.append(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    return scipy.stats.spearmanr(similarities, [float(row[4]) for row in rows]).statistic


def test_evaluate_reproduces_an_independent_bert(prepared_data_dir, tmp_path):
    results_json = tmp_path / "results.json"
    result = evaluate(prepared_data_dir[0], "--datasets=korsts:dev,klue_sts:dev", f"--results_json={results_json}")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(results_json.read_text())
    assert list(results) == ["korsts:dev", "klue_sts:dev"]
    assert results["korsts:dev"]["n"] == 1500 and results["klue_sts:dev"]["n"] == 519
    for scores in results.values():
        assert set(scores) == {"n", "pearson", "spearman", "alignment", "uniformity"}
    assert "korsts:dev" in result.stdout and "klue_sts:dev" in result.stdout
    printed = f"{results['korsts:dev']['spearman'] * 100:.2f}"
    assert printed in result.stdout
    assert results["korsts:dev"]["spearman"] == pytest.approx(reference_korsts_dev_spearman(), abs=1e-3)


@pytest.fixture
def bad_config(tmp_path):
    path = tmp_path / "bert_config.json"
    path.write_text('{"vocab_size": 16424,')
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ({"checkpoint": "missing/model.ckpt"}, "error: checkpoint not found: missing/model.ckpt"),
        ({"vocab": SHARED_DATA / "vocabs" / "vocab_subchar_12367.txt"}, "has 12367 tokens, config vocab_size is 16424"),
        ({"vocab": "missing_vocab.txt"}, "error: vocab file not found: missing_vocab.txt"),
        ({"config": "bad"}, "is not valid JSON"),
        ({"flags": ["--datasets=korsts:validation"]}, "error: unknown split 'validation' of korsts"),
        ({"flags": ["--datasets=kornli:xnli_dev"]}, "error: unknown STS dataset 'kornli'"),
        ({"flags": ["--datasets=korsts"]}, "error: 'korsts' is not DATASET:SPLIT"),
        ({"flags": ["--datasets=korsts:dev,korsts:test"]}, "put korsts/sts-test.tsv under --source_dir"),
        ({"data_dir": "empty"}, "error: korsts is not prepared in"),
    ],
)
def test_bad_input_ends_in_one_clear_line(prepared_data_dir, tmp_path, bad_config, case, message):
    data_dir = tmp_path / "empty_tfds" if case.get("data_dir") == "empty" else prepared_data_dir[0]
    kwargs = {key: case[key] for key in ("checkpoint", "vocab") if key in case}
    if case.get("config") == "bad":
        kwargs["config"] = bad_config
    results_json = tmp_path / "results.json"
    flags = ["--datasets=korsts:dev", *case.get("flags", [])]  # the last --datasets counts
    result = evaluate(data_dir, f"--results_json={results_json}", *flags, **kwargs)
    assert_failed_cleanly(result, "error: ")
    assert message in last_stderr_line(result)
    assert not results_json.exists()
