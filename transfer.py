"""Evaluation beyond STS, as SentEval's transfer tasks and MTEB do, on Korean tasks of tfds-korean: classification
(NSMC, KLUE TC) by logistic regression on frozen embeddings, pair classification (Question pair) by the cosine
similarity of the two questions, and retrieval (KorQuAD 1.0) of each question's paragraph among every paragraph of
the split. Embeddings are L2-normalised, in float64, as sts.py's; the metrics are MTEB's.

A task's examples are read (`load`) before any model is, so a split that is missing fails first; each is then
scored (`Task.score`) with functions that embed sentences: one pass over the task's distinct sentences, shortest
first (`sts.embed_in_order`).
"""

import dataclasses

import numpy as np
import sklearn.linear_model
import sklearn.metrics

import data
import errors
import sts

KINDS = {
    "nsmc": "classification",
    "klue_tc": "classification",
    "question_pair": "pair classification",
    "korquad": "retrieval",
}
# The split classifiers and thresholds are fitted on: never the one scored.
FIT_SPLIT = "train"
# MTEB's classification protocol (its AbsTaskClassification): 10 experiments, each a logistic regression of at most
# 100 iterations trained on 8 examples of every class of the training split, drawn anew; scored on the whole
# evaluation split.
EXPERIMENTS = 10
TRAINING_EXAMPLES_PER_CLASS = 8
MAX_ITERATIONS = 100
# Retrieval is scored on the first 10 paragraphs of each ranking (MTEB's main retrieval score is nDCG@10).
CUTOFF = 10
# Of the --max_examples samples: the same examples for every model.
SAMPLE_SEED = 0
# Questions scored against every paragraph at once: a block's similarities are 1024 x paragraphs floats.
QUESTIONS_PER_BLOCK = 1024


# === Examples ===


def columns(dataset):
    """A dataset of dicts as {feature: numpy array of every example's value}."""
    batches = list(dataset.batch(4096).as_numpy_iterator())
    if not batches:
        return {name: np.array([]) for name in dataset.element_spec}
    return {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}


def sample(examples, max_examples, seed=SAMPLE_SEED):
    """`examples` ({feature: array}), or a seeded sample of `max_examples` of them, in their order."""
    count = len(next(iter(examples.values())))
    if max_examples is None or max_examples >= count:
        return examples
    rows = np.sort(np.random.default_rng(seed).choice(count, size=max_examples, replace=False))
    return {name: values[rows] for name, values in examples.items()}


@dataclasses.dataclass
class Task:
    """One split of a transfer task, ready to score.

    Args:
        key: "DATASET:SPLIT".
        kind: KINDS' kind of the dataset.
        examples: {feature: array} of the evaluation split (a sample of it with --max_examples).
        fit_examples: {feature: array} of FIT_SPLIT (classification, pair classification), else None.
        passages: retrieval's corpus, every distinct paragraph of the split (sorted), else None.
        max_examples: the sample's size, or None (every example).
    """

    key: str
    kind: str
    examples: dict
    fit_examples: dict | None
    passages: np.ndarray | None
    max_examples: int | None

    def score(self, embed, embed_passages, verbose=False):
        """{metric: value} of the task, `embed(sentences, verbose)` -> [n, hidden] embeddings in the order given;
        `embed_passages` the same for retrieval's paragraphs (at their own length)."""
        if self.kind == "classification":
            scores = self.score_classification(embed, verbose)
        elif self.kind == "pair classification":
            scores = self.score_pairs(embed, verbose)
        else:
            scores = self.score_retrieval(embed, embed_passages, verbose)
        return {"n": len(next(iter(self.examples.values()))), **scores, "max_examples": self.max_examples}

    def score_classification(self, embed, verbose):
        samples = training_samples(self.fit_examples["label"])
        training_rows = np.unique(np.concatenate(samples))  # every row some experiment trains on, ascending
        sentences = np.concatenate([self.fit_examples["sentence"][training_rows], self.examples["sentence"]])
        unit = embed_distinct(sentences, embed, verbose)  # [training rows + evaluation examples, hidden]
        return classification_scores(
            unit[: len(training_rows)],
            self.fit_examples["label"][training_rows],
            [np.searchsorted(training_rows, rows) for rows in samples],  # rows of the training rows
            unit[len(training_rows) :],
            self.examples["label"],
        )

    def score_pairs(self, embed, verbose):
        both = [self.fit_examples, self.examples]
        sentences = np.concatenate([pairs[name] for pairs in both for name in ("sentence1", "sentence2")])
        unit = embed_distinct(sentences, embed, verbose)  # [2 x (fitted + evaluated pairs), hidden]
        fit_count = len(self.fit_examples["label"])
        first, second = np.split(unit[: 2 * fit_count], 2)
        threshold = best_threshold((first * second).sum(axis=1), self.fit_examples["label"])
        first, second = np.split(unit[2 * fit_count :], 2)
        similarity = (first * second).sum(axis=1)  # cosine similarity, [pairs]
        labels = self.examples["label"]
        return {
            "positive_share": float(labels.mean()),
            "average_precision": sts.finite_or_none(average_precision(similarity, labels)),
            "accuracy": float(((similarity >= threshold) == labels).mean()),
            "threshold": float(threshold),
            "threshold_split": FIT_SPLIT,
        }

    def score_retrieval(self, embed, embed_passages, verbose):
        questions = embed_distinct(self.examples["question"], embed, verbose)  # [questions, hidden]
        passages = embed_distinct(self.passages, embed_passages, verbose)  # [passages, hidden]
        relevant = np.searchsorted(self.passages, self.examples["passage"])  # each question's passage, [questions]
        return {"passages": len(self.passages), **retrieval_scores(questions, passages, relevant)}


def load(name, split, data_dir=None, max_examples=None):
    """The Task of `name`'s `split`: its examples, and those of FIT_SPLIT, read now (before any model is loaded).
    DataError for an unknown split, the fit split itself, a split that is not prepared or has no examples, and a
    classification training split with fewer than two classes."""
    if split == FIT_SPLIT and KINDS[name] != "retrieval":
        raise errors.DataError(
            f"{name}:{split} is the split classifiers and thresholds are fitted on: score another split of {name}"
        )
    fit_examples = passages = None
    if KINDS[name] == "classification":
        examples, fit_examples = (
            labelled_columns(data.labelled_sentences(name, split_name, data_dir)) for split_name in (split, FIT_SPLIT)
        )
        classes = np.unique(fit_examples["label"])
        if len(classes) < 2:
            raise errors.DataError(
                f"{name}:{FIT_SPLIT} has {len(classes)} class{'es' * (len(classes) != 1)} to train a classifier on: "
                "it needs two or more"
            )
    elif KINDS[name] == "pair classification":
        examples = columns(data.question_pairs(split, data_dir))
        fit_examples = sample(columns(data.question_pairs(FIT_SPLIT, data_dir)), max_examples)
    else:
        examples = columns(data.questions_and_passages(split, data_dir))
        passages = np.unique(examples["passage"])
    for split_name, split_examples in ((split, examples), (FIT_SPLIT, fit_examples)):
        if split_examples is not None and not len(next(iter(split_examples.values()))):
            raise errors.DataError(f"{name}:{split_name} has no examples")
    return Task(f"{name}:{split}", KINDS[name], sample(examples, max_examples), fit_examples, passages, max_examples)


def labelled_columns(examples):
    """`columns` of {"sentence", "label"}, the labels as str (scikit-learn takes no bytes)."""
    examples = columns(examples)
    return {**examples, "label": np.array([label.decode("utf-8") for label in examples["label"]], dtype=str)}


def embed_distinct(sentences, embed, verbose):
    """L2-normalised embeddings of `sentences`, [len(sentences), hidden] float64, each distinct sentence embedded
    once."""
    distinct, rows = np.unique(sentences, return_inverse=True)
    return sts.l2_normalize(embed(distinct, verbose))[rows]


# === Classification ===


def training_samples(labels):
    """For each of the EXPERIMENTS, the rows of the training split it trains on: TRAINING_EXAMPLES_PER_CLASS of
    every class (all of a class that has fewer), drawn by numpy's generator seeded with the experiment's number."""
    classes = np.unique(labels)
    samples = []
    for experiment in range(EXPERIMENTS):
        rng = np.random.default_rng(experiment)
        rows = [rng.permutation(np.flatnonzero(labels == name))[:TRAINING_EXAMPLES_PER_CLASS] for name in classes]
        samples.append(np.sort(np.concatenate(rows)))
    return samples


def classification_scores(training_unit, training_labels, samples, unit, labels):
    """Accuracy and macro-F1 (over the training split's classes) on (`unit`, `labels`) of a logistic regression
    trained on each sample of rows of (`training_unit`, `training_labels`): the mean and the sample standard
    deviation over the samples."""
    classes = np.unique(training_labels)
    accuracy, macro_f1 = [], []
    for experiment, rows in enumerate(samples):
        classifier = sklearn.linear_model.LogisticRegression(max_iter=MAX_ITERATIONS, random_state=experiment)
        classifier.fit(training_unit[rows], training_labels[rows])
        predicted = classifier.predict(unit)
        accuracy.append(sklearn.metrics.accuracy_score(labels, predicted))
        macro_f1.append(sklearn.metrics.f1_score(labels, predicted, labels=classes, average="macro", zero_division=0))
    return {
        "accuracy": float(np.mean(accuracy)),
        "accuracy_std": float(np.std(accuracy, ddof=1)),
        "macro_f1": float(np.mean(macro_f1)),
        "macro_f1_std": float(np.std(macro_f1, ddof=1)),
        "experiments": len(samples),
        "training_examples_per_class": TRAINING_EXAMPLES_PER_CLASS,
    }


# === Pair classification ===


def average_precision(scores, labels):
    """The area under the step-wise precision-recall curve of ranking by `scores` (labels 1 positive, 0 negative):
    the sum, over the distinct scores from the highest, of the recall each adds times the precision at it; tied
    scores are one threshold. NaN without positives."""
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_ties = np.append(scores[1:] != scores[:-1], True)  # the last row of each run of equal scores
    true_positives = np.cumsum(labels)[last_of_ties]  # at each distinct score, [thresholds]
    predicted_positives = np.arange(1, len(labels) + 1)[last_of_ties]
    recall_added = np.diff(true_positives, prepend=0) / labels.sum() if labels.any() else np.nan
    return float(np.sum(recall_added * true_positives / predicted_positives))


def best_threshold(scores, labels):
    """The threshold with the highest accuracy on (`scores`, `labels`), scores at or above it predicted positive:
    midway between two neighbouring distinct scores, or past the lowest or highest; the lowest of equals."""
    distinct = np.unique(scores)  # ascending
    candidates = np.concatenate([[distinct[0] - 1], (distinct[1:] + distinct[:-1]) / 2, [distinct[-1] + 1]])
    positives, negatives = np.sort(scores[labels == 1]), np.sort(scores[labels == 0])
    correct = (
        len(positives)
        - np.searchsorted(positives, candidates, side="left")  # positives at or above each candidate
        + np.searchsorted(negatives, candidates, side="left")  # negatives below it
    )
    return candidates[np.argmax(correct)]


# === Retrieval ===


def retrieval_scores(questions, passages, relevant):
    """MRR@10, nDCG@10, recall@1 and recall@10 of ranking the unit `passages` [passages, hidden] by cosine similarity
    to each unit question [questions, hidden], each question's one relevant passage at row `relevant` [questions].
    A question's rank is 1 + the passages scoring strictly higher than its own."""
    ranks = np.empty(len(questions), np.int64)
    for start in range(0, len(questions), QUESTIONS_PER_BLOCK):
        block = slice(start, start + QUESTIONS_PER_BLOCK)
        similarity = questions[block] @ passages.T  # [block, passages]
        own = similarity[np.arange(similarity.shape[0]), relevant[block]]  # [block]
        ranks[block] = 1 + (similarity > own[:, None]).sum(axis=1)
    within = ranks <= CUTOFF
    return {
        "mrr_at_10": float(np.mean(np.where(within, 1.0 / ranks, 0.0))),
        # One relevant passage: the ideal DCG is 1, and the DCG is 1 / log2(rank + 1) within the cut-off.
        "ndcg_at_10": float(np.mean(np.where(within, 1.0 / np.log2(ranks + 1.0), 0.0))),
        "recall_at_1": float(np.mean(ranks == 1)),
        "recall_at_10": float(np.mean(within)),
    }
