"""The bad-input matrix of the README: each error ends in one line on stderr, a non-zero exit and nothing
half-written; odd sentences are inputs to handle, not errors. (Rows tested elsewhere are named there.)"""

import json

import pytest
from conftest import SHARED_DATA, TINY, VOCAB, assert_failed_cleanly, run_script, run_training

KORSTS_HEADER = "genre\tfilename\tyear\tid\tscore\tsentence1\tsentence2"
GOOD_STS_ROW = "main-captions\tMSRvid\t2012test\t0001\t4.5\t한 남자가 춤을 춘다.\t남자가 춤을 추고 있다."


def prepare(tmp_path, files, datasets):
    for relative, text in files.items():
        (tmp_path / "source" / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "source" / relative).write_text(text, encoding="utf-8")
    return run_script(
        "data.py", "prepare", f"--source_dir={tmp_path / 'source'}", f"--data_dir={tmp_path / 'tfds'}",
        f"--datasets={datasets}",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("files", "datasets", "message"),
    [
        (
            {"korsts/sts-dev.tsv": f"{KORSTS_HEADER}\n{GOOD_STS_ROW}\nmain\tMSRvid\t2012\t0002\t3.0\t문장 하나만\n"},
            "korsts",
            "sts-dev.tsv line 3: 6 tab-separated columns, expected 7",
        ),
        (
            {"korsts/sts-dev.tsv": f"{KORSTS_HEADER}\nmain\tMSRvid\t2012\t0002\t다섯\t문장\t문장\n"},
            "korsts",
            "sts-dev.tsv line 2: score '다섯' is not a number",
        ),
        (
            {"kornli/xnli.dev.ko.tsv": "sentence1\tsentence2\tgold_label\n전제\t가설\tmaybe\n"},
            "kornli",
            "xnli.dev.ko.tsv line 2: gold_label 'maybe' is not one of",
        ),
        (
            {"kornli/xnli.dev.ko.tsv": "sentence1\tsentence2\tgold_label\n전제만 있다\n"},
            "kornli",
            "xnli.dev.ko.tsv line 2: 1 tab-separated columns, expected 3",
        ),
        (
            {"klue_sts/klue-sts-v1.1_dev.json": '[{"guid": "x", "sentence1": "가", "sentence2": "나"'},
            "klue_sts",
            "klue-sts-v1.1_dev.json is not valid JSON",
        ),
        (
            {"klue_sts/klue-sts-v1.1_dev.json": json.dumps([{"guid": "x", "sentence1": "가", "sentence2": "나"}])},
            "klue_sts",
            "klue-sts-v1.1_dev.json item 0: expected guid, sentence1, sentence2 and numeric labels",
        ),
        ({"korean_wikipedia_corpus/corpus.zip": "not a zip"}, "korean_wikipedia_corpus", "corpus.zip is not a zip"),
    ],
)
def test_malformed_source_rows_are_named_and_nothing_is_prepared(tmp_path, files, datasets, message):
    result = prepare(tmp_path, files, datasets)
    assert_failed_cleanly(result, "error: ")
    assert message in result.stderr.splitlines()[-1]
    assert not (tmp_path / "tfds" / datasets).exists()


@pytest.mark.parametrize(
    ("checkpoint_bytes", "message"),
    [
        (b"", "is not a readable TensorFlow checkpoint"),
        (b"\x00garbage" * 10, "is not a readable TensorFlow checkpoint"),
    ],
)
def test_empty_or_corrupt_checkpoint(prepared_data_dir, tmp_path, checkpoint_bytes, message):
    (tmp_path / "model.ckpt.index").write_bytes(checkpoint_bytes)
    (tmp_path / "model.ckpt.data-00000-of-00001").write_bytes(checkpoint_bytes)
    result = run_training(
        "train_supervised.py",
        prepared_data_dir[0],
        tmp_path,
        {"pretrained_weight": tmp_path / "model.ckpt", "train_splits": "xnli_dev", "batch_size": 8},
    )
    assert_failed_cleanly(result, "error: ")
    assert message in result.stderr.splitlines()[-1]
    assert not (tmp_path / "runs").exists()


def test_malformed_config_for_training(prepared_data_dir, tmp_path):
    (tmp_path / "bert_config.json").write_text('{"vocab_size": 16424, "hidden_size": 256}')
    result = run_training(
        "train_unsupervised.py", prepared_data_dir[0], tmp_path, {"config": tmp_path / "bert_config.json"}
    )
    assert_failed_cleanly(result, "error: ")
    assert "config is missing num_hidden_layers" in result.stderr.splitlines()[-1]
    assert not (tmp_path / "runs").exists()


ODD_SENTENCES = ["", "   ", "😀🎉👍🏽", "가" * 10_000, "\u200b\u3000"]


def test_odd_sentences_are_scored_not_refused(tmp_path):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    rows = [GOOD_STS_ROW] + [
        f"main-captions\tMSRvid\t2012test\t{i:04d}\t{i % 5}.0\t{sentence}\t{GOOD_STS_ROW.split(chr(9))[5]}"
        for i, sentence in enumerate(ODD_SENTENCES, start=2)
    ]
    # Empty sentences would break the builder's own row split (strip() drops trailing tabs): odd text leads.
    assert prepare(tmp_path, {"korsts/sts-dev.tsv": "\n".join([KORSTS_HEADER, *rows]) + "\n"}, "korsts").returncode == 0
    result = run_script(
        "evaluate.py", f"--config={TINY['config']}", f"--checkpoint={TINY['pretrained_weight']}",
        f"--vocab_path={VOCAB}", f"--data_dir={tmp_path / 'tfds'}", "--datasets=korsts:dev",
        f"--results_json={tmp_path / 'results.json'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads((tmp_path / "results.json").read_text())["korsts:dev"]
    assert scores["n"] == 1 + len(ODD_SENTENCES)
    assert all(isinstance(value, float) for key, value in scores.items() if key != "n")
