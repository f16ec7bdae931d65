"""The SimCSE objective against numpy, independent dropout masks, the learning-rate schedule, precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_model import SMALL, small_inputs

import model
import training


def numpy_cross_entropy(logits):
    """Mean cross-entropy with target i for row i, in float64."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -np.mean(log_probabilities[np.arange(len(logits)), np.arange(len(logits))])


def numpy_simcse_logits(anchors, *candidate_views, temperature):
    def unit(x):
        x = np.asarray(x, np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    candidates = np.concatenate([unit(view) for view in candidate_views])  # [batch * views, hidden]
    return unit(anchors) @ candidates.T / temperature


def test_contrastive_loss_is_cross_entropy_with_diagonal_targets():
    logits = np.random.default_rng(0).normal(size=(5, 10)) * 5
    assert float(model.contrastive_loss(tf.constant(logits, tf.float32))) == pytest.approx(
        numpy_cross_entropy(logits), rel=1e-6
    )


def shifted_inputs(inputs, shift):
    ids = np.where(inputs["input_mask"] > 0, (inputs["input_word_ids"] + shift) % SMALL["vocab_size"], 0)
    return {**inputs, "input_word_ids": ids.astype(np.int32)}


def test_supervised_logits_are_anchors_against_positives_then_hard_negatives():
    encoder = model.BertEncoder(model.BertConfig.from_dict(SMALL))
    simcse = model.SimCSE(encoder, temperature=0.05)
    views = (small_inputs(), shifted_inputs(small_inputs(), 7), shifted_inputs(small_inputs(), 13))
    logits = simcse(views, training=False).numpy()
    assert logits.shape == (3, 6) and logits.dtype == np.float32
    pooled = [encoder(view, training=False)["pooled_output"].numpy() for view in views]
    expected = numpy_simcse_logits(*pooled, temperature=0.05)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-4)
    loss = model.contrastive_loss(tf.constant(logits))
    assert float(loss) == pytest.approx(numpy_cross_entropy(expected), rel=1e-5)


def test_unsupervised_views_draw_independent_dropout_masks():
    encoder = model.BertEncoder(model.BertConfig.from_dict(SMALL))
    simcse = model.SimCSE(encoder, temperature=0.05)
    inputs = small_inputs()
    # Without dropout both views are the same sentence: cosine 1 on the diagonal.
    np.testing.assert_allclose(np.diag(simcse(inputs, training=False)), 1 / 0.05, rtol=1e-5)
    # In training, each pass draws its own masks: the two views of a sentence differ.
    diagonal = np.diag(simcse(inputs, training=True).numpy())
    assert (diagonal < 1 / 0.05 - 1e-3).all()


def test_mixed_precision_logits_are_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        encoder = model.BertEncoder(model.BertConfig.from_dict(SMALL))
        assert encoder(small_inputs())["sequence_output"].dtype == tf.bfloat16
        assert model.SimCSE(encoder, temperature=0.05)(small_inputs()).dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_linear_warmup_then_linear_decay():
    schedule = model.LinearWarmupDecay(3e-5, warmup_steps=1250, total_steps=25000)
    values = [float(schedule(step)) for step in (0, 625, 1250, 13125, 25000, 26000)]
    np.testing.assert_allclose(values, [0.0, 1.5e-5, 3e-5, 1.5e-5, 0.0, 0.0], atol=1e-12)


def test_precision_policy_on_cpu():
    try:
        training.set_precision(False)
        assert keras.mixed_precision.global_policy().name == "float32"
        training.set_precision(True)
        expected = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
        assert keras.mixed_precision.global_policy().name == expected
    finally:
        keras.mixed_precision.set_global_policy("float32")
