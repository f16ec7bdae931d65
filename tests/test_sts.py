"""Alignment and uniformity against their definitions, computed pair by pair."""

import itertools

import numpy as np
import pytest
import scipy.stats
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


def lookup_embedder(vectors, sentences):
    """A stand-in embedder: strings -> their rows of `vectors`."""
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(sentences, list(range(len(sentences)))), -1)
    return lambda text: tf.gather(tf.constant(vectors, tf.float32), table.lookup(text))


def toy_pairs(first, second, scores):
    return tf.data.Dataset.from_tensor_slices({"sentence1": first, "sentence2": second, "score": scores})


def test_evaluator_scores_each_distinct_sentence_once():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # sentences "a", "bb", "c"
    pairs = toy_pairs(["a", "bb", "a"], ["bb", "c", "c"], [1.0, 2.0, 5.0])
    # The tokenizer passes strings through; the embedder looks their vector up.
    evaluator = sts.StsEvaluator({"toy": pairs}, lambda text: text, lookup_embedder(vectors, ["a", "bb", "c"]), 2)
    scores = evaluator()["toy"]
    assert scores["n"] == 3
    # Three distinct sentences, not the six sentence slots of the pairs.
    assert scores["uniformity"] == pytest.approx(sts.uniformity(vectors), rel=1e-12)
    # One positive pair (score >= 4): "a" and "c", opposite unit vectors, squared distance 4.
    assert scores["alignment"] == pytest.approx(4.0)
    assert scores["pearson"] == pytest.approx(np.corrcoef([0.0, 0.0, -1.0], [1.0, 2.0, 5.0])[0, 1])


def test_evaluator_traces_its_embedder_once_for_every_batch_shape():
    calls = []

    def embedder(features):
        calls.append(features.shape)  # runs when traced, not when the traced graph runs
        lengths = tf.cast(tf.strings.length(features), tf.float32)  # [batch]
        return tf.stack([lengths, tf.ones_like(lengths)], axis=1)  # [batch, 2]

    sentences = ["가" * n for n in range(1, 12)]
    pairs = toy_pairs(sentences, sentences[::-1], [float(n % 5) for n in range(11)])
    evaluator = sts.StsEvaluator({"toy": pairs, "again": pairs.take(5)}, lambda text: text, embedder, 4)
    for _ in range(3):
        evaluator()
    assert len(calls) == 1 and evaluator.encode.experimental_get_tracing_count() == 1


def test_undefined_metrics_are_none():
    # Every sentence has the same embedding: the cosine similarity is constant, its correlations undefined;
    # no pair has gold >= 4, so there are no positives to align.
    pairs = toy_pairs(["a", "b", "c"], ["d", "e", "f"], [1.0, 2.0, 3.0])
    evaluator = sts.StsEvaluator({"toy": pairs}, lambda text: text, lambda text: tf.ones([tf.size(text), 2]), 2)
    with pytest.warns(scipy.stats.ConstantInputWarning):
        scores = evaluator()["toy"]
    assert scores["pearson"] is None and scores["spearman"] is None and scores["alignment"] is None
    assert scores["uniformity"] == pytest.approx(0.0)  # all at distance 0: log(mean(exp(0))) = 0
