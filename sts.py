"""STS evaluation shared by evaluate.py and the training scripts: embed both sentences of every pair, score
their cosine similarity against the gold score with Pearson and Spearman correlation, and measure the
embeddings' alignment and uniformity (Wang & Isola, 2020), the two diagnostics of the SimCSE paper."""

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
    """Scores a sentence embedder on STS sets: Pearson and Spearman of the cosine similarity against the gold
    score, and the paper's alignment and uniformity of the L2-normalised embeddings.

    Args:
        sets: {"korsts:dev": tf.data.Dataset of {"sentence1", "sentence2", "score"}, ...} (`data.sts_pairs`).
        tokenizer: a `data.KrBertTokenizer`.
        batch_size: sentence pairs per batch.

    Example:
        >>> evaluator = StsEvaluator({"korsts:dev": data.sts_pairs("korsts", "dev")}, tokenizer, batch_size=64)
        >>> evaluator(model.sentence_embedder(encoder, "cls"))
        {'korsts:dev': {'n': 1500, 'pearson': 0.32..., 'spearman': 0.37..., 'alignment': ..., 'uniformity': ...}}
    """

    def __init__(self, sets, tokenizer, batch_size):
        self.batches = {}
        self.gold = {}
        self.sentences = {}
        for key, pairs in sets.items():
            pairs = pairs.batch(batch_size)
            # Tokenized once and kept: evaluation repeats during training.
            self.batches[key] = pairs.map(
                lambda pair: (tokenizer(pair["sentence1"]), tokenizer(pair["sentence2"])),
                num_parallel_calls=tf.data.AUTOTUNE,
            ).cache()
            columns = list(pairs.as_numpy_iterator())
            self.gold[key] = np.concatenate([batch["score"] for batch in columns]).astype(np.float64)
            self.sentences[key] = tuple(np.concatenate([b[f"sentence{i}"] for b in columns]) for i in (1, 2))

    def __call__(self, embedder, verbose=False):
        """embedder: from tokenizer features to [batch, hidden] (a Keras model, run in inference mode).

        Returns {set: {n, pearson, spearman, alignment, uniformity}}.
        """
        encode = tf.function(embedder, reduce_retracing=True)
        results = {}
        for key, batches in self.batches.items():
            progress = keras.utils.Progbar(len(self.gold[key]), verbose=int(verbose), unit_name="pair")
            embeddings1, embeddings2 = [], []
            for features1, features2 in batches:
                embeddings1.append(encode(features1).numpy())
                embeddings2.append(encode(features2).numpy())
                progress.add(len(embeddings1[-1]))
            unit1 = l2_normalize(np.concatenate(embeddings1))  # [pairs, hidden]
            unit2 = l2_normalize(np.concatenate(embeddings2))  # [pairs, hidden]
            predicted = (unit1 * unit2).sum(axis=1)  # cosine similarity, [pairs]
            gold = self.gold[key]
            results[key] = {
                "n": len(gold),
                "pearson": float(scipy.stats.pearsonr(predicted, gold).statistic),
                "spearman": float(scipy.stats.spearmanr(predicted, gold).statistic),
                "alignment": alignment(unit1, unit2, gold),
                "uniformity": uniformity(self.unique_sentence_rows(key, unit1, unit2)),
            }
        return results

    def unique_sentence_rows(self, key, unit1, unit2):
        """The embeddings of the split's distinct sentences, [sentences, hidden]."""
        sentences = np.concatenate([self.sentences[key][0], self.sentences[key][1]])
        _, first = np.unique(sentences, return_index=True)
        return np.concatenate([unit1, unit2])[np.sort(first)]


# Wang & Isola (2020), as the SimCSE paper uses them: positive pairs are those with gold score >= 4 (of 5).
POSITIVE_PAIR_MIN_SCORE = 4.0


def l2_normalize(embeddings):
    embeddings = np.asarray(embeddings, np.float64)
    return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)


def alignment(unit1, unit2, gold):
    """Mean squared distance of the unit embeddings of positive pairs (lower: positives closer)."""
    positive = gold >= POSITIVE_PAIR_MIN_SCORE
    return float(((unit1[positive] - unit2[positive]) ** 2).sum(axis=1).mean())


def uniformity(unit, rows_per_block=2048):
    """log E[exp(-2 ||x - y||^2)] over all distinct pairs of unit embeddings (lower: spread more evenly)."""
    total, count = 0.0, 0
    for start in range(0, len(unit), rows_per_block):
        block = unit[start : start + rows_per_block]  # [block, hidden]
        squared_distance = np.maximum(2.0 - 2.0 * block @ unit.T, 0.0)  # [block, sentences]
        # Only pairs (i, j) with i < j: each distinct pair once, no sentence with itself.
        upper = np.arange(start, start + len(block))[:, None] < np.arange(len(unit))[None, :]
        total += np.exp(-2.0 * squared_distance[upper]).sum()
        count += upper.sum()
    return float(np.log(total / count))
