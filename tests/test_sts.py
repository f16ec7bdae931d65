"""Alignment and uniformity against their definitions, computed pair by pair."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

import sts


def unit_rows(count, seed):
    x = np.random.default_rng(seed).normal(size=(count, 8))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_alignment_is_mean_squared_distance_of_positive_pairs():
    a, b = unit_rows(6, 0), unit_rows(6, 1)
    gold = np.array([4.0, 3.99, 5.0, 0.0, 4.5, 1.0])
    expected = np.mean([np.sum((a[i] - b[i]) ** 2) for i in (0, 2, 4)])
    assert sts.alignment(a, b, gold) == pytest.approx(expected, rel=1e-12)


def test_uniformity_is_log_mean_gaussian_potential_over_distinct_pairs():
    x = unit_rows(7, 2)
    potentials = [np.exp(-2 * np.sum((x[i] - x[j]) ** 2)) for i, j in itertools.combinations(range(7), 2)]
    assert sts.uniformity(x, rows_per_block=3) == pytest.approx(np.log(np.mean(potentials)), rel=1e-12)


def test_evaluator_scores_each_distinct_sentence_once():
    vectors = tf.constant([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # sentences "a", "b", "c"
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(["a", "b", "c"], [0, 1, 2]), -1)
    pairs = tf.data.Dataset.from_tensor_slices(
        {"sentence1": ["a", "b", "a"], "sentence2": ["b", "c", "c"], "score": [1.0, 2.0, 5.0]}
    )
    # Stand-ins: the tokenizer passes strings through, the embedder looks their vector up.
    evaluator = sts.StsEvaluator({"toy": pairs}, tokenizer=lambda text: text, batch_size=2)
    scores = evaluator(lambda text: tf.gather(vectors, table.lookup(text)))["toy"]
    assert scores["n"] == 3
    # Three distinct sentences, not the six sentence slots of the pairs.
    assert scores["uniformity"] == pytest.approx(sts.uniformity(vectors.numpy().astype(np.float64)), rel=1e-12)
    # One positive pair (score >= 4): "a" and "c", opposite unit vectors, squared distance 4.
    assert scores["alignment"] == pytest.approx(4.0)
    assert scores["pearson"] == pytest.approx(np.corrcoef([0.0, 0.0, -1.0], [1.0, 2.0, 5.0])[0, 1])
