"""The upstream files the tfds-korean builders read: where each lies under `data.py prepare --source_dir` (laid out
as ../shared/data is), and a check of each that names the first row its builder would fail on, before it runs.
"""

import csv
import io
import math
import zipfile

import errors
import files

# Upstream file of every split, relative to --source_dir. The builders' own URLs end in these file names.
SOURCE_FILES = {
    "korsts": {
        "train": "korsts/sts-train.tsv",
        "dev": "korsts/sts-dev.tsv",
        "test": "korsts/sts-test.tsv",
    },
    "klue_sts": {
        "train": "klue_sts/klue-sts-v1.1_train.json",
        "dev": "klue_sts/klue-sts-v1.1_dev.json",
    },
    "kornli": {
        "mnli_train": "kornli/multinli.train.ko.tsv",
        "snli_train": "kornli/snli_1.0_train.ko.tsv",
        "xnli_dev": "kornli/xnli.dev.ko.tsv",
        "xnli_test": "kornli/xnli.test.ko.tsv",
    },
    "korean_wikipedia_corpus": {"train": "korean_wikipedia_corpus/corpus.zip"},
    "nsmc": {
        "train": "nsmc/ratings_train.txt",
        "test": "nsmc/ratings_test.txt",
    },
    "klue_tc": {
        "train": "klue_tc/ynat-v1.1_train.json",
        "dev": "klue_tc/ynat-v1.1_dev.json",
    },
    "question_pair": {
        "train": "question_pair/train.txt",
        "validation": "question_pair/validation.txt",
        "test": "question_pair/test.txt",
    },
    "korquad": {
        "train": "korquad/KorQuAD_v1.0_train.json",
        "dev": "korquad/KorQuAD_v1.0_dev.json",
    },
}

# Rows as the korsts and kornli builders split them: `line.strip().split("\t")` after a header line.
_SPLIT_COLUMNS = {
    "korsts": ("genre", "filename", "year", "id", "score", "sentence1", "sentence2"),
    "kornli": ("sentence1", "sentence2", "gold_label"),
}
_NLI_LABELS = ("entailment", "neutral", "contradiction")
# Rows as the nsmc and question_pair builders read them: `csv.DictReader(f, delimiter="\t")`; each label's values.
_CSV_COLUMNS = {
    "nsmc": (("id", "document", "label"), "label"),
    "question_pair": (("question1", "question2", "is_duplicate"), "is_duplicate"),
}
_BINARY_LABELS = ("0", "1")
# The string fields of every item of a KLUE TC (YNAT) file.
_YNAT_FIELDS = ("guid", "title", "predefined_news_category", "label", "url", "date")


def check(name, path):
    """Raises errors.DataError naming the file and the row or item the tfds-korean builder `name` would fail on."""
    if name in _SPLIT_COLUMNS:
        _check_split_lines(name, path)
    elif name in _CSV_COLUMNS:
        _check_csv_rows(name, path)
    elif name == "klue_sts":
        expected = "guid, sentence1, sentence2 and numeric labels (label, real-label, binary-label)"
        _check_json_items(path, _is_klue_sts_pair, expected)
    elif name == "klue_tc":
        _check_json_items(path, _is_ynat_headline, f"the strings {', '.join(_YNAT_FIELDS)}")
    elif name == "korquad":
        _check_korquad(path)
    else:
        with files.open_file(path, "rb") as f:
            if not zipfile.is_zipfile(f):
                raise errors.DataError(f"{path} is not a zip archive")


def _check_split_lines(name, path):
    columns = _SPLIT_COLUMNS[name]
    for number, line in enumerate(files.read_lines(path)[1:], start=2):  # after the header
        row = dict(zip(columns, line.strip().split("\t"), strict=False))
        if len(row) < len(columns):
            raise errors.DataError(
                f"{path} line {number}: {len(row)} tab-separated columns, expected {len(columns)} "
                f"({', '.join(columns)})"
            )
        if name == "korsts" and not _is_number(row["score"]):
            raise errors.DataError(f"{path} line {number}: score {row['score']!r} is not a number")
        if name == "kornli" and row["gold_label"] not in _NLI_LABELS:
            raise errors.DataError(
                f"{path} line {number}: gold_label {row['gold_label']!r} is not one of {_NLI_LABELS}"
            )


def _check_csv_rows(name, path):
    columns, label = _CSV_COLUMNS[name]
    reader = csv.DictReader(io.StringIO("".join(files.read_lines(path))), delimiter="\t")
    if reader.fieldnames is None or not set(columns) <= set(reader.fieldnames):
        raise errors.DataError(f"{path}: the header names {reader.fieldnames}, expected {', '.join(columns)}")
    for row in reader:
        if any(row[column] is None for column in columns):
            raise errors.DataError(f"{path} line {reader.line_num}: fewer tab-separated columns than {columns}")
        if row[label] not in _BINARY_LABELS:
            raise errors.DataError(f"{path} line {reader.line_num}: {label} {row[label]!r} is not 0 or 1")


def _check_json_items(path, is_valid, expected):
    items = files.read_json(path)
    for index, item in enumerate(items if isinstance(items, list) else [None]):
        if not (isinstance(item, dict) and is_valid(item)):
            raise errors.DataError(f"{path} item {index}: expected {expected}")


def _is_klue_sts_pair(pair):
    labels = pair.get("labels")
    return (
        {"guid", "sentence1", "sentence2"} <= set(pair)
        and isinstance(labels, dict)
        and all(_is_number(labels.get(key)) for key in ("label", "real-label", "binary-label"))
    )


def _is_ynat_headline(headline):
    return all(isinstance(headline.get(field), str) for field in _YNAT_FIELDS)


def _check_korquad(path):
    """KorQuAD 1.0 (SQuAD 1.0's layout): {"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
    "answers": [{"text", "answer_start"}]}]}]}]}."""
    document = files.read_json(path)
    articles = document.get("data") if isinstance(document, dict) else None
    if not isinstance(articles, list):
        raise errors.DataError(f'{path}: expected {{"data": [articles]}} (KorQuAD 1.0\'s layout)')
    for index, article in enumerate(articles):
        if not (isinstance(article, dict) and isinstance(article.get("title"), str) and _are_paragraphs(article)):
            raise errors.DataError(
                f"{path} article {index}: expected a title and paragraphs of a context and qas, each qa an id, a "
                "question and answers of text and answer_start"
            )


def _are_paragraphs(article):
    paragraphs = article.get("paragraphs")
    return isinstance(paragraphs, list) and all(
        isinstance(paragraph, dict)
        and isinstance(paragraph.get("context"), str)
        and isinstance(paragraph.get("qas"), list)
        and all(_is_korquad_qa(qa) for qa in paragraph["qas"])
        for paragraph in paragraphs
    )


def _is_korquad_qa(qa):
    return (
        isinstance(qa, dict)
        and isinstance(qa.get("id"), str)
        and isinstance(qa.get("question"), str)
        and isinstance(qa.get("answers"), list)
        and all(
            isinstance(answer, dict) and isinstance(answer.get("text"), str) and type(answer.get("answer_start")) is int
            for answer in qa["answers"]
        )
    )


def _is_number(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
