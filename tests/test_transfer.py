"""Evaluation beyond STS (transfer.py, evaluation.py, evaluate.py): each metric against an independent computation
(scikit-learn's, or by hand on known ranks), each task end to end through its tfds-korean builder from upstream-format
files against the same computations on embeddings of the test's own, the tiny checkpoint on the real Question pair
validation split, and evaluate.py's one-line refusals."""

import csv
import json
import math

import numpy as np
import pytest
import sklearn.linear_model
import sklearn.metrics
import tensorflow as tf
from helpers import TINY, assert_failed_cleanly, float32_embedder, write_text

import data
import errors
import evaluation
import tokenization
import transfer

MAX_SEQUENCE_LENGTH = 32
PASSAGE_LENGTH = 128
TASKS = ["nsmc:test", "klue_tc:dev", "question_pair:test", "korquad:dev"]


# === Metrics ===


def test_average_precision_is_scikit_learns_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(200):
        count = int(rng.integers(2, 60))
        scores = np.round(rng.normal(size=count), 1)  # many ties
        labels = rng.integers(0, 2, count)
        if labels.any():
            expected = sklearn.metrics.average_precision_score(labels, scores)
            assert transfer.average_precision(scores, labels) == pytest.approx(expected, abs=1e-12)
    assert math.isnan(transfer.average_precision(np.array([0.3, 0.1]), np.array([0, 0])))


def test_best_threshold_has_the_highest_accuracy_of_any_threshold():
    rng = np.random.default_rng(1)
    for _ in range(100):
        scores = np.round(rng.uniform(-1, 1, size=int(rng.integers(1, 40))), 1)
        labels = rng.integers(0, 2, len(scores))
        threshold = transfer.best_threshold(scores, labels)
        best = max(np.mean((scores >= t) == labels) for t in [*scores, np.inf])  # every distinct cut, and none
        assert np.mean((scores >= threshold) == labels) == best
        assert threshold not in scores  # between two scores, so it carries over to scores it never saw


def test_retrieval_scores_on_known_ranks():
    # Passages one-hot, so a question's similarity to passage j is its j-th (unit-norm) coordinate.
    passages = np.eye(12)
    weights = np.linspace(1.0, 0.1, 12)  # passage 0 most similar, passage 11 least
    questions = np.tile(weights / np.linalg.norm(weights), (4, 1))
    relevant = np.array([0, 2, 9, 11])  # ranks 1, 3, 10 and 11 (past the cut-off)
    scores = transfer.retrieval_scores(questions, passages, relevant)
    assert scores["mrr_at_10"] == pytest.approx((1 + 1 / 3 + 1 / 10 + 0) / 4, abs=1e-12)
    assert scores["ndcg_at_10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(11) + 0) / 4, abs=1e-12)
    assert scores["recall_at_1"] == 0.25 and scores["recall_at_10"] == 0.75


def test_training_samples_hold_eight_of_every_class_each_drawn_anew():
    labels = np.array(["a"] * 30 + ["b"] * 20 + ["c"] * 5)
    samples = transfer.training_samples(labels)
    assert len(samples) == transfer.EXPERIMENTS == 10
    for rows in samples:
        counts = dict(zip(*np.unique(labels[rows], return_counts=True), strict=True))
        assert counts == {"a": 8, "b": 8, "c": 5}  # all of a class with fewer than 8
    assert len({tuple(rows) for rows in samples}) == 10
    assert all((a == b).all() for a, b in zip(samples, transfer.training_samples(labels), strict=True))  # seeded


# === End to end, through the tfds-korean builders ===


def read_upstream(source_dir):
    """The self-made upstream files, read with csv and json (not tfds): {task: examples}."""

    def tsv(path):
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f, delimiter="\t"))

    def sentences_and_labels(rows, text, label):
        return [row[text] for row in rows], np.array([str(row[label]) for row in rows])

    nsmc = {split: tsv(source_dir / "nsmc" / f"ratings_{split}.txt") for split in ("train", "test")}
    ynat = {
        split: json.loads((source_dir / "klue_tc" / f"ynat-v1.1_{split}.json").read_text("utf-8"))
        for split in ("train", "dev")
    }
    questions = {split: tsv(source_dir / "question_pair" / f"{split}.txt") for split in ("train", "test")}
    korquad = json.loads((source_dir / "korquad" / "KorQuAD_v1.0_dev.json").read_text("utf-8"))
    paragraphs = [paragraph for article in korquad["data"] for paragraph in article["paragraphs"]]
    return {
        "nsmc": {split: sentences_and_labels(rows, "document", "label") for split, rows in nsmc.items()},
        "klue_tc": {split: sentences_and_labels(rows, "title", "label") for split, rows in ynat.items()},
        "question_pair": {
            split: (
                [r["question1"] for r in rows],
                [r["question2"] for r in rows],
                np.array([1 - int(r["is_duplicate"]) for r in rows]),
            )
            for split, rows in questions.items()
        },  # fmt: skip
        "korquad": (
            [qa["question"] for paragraph in paragraphs for qa in paragraph["qas"]],
            [paragraph["context"] for paragraph in paragraphs for _ in paragraph["qas"]],
        ),
    }


def unit_embeddings(embedder, vocab_path, length):
    """sentences -> L2-normalised float64 embeddings, in one batch padded to `length` (no sorting, no trimming)."""
    tokenizer = tokenization.KrBertTokenizer(str(vocab_path), length)

    def embed(sentences):
        rows = embedder(tokenizer(tf.constant(list(sentences)))).numpy().astype(np.float64)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    return embed


def test_every_task_end_to_end_matches_independent_computations(random_bert, self_made_source_dir, self_made_data_dir):
    results = evaluation.evaluate(
        TASKS, checkpoint=str(random_bert["pretrained_weight"]), data_dir=str(self_made_data_dir),
        max_sequence_length=MAX_SEQUENCE_LENGTH, batch_size=8, passage_length=PASSAGE_LENGTH,
    )  # fmt: skip
    upstream = read_upstream(self_made_source_dir)
    embedder = float32_embedder(random_bert)
    embed = unit_embeddings(embedder, random_bert["vocab_path"], MAX_SEQUENCE_LENGTH)
    embed_passage = unit_embeddings(embedder, random_bert["vocab_path"], PASSAGE_LENGTH)

    # Classification: a fresh logistic regression on each experiment's 8 examples of every class.
    for key, split in (("nsmc:test", "test"), ("klue_tc:dev", "dev")):
        name = key.split(":")[0]
        (train_sentences, train_labels), (sentences, labels) = upstream[name]["train"], upstream[name][split]
        # Which training rows each experiment draws is transfer.training_samples' (tested above), in tfds' order.
        task = transfer.load(*key.split(":"), str(self_made_data_dir))
        accuracy = []
        for experiment, rows in enumerate(transfer.training_samples(task.fit_examples["label"])):
            picked = [sentence.decode() for sentence in task.fit_examples["sentence"][rows]]
            picked_labels = [train_labels[train_sentences.index(sentence)] for sentence in picked]  # upstream's
            classifier = sklearn.linear_model.LogisticRegression(max_iter=100, random_state=experiment)
            classifier.fit(embed(picked), picked_labels)
            accuracy.append(sklearn.metrics.accuracy_score(labels, classifier.predict(embed(sentences))))
        assert results[key]["n"] == len(sentences)
        assert results[key]["accuracy"] == pytest.approx(np.mean(accuracy), abs=1e-6)
        assert results[key]["accuracy_std"] == pytest.approx(np.std(accuracy, ddof=1), abs=1e-6)

    # Pair classification: scikit-learn's average precision; the threshold from train, by brute force.
    def similarity(first, second):
        return (embed(first) * embed(second)).sum(axis=1)

    first, second, labels = upstream["question_pair"]["test"]
    train_first, train_second, train_labels = upstream["question_pair"]["train"]
    scores = results["question_pair:test"]
    assert scores["n"] == len(labels) and scores["positive_share"] == labels.mean()
    expected = sklearn.metrics.average_precision_score(labels, similarity(first, second))
    assert scores["average_precision"] == pytest.approx(expected, abs=1e-6)
    train_similarity = similarity(train_first, train_second)
    best = max(np.mean((train_similarity >= t) == train_labels) for t in [*train_similarity, np.inf])
    assert np.mean((train_similarity >= scores["threshold"]) == train_labels) == best
    accuracy = np.mean((similarity(first, second) >= scores["threshold"]) == labels)
    assert scores["accuracy"] == pytest.approx(accuracy, abs=1e-6)

    # Retrieval: each question's rank among the distinct paragraphs, counted by hand.
    questions, own_passages = upstream["korquad"]
    passages = sorted(set(own_passages))
    passage_unit = embed_passage(passages)
    reciprocal, gains, first_places = [], [], []
    for question, own in zip(embed(questions), own_passages, strict=True):
        similarity_to = dict(zip(passages, passage_unit @ question, strict=True))
        rank = 1 + sum(value > similarity_to[own] for value in similarity_to.values())
        reciprocal.append(1 / rank if rank <= 10 else 0)
        gains.append(1 / math.log2(rank + 1) if rank <= 10 else 0)
        first_places.append(rank == 1)
    scores = results["korquad:dev"]
    assert scores["n"] == len(questions) and scores["passages"] == len(passages) == 12
    assert scores["mrr_at_10"] == pytest.approx(np.mean(reciprocal), abs=1e-6)
    assert scores["ndcg_at_10"] == pytest.approx(np.mean(gains), abs=1e-6)
    assert scores["recall_at_1"] == pytest.approx(np.mean(first_places), abs=1e-6)
    assert scores["passage_length"] == PASSAGE_LENGTH


def test_max_examples_scores_a_seeded_sample_and_records_it(random_bert, self_made_data_dir):
    def evaluate(max_examples):
        return evaluation.evaluate(
            ["korsts:dev", "question_pair:test", "korquad:dev"], checkpoint=str(random_bert["pretrained_weight"]),
            data_dir=str(self_made_data_dir), max_sequence_length=MAX_SEQUENCE_LENGTH, batch_size=8,
            max_examples=max_examples, passage_length=PASSAGE_LENGTH,
        )  # fmt: skip

    sampled, again = evaluate(5), evaluate(5)
    assert sampled == again  # the same sample every time
    for key, scores in sampled.items():
        assert scores["n"] == 5 and scores["max_examples"] == 5, key
    assert sampled["korquad:dev"]["passages"] == 12  # questions are sampled, never the paragraphs they rank
    assert evaluate(None)["korsts:dev"]["max_examples"] is None


@pytest.fixture(scope="module")
def one_class_data_dir(tmp_path_factory):
    """nsmc whose train split holds positive reviews only."""
    source = tmp_path_factory.mktemp("one_class")
    write_text(source / "nsmc" / "ratings_train.txt", ["id\tdocument\tlabel", "1\t좋다\t1", "2\t최고\t1"])
    write_text(source / "nsmc" / "ratings_test.txt", ["id\tdocument\tlabel", "3\t별로\t0", "4\t좋다\t1"])
    data.prepare(["nsmc"], str(source), str(source / "tfds"))
    return source / "tfds"


@pytest.mark.parametrize(
    ("datasets", "flag", "message"),
    [
        ("nsmc2:test", "", "unknown dataset 'nsmc2' in nsmc2:test (choose from korsts, klue_sts, nsmc, klue_tc, "),
        ("nsmc:dev", "", "unknown split 'dev' of nsmc (choose from train, test)"),
        ("nsmc:train", "", "nsmc:train is the split classifiers and thresholds are fitted on: score another split"),
        ("korquad:train", "", "korquad:train was not prepared in {data_dir} because its source file was absent"),
        (
            "nsmc:test",
            "--data_dir={one_class}",
            "nsmc:train has 1 class to train a classifier on: it needs two or more",
        ),
        ("question_pair:test", "--max_examples=0", "flag --max_examples=0: 0 is not a positive integer"),
    ],
)
def test_bad_input_ends_in_one_line_and_no_results(
    run_in_fork, random_bert, self_made_data_dir, one_class_data_dir, tmp_path, datasets, flag, message
):
    results_json = tmp_path / "results.json"
    result = run_in_fork(
        "evaluate.py", f"--checkpoint={random_bert['pretrained_weight']}", f"--data_dir={self_made_data_dir}",
        f"--datasets={datasets}", f"--results_json={results_json}",
        *[flag.format(one_class=one_class_data_dir)] * bool(flag),
    )  # fmt: skip
    assert_failed_cleanly(result, "error: " + message.format(data_dir=self_made_data_dir))
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_the_tiny_checkpoint_ranks_paraphrases_above_chance(prepared_data_dir):
    """The real Question pair validation split (songys/Question_pair, in the shared data)."""
    scores = evaluation.evaluate(
        ["question_pair:validation"], checkpoint=str(TINY["pretrained_weight"]), config_path=str(TINY["config"]),
        vocab_path=str(TINY["vocab_path"]), data_dir=str(prepared_data_dir[0]), max_sequence_length=64,
        max_examples=682,  # the whole validation split; the threshold from 682 of the 6,136 train pairs
    )["question_pair:validation"]  # fmt: skip
    assert scores["n"] == 682 and scores["positive_share"] == pytest.approx(432 / 682)
    assert scores["average_precision"] > scores["positive_share"] + 0.05
    assert scores["accuracy"] > scores["positive_share"]  # the threshold from train beats "always a paraphrase"


def test_sets_are_dataset_colon_split():
    assert evaluation.parse_sets(["korsts:dev", "nsmc:test"]) == [("korsts", "dev"), ("nsmc", "test")]
    for specs, message in [([], "no set given"), (["korsts"], "'korsts' is not DATASET:SPLIT")]:
        with pytest.raises(errors.InputError, match=message):
            evaluation.parse_sets(specs)
