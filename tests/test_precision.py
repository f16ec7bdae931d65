"""Encoding in bfloat16 (evaluate.py, export.py, report.py --precision): where it is native and refused where it is
not, what each records, and how far its scores are from float32's (a random BERT here; the tiny checkpoint on
KorSTS dev in the slow tier)."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import TINY, assert_failed_cleanly, command_line, needs_native_bfloat16, require_shared

import distribution
import errors
import evaluation
import export
import model
import model_files
import saved_model
import tokenization

SENTENCES = ["안전모를 가진 한 남자가 춤을 추고 있다.", "한 남자가 춤을 추고 있다.", "KR-BERT 문장 임베딩", "가" * 100]


@pytest.mark.parametrize(
    ("cpuinfo", "flags"),
    [
        ("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n\nflags\t\t: other\n", {"fpu", "sse", "avx512f",
                                                                                          "avx512_bf16"}),
        ("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n", {"fp", "asimd", "bf16", "i8mm"}),
        ("processor\t: 0\n", set()),
        (None, set()),  # no /proc/cpuinfo (not Linux)
    ],
)  # fmt: skip
def test_cpu_flags_are_read_from_x86_and_arm_cpuinfo(tmp_path, cpuinfo, flags):
    path = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        path.write_text(cpuinfo)
    assert distribution.cpu_flags(str(path)) == flags


def test_bfloat16_is_refused_with_one_line_where_it_is_not_native(monkeypatch, random_bert, tmp_path):
    monkeypatch.setattr(distribution, "cpu_flags", lambda cpuinfo="/proc/cpuinfo": {"fpu", "avx2"})
    assert distribution.bfloat16_device() is None
    message = "precision bfloat16: this machine has no native bfloat16"
    with pytest.raises(errors.InputError, match=message):
        evaluation.evaluate(["korsts:dev"], checkpoint=str(random_bert["pretrained_weight"]), precision="bfloat16")
    with pytest.raises(errors.InputError, match=message):
        export.export(str(random_bert["pretrained_weight"]), str(tmp_path / "model"), precision="bfloat16")
    assert not (tmp_path / "model").exists()
    assert distribution.encoding_policy("float32") == "float32"
    monkeypatch.setattr(distribution, "cpu_flags", lambda cpuinfo="/proc/cpuinfo": {"avx512_bf16"})
    assert distribution.bfloat16_device() == "CPU (avx512_bf16)"
    assert distribution.encoding_policy("bfloat16") == "mixed_bfloat16"


def test_evaluate_py_refuses_bfloat16_where_it_is_not_native(run_in_fork, random_bert, self_made_data_dir, tmp_path):
    options = {name: random_bert[name] for name in ("config", "vocab_path")}
    arguments = command_line("evaluate.py", {**options, "checkpoint": random_bert["pretrained_weight"],
                                             "data_dir": self_made_data_dir, "datasets": "korsts:dev",
                                             "precision": "bfloat16", "results_json": tmp_path / "r.json"})  # fmt: skip
    no_bfloat16 = (
        "import distribution, errors, evaluate\n"
        "distribution.cpu_flags = lambda cpuinfo='/proc/cpuinfo': set()\n"
        "errors.run(evaluate.main)\n"
    )
    result = run_in_fork(*arguments, code=no_bfloat16)
    assert_failed_cleanly(result, "error: precision bfloat16: this machine has no native bfloat16")
    assert not (tmp_path / "r.json").exists()


def test_a_hugging_face_export_has_no_precision_of_its_own(random_bert, tmp_path):
    with pytest.raises(errors.InputError, match="precision bfloat16 is the SavedModel's: a Hugging Face directory"):
        export.export(str(random_bert["pretrained_weight"]), str(tmp_path / "hf"), "huggingface", precision="bfloat16")
    assert not (tmp_path / "hf").exists()


def embeddings(random_bert, precision):
    """The random BERT's float32 [CLS] embeddings of SENTENCES, its encoder computing in `precision`, in a graph as
    evaluation runs it (grappler's fusions round bfloat16 otherwise than op by op)."""
    found = model_files.find(str(random_bert["pretrained_weight"]), random_bert["config"], random_bert["vocab_path"])
    tokenizer, encoder, _ = model_files.load_encoder(found, 64, distribution.encoding_policy(precision))
    embed = tf.function(model.sentence_embedder(encoder, "cls"))
    return embed(tokenizer.trimmed(tf.constant(SENTENCES))).numpy()


@needs_native_bfloat16
def test_bfloat16_encoding_is_float32_out_and_close_to_float32(random_bert, self_made_data_dir, tmp_path):
    in_float32, in_bfloat16 = embeddings(random_bert, "float32"), embeddings(random_bert, "bfloat16")
    assert in_bfloat16.dtype == np.float32 and in_bfloat16.shape == in_float32.shape
    assert not np.array_equal(in_bfloat16, in_float32)  # computed in bfloat16 indeed
    cosine = np.sum(in_bfloat16 * in_float32, axis=1) / np.linalg.norm(in_bfloat16, axis=1)
    cosine /= np.linalg.norm(in_float32, axis=1)
    assert cosine.min() > 0.999, cosine

    # export.py's SavedModel computes in the precision it was exported in, and says which.
    export.export(
        str(random_bert["pretrained_weight"]), str(tmp_path / "model"), config_path=str(random_bert["config"]),
        vocab_path=str(random_bert["vocab_path"]), precision="bfloat16",
    )  # fmt: skip
    embed = saved_model.load_saved_embedder(str(tmp_path / "model"))
    assert embed.precision == "bfloat16"
    normalised = in_bfloat16 / np.linalg.norm(in_bfloat16, axis=1, keepdims=True)
    np.testing.assert_allclose(embed(tf.constant(SENTENCES)).numpy(), normalised, atol=1e-6)

    # Each result records its precision: the SavedModel's, or the one asked for.
    saved = str(tmp_path / "model")
    from_saved = evaluation.evaluate(["korsts:dev"], saved_model_dir=saved, data_dir=self_made_data_dir)
    assert from_saved["korsts:dev"]["precision"] == "bfloat16"
    from_checkpoint = evaluation.evaluate(
        ["korsts:dev"], checkpoint=str(random_bert["pretrained_weight"]), config_path=str(random_bert["config"]),
        vocab_path=str(random_bert["vocab_path"]), data_dir=self_made_data_dir, max_sequence_length=64,
    )  # fmt: skip
    assert from_checkpoint["korsts:dev"]["precision"] == "float32"


def test_a_savedmodel_exported_before_precision_was_recorded_is_float32(random_bert, tmp_path):
    encoder = model.BertEncoder(model.BertConfig.from_json_file(random_bert["config"]), dtype="float32")
    tokenizer = tokenization.KrBertTokenizer(str(random_bert["vocab_path"]), 16)
    embedder = model.sentence_embedder(encoder, "cls")
    module = saved_model.SentenceEmbedder(tokenizer, embedder, "float32")
    del module.precision  # as an older export.py wrote it
    tf.saved_model.save(module, str(tmp_path / "old"), signatures={"serving_default": module.serve})
    assert saved_model.load_saved_embedder(str(tmp_path / "old")).precision == "float32"


@pytest.mark.slow
@needs_native_bfloat16
def test_the_tiny_checkpoint_scores_in_bfloat16_within_half_a_point_of_float32(prepared_data_dir):
    require_shared()
    scores = {
        precision: evaluation.evaluate(
            ["korsts:dev", "klue_sts:dev"], checkpoint=str(TINY["pretrained_weight"]), config_path=str(TINY["config"]),
            vocab_path=str(TINY["vocab_path"]), data_dir=prepared_data_dir[0], max_sequence_length=64,
            precision=precision,
        )
        for precision in ("float32", "bfloat16")
    }  # fmt: skip
    korsts = {precision: scores[precision]["korsts:dev"]["spearman"] for precision in scores}
    klue = {precision: scores[precision]["klue_sts:dev"]["pearson"] for precision in scores}
    assert korsts["bfloat16"] != korsts["float32"]
    assert abs(korsts["bfloat16"] - korsts["float32"]) < 0.005, korsts
    assert abs(klue["bfloat16"] - klue["float32"]) < 0.005, klue
