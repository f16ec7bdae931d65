"""STS evaluation shared by evaluate.py and the training scripts: embed both sentences of every pair, score
their cosine similarity against the gold score with Pearson and Spearman correlation, and measure the
embeddings' alignment and uniformity (Wang & Isola, 2020), the two diagnostics of the SimCSE paper."""

import math
import time

import keras
import numpy as np
import scipy.stats
import tensorflow as tf


def shortest_first(sentences):
    """The order that sorts `sentences` (str, or UTF-8 bytes) by their length in characters, stably: embedded in
    it, a batch holds sentences of about one length and carries little padding. KR-BERT char's tokens are about one
    a character. `embeddings[order] = embedded_in_order` puts the results back in the order given."""
    lengths = [len(s.decode("utf-8", "replace") if isinstance(s, bytes) else s) for s in sentences]
    return np.argsort(lengths, kind="stable")


# A progress bar is drawn once an encoding has taken this long: a shorter one would only flicker.
PROGRESS_AFTER_SECONDS = 3.0


def embed_in_order(sentences, embed, batch_size, verbose=False):
    """[len(sentences), hidden] embeddings of `sentences` (str or UTF-8 bytes), in the order given: `embed`
    (strings [batch] -> [batch, hidden]) runs on batches of them shortest first (`shortest_first`); with `verbose`, a
    progress bar once it has taken PROGRESS_AFTER_SECONDS."""
    order = shortest_first(sentences)
    started, progress = time.monotonic(), None
    batches = []
    for start in range(0, len(sentences), batch_size):
        rows = order[start : start + batch_size]
        batches.append(np.asarray(embed(tf.constant([sentences[row] for row in rows]))))
        if verbose and progress is None and time.monotonic() - started > PROGRESS_AFTER_SECONDS:
            progress = keras.utils.Progbar(len(sentences), unit_name="sentence")
        if progress:
            progress.update(start + len(rows))
    shortest_first_embeddings = np.concatenate(batches)  # [sentences, hidden]
    embeddings = np.empty_like(shortest_first_embeddings)
    embeddings[order] = shortest_first_embeddings
    return embeddings


class StsEvaluator:
    """Scores a sentence embedder on STS sets: Pearson and Spearman of the cosine similarity against the gold
    score, and the paper's alignment and uniformity of the L2-normalised embeddings.

    Each distinct sentence of a set is embedded once. Sentences are batched shortest first, so a batch carries
    little padding (`tokenization.trim_padding` cuts it); they are tokenized once and kept, and the embedder is traced
    once for any batch shape: training evaluates the same sets with the same embedder many times.

    Args:
        sets: {"korsts:dev": tf.data.Dataset of {"sentence1", "sentence2", "score"}, ...} (`data.sts_pairs`).
        tokenizer: strings [batch] -> what `embedder` takes (`tokenization.KrBertTokenizer.trimmed`).
        embedder: what `tokenizer` gives -> [batch, hidden] (`model.sentence_embedder`; run in inference mode).
        batch_size: sentences per batch.

    Example (evaluate.py passes `data.sts_pairs`, `KrBertTokenizer.trimmed` and `model.sentence_embedder`):
        >>> pairs = tf.data.Dataset.from_tensor_slices(
        ...     {"sentence1": ["a", "bb", "ccc"], "sentence2": ["bb", "ccc", "a"], "score": [4.0, 2.0, 1.0]})
        >>> def embedder(sentences):  # a stand-in: the number of characters, and 1
        ...     lengths = tf.cast(tf.strings.length(sentences), tf.float32)
        ...     return tf.stack([lengths, tf.ones_like(lengths)], axis=1)
        >>> scores = StsEvaluator({"toy": pairs}, tf.identity, embedder, batch_size=2)()
        >>> scores["toy"]["n"], round(scores["toy"]["spearman"], 2)
        (3, 0.5)
    """

    def __init__(self, sets, tokenizer, embedder, batch_size):
        self.batches = {}
        self.gold = {}
        self.pair_rows = {}
        for key, pairs in sets.items():
            columns = list(pairs.batch(4096).as_numpy_iterator())
            self.gold[key] = np.concatenate([batch["score"] for batch in columns]).astype(np.float64)
            slots = np.concatenate([batch[name] for name in ("sentence1", "sentence2") for batch in columns])
            sentences, slot_sentence = np.unique(slots, return_inverse=True)  # [distinct], [2 * pairs]
            order = shortest_first(sentences)
            sorted_row = np.empty_like(order)
            sorted_row[order] = np.arange(len(order))
            self.pair_rows[key] = sorted_row[slot_sentence].reshape(2, -1)  # row of each pair's sentences, [2, pairs]
            self.batches[key] = (
                tf.data.Dataset.from_tensor_slices(sentences[order])
                .batch(batch_size)
                .map(tokenizer, num_parallel_calls=tf.data.AUTOTUNE)
                .cache()
            )
        features = next(iter(self.batches.values())).element_spec
        any_shape = tf.nest.map_structure(lambda spec: tf.TensorSpec([None] * spec.shape.rank, spec.dtype), features)
        self.encode = tf.function(embedder, input_signature=[any_shape])

    def __call__(self, verbose=False):
        """Returns {set: {n, pearson, spearman, alignment, uniformity}}; a metric that is not finite (constant
        predictions; no pair with gold >= 4 for alignment) is None."""
        results = {}
        for key, batches in self.batches.items():
            progress = keras.utils.Progbar(self.pair_rows[key].max() + 1, verbose=int(verbose), unit_name="sentence")
            embeddings = []
            for features in batches:
                embeddings.append(self.encode(features).numpy())
                progress.add(len(embeddings[-1]))
            unit = l2_normalize(np.concatenate(embeddings))  # [distinct sentences, hidden], shortest first
            unit1, unit2 = unit[self.pair_rows[key]]  # each [pairs, hidden]
            predicted = (unit1 * unit2).sum(axis=1)  # cosine similarity, [pairs]
            gold = self.gold[key]
            scores = {
                "pearson": scipy.stats.pearsonr(predicted, gold).statistic,
                "spearman": scipy.stats.spearmanr(predicted, gold).statistic,
                "alignment": alignment(unit1, unit2, gold),
                "uniformity": uniformity(unit),
            }
            results[key] = {"n": len(gold), **{name: finite_or_none(value) for name, value in scores.items()}}
        return results


def finite_or_none(value):
    """A float, or None for NaN and infinities: they are not JSON, and no score to compare or select."""
    value = float(value)
    return value if math.isfinite(value) else None


# Wang & Isola (2020), as the SimCSE paper uses them: positive pairs are those with gold score >= 4 (of 5).
POSITIVE_PAIR_MIN_SCORE = 4.0


def l2_normalize(embeddings):
    embeddings = np.asarray(embeddings, np.float64)
    return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)


def alignment(unit1, unit2, gold):
    """Mean squared distance of the unit embeddings of positive pairs (lower: positives closer)."""
    positive = gold >= POSITIVE_PAIR_MIN_SCORE
    if not positive.any():
        return math.nan
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
