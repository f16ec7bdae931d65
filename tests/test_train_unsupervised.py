"""train_unsupervised.py end to end from the tiny MLM checkpoint on the sample corpus; bad input; defaults."""

import zipfile

import pytest
from conftest import (
    TINY,
    assert_failed_cleanly,
    eval_history,
    evaluate_korsts_dev,
    flag_defaults,
    run_script,
    run_training,
)

# A short CPU run: smaller batches and sentences than the recipe, a higher learning rate to move in 40 steps.
SHORT_RUN = {
    "mixed_precision": True,
    "batch_size": 32,
    "max_sequence_length": 32,
    "learning_rate": 1e-4,
    "total_steps": 40,
    "evaluation_frequency": 20,
}


def test_unsupervised_simcse_spreads_embeddings_and_best_checkpoint_scores_as_recorded(prepared_data_dir, tmp_path):
    data_dir = prepared_data_dir[0]
    result = run_training("train_unsupervised.py", data_dir, tmp_path, SHORT_RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "precision policy: mixed_bfloat16" in result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    history = eval_history(run_dir)
    assert [record["step"] for record in history] == [20, 40]
    for record in history:
        assert set(record) == {
            "step", "loss", "learning_rate", "klue_sts_pearson", "korsts_spearman",
            "korsts_alignment", "korsts_uniformity", "klue_sts_alignment", "klue_sts_uniformity",
        }  # fmt: skip
    assert list((tmp_path / "logs" / run_dir.name).glob("events.out.tfevents.*"))
    for name in ("step-20", "step-40"):
        assert (run_dir / f"{name}.index").exists()
    assert (run_dir / "best" / "checkpoint").exists()

    before = evaluate_korsts_dev(data_dir, TINY["pretrained_weight"], tmp_path / "before.json", SHORT_RUN)
    after = history[-1]
    # Measured here: KorSTS dev uniformity -0.23 -> -1.35 in 40 steps, alignment 0.02 -> 0.21.
    assert after["korsts_uniformity"] < before["uniformity"] - 0.6
    assert after["korsts_alignment"] < 0.5

    # The saved best checkpoint scores, in evaluate.py's float32, what training recorded.
    best = evaluate_korsts_dev(data_dir, run_dir / "best", tmp_path / "best.json", SHORT_RUN)
    assert best["spearman"] == pytest.approx(max(r["korsts_spearman"] for r in history), abs=1e-4)


def make_corpus_without_sentences(source_dir):
    corpus = source_dir / "korean_wikipedia_corpus"
    corpus.mkdir(parents=True)
    with zipfile.ZipFile(corpus / "corpus.zip", "w") as archive:
        archive.writestr("text-preprocessed/AA/wiki_00", "제목만 있는 문서\n\n")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pretrained_weight": "missing/model.ckpt"}, "error: checkpoint not found: missing/model.ckpt"),
        ({"vocab_path": "missing_vocab.txt"}, "error: vocab file not found: missing_vocab.txt"),
        ({"batch_size": 1}, "error: --batch_size must be at least 2"),
        ({"data_dir": "unprepared"}, "error: korean_wikipedia_corpus is not prepared in"),
        ({"data_dir": "no sentences"}, "error: korean_wikipedia_corpus:train has no sentences"),
    ],
)
def test_bad_input_leaves_no_run_directory(prepared_data_dir, tmp_path, change, message):
    data_dir = prepared_data_dir[0]
    if change.get("data_dir") == "unprepared":
        change = {"data_dir": tmp_path / "empty_tfds"}
    elif change.get("data_dir") == "no sentences":
        make_corpus_without_sentences(tmp_path / "source")
        prepared = run_script(
            "data.py", "prepare", f"--source_dir={tmp_path / 'source'}", f"--data_dir={tmp_path / 'tfds'}",
            "--datasets=korean_wikipedia_corpus",
        )  # fmt: skip
        assert prepared.returncode == 0, prepared.stderr[-2000:]
        change = {"data_dir": tmp_path / "tfds"}
    result = run_training("train_unsupervised.py", data_dir, tmp_path, {**SHORT_RUN, **change})
    assert_failed_cleanly(result, message)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "logs").exists()


RECIPE = {
    "config": "configs/char_bert_base.json",
    "pretrained_weight": "kr-bert-char/model.ckpt-2000000",
    "vocab_path": "kr-bert-char/vocab_char_16424.txt",
    "mixed_precision": False,
    "batch_size": 64,
    "total_steps": 25000,
    "warmup_ratio": 0.05,
    "learning_rate": 3e-5,
    "temperature": 0.05,
    "max_sequence_length": 64,
    "evaluation_frequency": 250,
}


def test_defaults_are_the_original_recipe():
    assert flag_defaults("train_unsupervised", RECIPE) == RECIPE
