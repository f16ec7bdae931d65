"""The encoder against an independent numpy BERT, checkpoint loading and saving, config round trips."""

import json

import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO, SMALL, google_bert_weights, small_inputs, write_tf1_checkpoint
from reference_bert import bert

import errors
import google_checkpoint
import model
import tokenization


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """(prefix, weights) of SMALL's random weights as a Google-format checkpoint, alone in its directory; read only."""
    weights = google_bert_weights(SMALL)
    return write_tf1_checkpoint(tmp_path_factory.mktemp("small_checkpoint") / "model.ckpt-2000000", weights), weights


def test_matches_reference_bert_from_google_checkpoint(small_checkpoint):
    prefix, weights = small_checkpoint
    encoder = model.BertEncoder(model.BertConfig.from_dict(SMALL), dtype="float32")
    google_checkpoint.load_checkpoint(encoder, prefix)
    inputs = small_inputs()
    outputs = encoder(inputs, training=False)
    sequence, pooled = bert(weights, 2, 4, inputs["input_word_ids"], inputs["input_mask"], inputs["input_type_ids"])
    np.testing.assert_allclose(outputs["sequence_output"].numpy(), sequence, atol=1e-4, rtol=0)
    np.testing.assert_allclose(outputs["pooled_output"].numpy(), pooled, atol=1e-4, rtol=0)
    # The reference's constants matter: Keras' default LayerNorm epsilon or exact GELU would not pass at 1e-4.
    assert np.abs(sequence).max() > 1.0


def test_dropout_draws_a_new_mask_per_call(small_checkpoint):
    encoder = model.BertEncoder(model.BertConfig.from_dict(SMALL))
    google_checkpoint.load_checkpoint(encoder, small_checkpoint[0])
    inputs = small_inputs()
    first = encoder(inputs, training=True)["pooled_output"].numpy()
    second = encoder(inputs, training=True)["pooled_output"].numpy()
    assert np.abs(first - second).max() > 1e-3
    np.testing.assert_array_equal(
        encoder(inputs, training=False)["pooled_output"], encoder(inputs, training=False)["pooled_output"]
    )


def test_saved_checkpoint_is_google_format_and_loads_back(small_checkpoint, tmp_path):
    config = model.BertConfig.from_dict(SMALL)
    encoder = model.BertEncoder(config)
    google_checkpoint.load_checkpoint(encoder, small_checkpoint[0])
    prefix = google_checkpoint.save_checkpoint(encoder, str(tmp_path / "ours" / "best"))
    names = set(tf.train.load_checkpoint(prefix).get_variable_to_shape_map())
    assert names == set(encoder.checkpoint_variables())
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == ["best.data-00000-of-00001", "best.index"]
    reloaded = model.BertEncoder(config)
    google_checkpoint.load_checkpoint(reloaded, prefix)
    inputs = small_inputs()
    np.testing.assert_array_equal(reloaded(inputs)["sequence_output"], encoder(inputs)["sequence_output"])


def test_checkpoint_directory_resolves_to_latest(small_checkpoint):
    prefix = small_checkpoint[0]
    assert google_checkpoint.resolve_checkpoint(str(prefix).rsplit("/", 1)[0]) == prefix


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"vocab_size": 61}, "has bert/embeddings/word_embeddings of shape [60, 32], the config makes it [61, 32]"),
        ({"num_hidden_layers": 3}, "has no variable bert/encoder/layer_2/attention/self/query/kernel"),
    ],
)
def test_checkpoint_that_does_not_fit_the_config(small_checkpoint, change, message):
    encoder = model.BertEncoder(model.BertConfig.from_dict({**SMALL, **change}))
    with pytest.raises(errors.CheckpointError, match=message.replace("[", r"\[").replace("]", r"\]")):
        google_checkpoint.load_checkpoint(encoder, small_checkpoint[0])


def test_path_that_is_not_a_checkpoint(tmp_path):
    encoder = model.BertEncoder(model.BertConfig.from_dict(SMALL))
    with pytest.raises(errors.CheckpointError, match="checkpoint not found"):
        google_checkpoint.load_checkpoint(encoder, str(tmp_path / "model.ckpt-1"))
    with pytest.raises(errors.CheckpointError, match="no TensorFlow checkpoint"):
        google_checkpoint.load_checkpoint(encoder, str(tmp_path))
    for name, contents in {"corrupt": b"not a checkpoint index", "empty": b""}.items():
        (tmp_path / f"{name}.index").write_bytes(contents)
        (tmp_path / f"{name}.data-00000-of-00001").write_bytes(contents)
        with pytest.raises(errors.CheckpointError, match="not a readable TensorFlow checkpoint"):
            google_checkpoint.load_checkpoint(encoder, str(tmp_path / name))


@pytest.mark.parametrize("changes", [{}, {"num_hidden_layers": 3, "intermediate_size": 20, "type_vocab_size": 1}])
def test_checkpoint_shapes_are_the_built_encoders(changes):
    """Files are checked against checkpoint_shapes before a model is built: it must say what building makes."""
    config = model.BertConfig.from_dict({**SMALL, **changes})
    built = {name: tuple(variable.shape) for name, variable in model.BertEncoder(config).checkpoint_variables().items()}
    assert google_checkpoint.checkpoint_shapes(config) == built
    assert config.parameter_count() == sum(int(np.prod(shape)) for shape in built.values())


def test_kr_bert_char_config_round_trips(tmp_path):
    config = model.BertConfig.from_json_file(REPO / "configs" / "char_bert_base.json")
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (16424, 768, 12)
    config.to_json_file(tmp_path / "config.json")
    assert model.BertConfig.from_json_file(tmp_path / "config.json") == config
    encoder = model.BertEncoder(model.BertConfig.from_dict(SMALL))
    rebuilt = model.BertEncoder.from_config(encoder.get_config())
    assert rebuilt.config == encoder.config
    assert len(rebuilt.weights) == len(encoder.weights) == len(encoder.checkpoint_variables())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON"),
        (json.dumps({k: v for k, v in SMALL.items() if k != "hidden_size"}), "missing hidden_size"),
        (json.dumps({**SMALL, "hidden_size": "32"}), "'hidden_size' must be int"),
        (json.dumps({**SMALL, "hidden_act": "swish"}), "hidden_act 'swish' is not one of"),
        (json.dumps({**SMALL, "num_attention_heads": 5}), "not a multiple of"),
        (json.dumps([1, 2]), "must be a JSON object"),
        (json.dumps({**SMALL, "num_attention_heads": 0}), "'num_attention_heads' must be at least 1, got 0"),
        (json.dumps({**SMALL, "hidden_dropout_prob": 1.0}), "'hidden_dropout_prob' must be in \\[0, 1\\), got 1.0"),
        (json.dumps({**SMALL, "layer_norm_eps": 0}), "'layer_norm_eps' must be positive and finite, got 0"),
        (json.dumps({**SMALL, "num_hidden_layers": 257}), "num_hidden_layers 257 is more than 256"),
        (json.dumps({**SMALL, "vocab_size": 2**40}), "parameters: in float32, more than this machine's"),
        ('{"layer_norm_eps": NaN}', "is not valid JSON: it holds NaN, which is not a JSON number"),
        ('{"vocab_size": 1e999}', "is not valid JSON: it holds 1e999, beyond the range of a float"),
        ("[" * 65 + "]" * 65, "is not valid JSON: it nests deeper than 64 levels"),
    ],
)
def test_malformed_config(tmp_path, text, message):
    path = tmp_path / "bert_config.json"
    path.write_text(text)
    with pytest.raises(errors.ConfigError, match=message):
        model.BertConfig.from_json_file(path)


def test_pooling():
    outputs = {
        "sequence_output": tf.constant([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]]),
        "pooled_output": tf.constant([[0.5, 0.5]]),
    }
    mask = tf.constant([[1, 1, 0]])
    np.testing.assert_allclose(model.pool(outputs, mask, "cls"), [[1.0, 2.0]])
    np.testing.assert_allclose(model.pool(outputs, mask, "pooled"), [[0.5, 0.5]])
    np.testing.assert_allclose(model.pool(outputs, mask, "mean"), [[2.0, 3.0]])


def test_trimmed_padding_gives_the_same_embeddings():
    config = model.BertConfig.from_dict(SMALL)
    encoder = model.BertEncoder(config)
    ids = np.zeros([2, 16], np.int32)
    ids[0, :5] = [2, 11, 12, 13, 3]  # 5 tokens, then padding to max_len 16
    ids[1, :3] = [2, 14, 3]
    padded = {"input_word_ids": ids, "input_mask": (ids > 0).astype(np.int32), "input_type_ids": np.zeros_like(ids)}
    trimmed = tokenization.trim_padding({name: tf.constant(values) for name, values in padded.items()})
    assert trimmed["input_word_ids"].shape == (2, tokenization.TRIMMED_LENGTH_MULTIPLE)
    full, short = encoder(padded), encoder(trimmed)
    np.testing.assert_allclose(short["pooled_output"], full["pooled_output"], atol=1e-6)
    np.testing.assert_allclose(
        short["sequence_output"], full["sequence_output"][:, : tokenization.TRIMMED_LENGTH_MULTIPLE], atol=1e-5
    )
    # A batch whose longest sentence fills max_len keeps every column.
    ids[1, :] = 7
    untouched = tokenization.trim_padding(
        {"input_word_ids": ids, "input_mask": np.ones_like(ids), "input_type_ids": ids}
    )
    assert untouched["input_word_ids"].shape == (2, 16)
