"""STS evaluation shared by evaluate.py and the training scripts: embed both sentences of every pair, score
their cosine similarity against the gold score with Pearson and Spearman correlation."""

import keras
import numpy as np
import scipy.stats
import tensorflow as tf

import data


def parse_sets(specs):
    """["korsts:dev", ...] -> [("korsts", "dev"), ...]."""
    sets = []
    for spec in specs:
        name, _, split = spec.partition(":")
        if not name or not split:
            raise data.DataError(f"'{spec}' is not DATASET:SPLIT (e.g. korsts:dev)")
        sets.append((name, split))
    return sets


class StsEvaluator:
    """Scores a sentence embedder on STS sets.

    Args:
        sets: {"korsts:dev": tf.data.Dataset of {"sentence1", "sentence2", "score"}, ...} (`data.sts_pairs`).
        tokenizer: a `data.KrBertTokenizer`.
        batch_size: sentence pairs per batch.

    Example:
        >>> evaluator = StsEvaluator({"korsts:dev": data.sts_pairs("korsts", "dev")}, tokenizer, batch_size=64)
        >>> evaluator(model.sentence_embedder(encoder, "cls"))
        {'korsts:dev': {'n': 1500, 'pearson': 0.41..., 'spearman': 0.37...}}
    """

    def __init__(self, sets, tokenizer, batch_size):
        self.batches = {}
        self.gold = {}
        for key, pairs in sets.items():
            pairs = pairs.batch(batch_size)
            # Tokenized once and kept: evaluation repeats during training.
            self.batches[key] = pairs.map(
                lambda pair: (tokenizer(pair["sentence1"]), tokenizer(pair["sentence2"])),
                num_parallel_calls=tf.data.AUTOTUNE,
            ).cache()
            self.gold[key] = np.concatenate([batch["score"] for batch in pairs.as_numpy_iterator()])

    def __call__(self, embedder, verbose=False):
        """embedder: a Keras model from tokenizer features to [batch, hidden]. Returns {set: {n, pearson, spearman}}."""
        encode = tf.function(lambda features: embedder(features, training=False), reduce_retracing=True)
        results = {}
        for key, batches in self.batches.items():
            progress = keras.utils.Progbar(len(self.gold[key]), verbose=int(verbose), unit_name="pair")
            similarities = []
            for features1, features2 in batches:
                similarity = cosine_similarity(encode(features1), encode(features2))  # [batch]
                similarities.append(similarity)
                progress.add(len(similarity))
            predicted = np.concatenate(similarities)
            gold = self.gold[key]
            results[key] = {
                "n": len(gold),
                "pearson": float(scipy.stats.pearsonr(predicted, gold).statistic),
                "spearman": float(scipy.stats.spearmanr(predicted, gold).statistic),
            }
        return results


def cosine_similarity(embeddings1, embeddings2):
    """Row-wise cosine similarity of two [batch, hidden] tensors, computed in float64: [batch]."""
    a = np.asarray(embeddings1, np.float64)
    b = np.asarray(embeddings2, np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
