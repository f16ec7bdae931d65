"""Data: KR-BERT tokenization in-graph, and the tfds-korean datasets, prepared with tfds and read with tfds.

A dataset that is not prepared in the data directory is downloaded and prepared on first use, as `tfds.load`
does: the tfds-korean builders' own URLs, checksums verified by tfds. Or ahead of time:

    python data.py prepare --data_dir=~/tensorflow_datasets

Without internet, the same builders run with their downloads served from local copies of the upstream files:

    python data.py prepare --source_dir=SOURCE --data_dir=~/tensorflow_datasets

A split whose source file is absent is left out (with a warning naming the file); asking for it later
fails with an error that says which file to provide.
"""

import math
import os
import re
import urllib.parse
import zipfile

# What tfds downloads with: a reachability check through it sees the same proxies (HTTPS_PROXY) and CA bundle
# (REQUESTS_CA_BUNDLE) as the download.
import requests
import tensorflow as tf
import tensorflow_datasets as tfds
import tensorflow_text as tf_text
import tfds_korean.klue_sts
import tfds_korean.korean_wikipedia_corpus
import tfds_korean.kornli
import tfds_korean.korsts
from absl import flags, logging

import errors

# Upstream file of every split, relative to --source_dir, laid out as ../shared/data is.
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
}
BUILDERS = {
    "korsts": tfds_korean.korsts.Korsts,
    "klue_sts": tfds_korean.klue_sts.KlueSts,
    "kornli": tfds_korean.kornli.Kornli,
    "korean_wikipedia_corpus": tfds_korean.korean_wikipedia_corpus.KoreanWikipediaCorpus,
}
# The gold similarity feature of each STS dataset (both on a 0-5 scale).
STS_SCORE_FEATURES = {"korsts": "score", "klue_sts": "label"}


class DataError(errors.InputError):
    """Data that is missing, not prepared, or unknown."""


# === Tokenization ===

# google-research/bert tokenization.py WordpieceTokenizer: words longer than this many characters are [UNK].
MAX_CHARS_PER_WORD = 100


# tokenization.py BasicTokenizer: words split at whitespace, around every punctuation character (ASCII
# symbols and Unicode P*) and around every CJK ideograph. Hangul is neither, so it stays in words.
_PUNCTUATION = r"[!-/:-@\[-`{-~\p{P}]"
_CJK_IDEOGRAPH = (
    r"[\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}"
    r"\x{2B740}-\x{2B81F}\x{2B820}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}]"
)
_WORD_DELIMITERS = rf" +|{_PUNCTUATION}|{_CJK_IDEOGRAPH}"
_KEPT_DELIMITERS = rf"{_PUNCTUATION}|{_CJK_IDEOGRAPH}"


class KrBertTokenizer(tf.Module):
    """BERT's FullTokenizer as TensorFlow ops: KR-BERT's (do_lower_case=False), or with lower-casing.

    The two halves of `tensorflow_text.BertTokenizer`, with no Unicode normalisation unless `lower_case` (NFD
    decomposes Hangul, which only sub-character vocabs want): BERT's basic tokenization as
    `tensorflow_text.regex_split`, then `tensorflow_text.WordpieceTokenizer`. Two of the reference's rules are
    applied as it states them, where tf-text's BertTokenizer differs: text cleaning (control characters dropped,
    not made spaces; Unicode spaces made spaces) and the word length limit (100 characters, not 100 bytes: a
    34-syllable Hangul word is a word, not [UNK]).

    Args:
        vocab_path: a BERT vocab file, one token per line.
        max_sequence_length: length of every output row, [CLS] and [SEP] included.
        model_vocab_size: the model's vocab_size, if any: a vocab of another size is refused.
        lower_case: BERT's do_lower_case: text lower-cased and its accents stripped (Unicode NFD, then the
            combining marks dropped), so Hangul syllables become jamo, as sub-character vocabs need.

    Example:
        >>> tokenizer = KrBertTokenizer("../shared/data/vocabs/vocab_char_16424.txt", max_sequence_length=8)
        >>> tokenizer(tf.constant(["안녕하세요"]))["input_word_ids"].numpy()
        array([[   2,  128, 5660,  160, 4270,    3,    0,    0]], dtype=int32)
    """

    def __init__(self, vocab_path, max_sequence_length, model_vocab_size=None, lower_case=False):
        super().__init__()
        self.lower_case = lower_case
        if not tf.io.gfile.exists(vocab_path):
            raise DataError(f"vocab file not found: {vocab_path}")
        if max_sequence_length < 2:
            raise DataError(f"max_sequence_length must leave room for [CLS] and [SEP], got {max_sequence_length}")
        tokens = [line.rstrip("\n") for line in errors.read_lines(vocab_path)]
        self.vocab_size = len(tokens)
        if model_vocab_size is not None and self.vocab_size != model_vocab_size:
            raise DataError(f"vocab {vocab_path} has {self.vocab_size} tokens, config vocab_size is {model_vocab_size}")
        missing = [token for token in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if token not in tokens]
        if missing:
            raise DataError(f"vocab file {vocab_path} has no {', '.join(missing)} token")
        self.max_sequence_length = max_sequence_length
        self.pad_id = tokens.index("[PAD]")
        self.cls_id = tokens.index("[CLS]")
        self.sep_id = tokens.index("[SEP]")
        vocab_table = tf.lookup.StaticVocabularyTable(
            tf.lookup.TextFileInitializer(
                vocab_path, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER
            ),
            num_oov_buckets=1,
        )
        self.wordpiece_tokenizer = tf_text.WordpieceTokenizer(
            vocab_table,
            # Enough bytes for any word of MAX_CHARS_PER_WORD characters; longer words are [UNK] already.
            max_bytes_per_word=4 * MAX_CHARS_PER_WORD,
            token_out_type=tf.int32,
            unknown_token="[UNK]",
        )

    def __call__(self, sentences):
        """sentences: string [batch] -> int32 `input_word_ids`, `input_mask`, `input_type_ids`, [batch, max_len]."""
        # tokenization.py _clean_text and whitespace_tokenize: Unicode spaces split words, control
        # characters (every category C, but tab/newline/CR) and U+FFFD are dropped.
        text = tf.strings.regex_replace(sentences, r"[\t\n\r\p{Zs}\x{2028}\x{2029}]", " ")
        text = tf.strings.regex_replace(text, r"[\p{C}\x{FFFD}]", "")
        if self.lower_case:
            # tokenization.py BasicTokenizer, do_lower_case: `token.lower()`, then `_run_strip_accents`.
            text = tf_text.normalize_utf8(tf.strings.lower(text, encoding="utf-8"), "NFD")
            text = tf.strings.regex_replace(text, r"\p{Mn}", "")
        words = tf_text.regex_split(text, _WORD_DELIMITERS, _KEPT_DELIMITERS)  # string [batch, (words)]
        words = tf.ragged.map_flat_values(
            lambda flat: tf.where(tf.strings.length(flat, unit="UTF8_CHAR") > MAX_CHARS_PER_WORD, "[UNK]", flat),
            words,
        )
        pieces = self.wordpiece_tokenizer.tokenize(words).merge_dims(1, 2)  # int32 [batch, (pieces)]
        pieces = pieces[:, : self.max_sequence_length - 2]  # room for [CLS] and [SEP]
        batch_size = tf.shape(sentences)[0]
        cls = tf.fill([batch_size, 1], self.cls_id)  # [batch, 1]
        sep = tf.fill([batch_size, 1], self.sep_id)  # [batch, 1]
        ids = tf.concat([cls, pieces, sep], axis=1)  # int32 [batch, (tokens)]
        shape = [None, self.max_sequence_length]
        input_word_ids = ids.to_tensor(default_value=self.pad_id, shape=shape)  # [batch, max_len]
        input_mask = tf.ones_like(ids).to_tensor(default_value=0, shape=shape)  # [batch, max_len]
        return {
            "input_word_ids": input_word_ids,
            "input_mask": input_mask,
            "input_type_ids": tf.zeros_like(input_word_ids),
        }

    def trimmed(self, sentences):
        """`self(sentences)` without the padding columns no sentence of the batch needs (`trim_padding`): for
        encoding, where the batch's shape is free."""
        return trim_padding(self(sentences))


# === Preparation ===


class _LocalDownloads:
    """A stand-in for a builder's DownloadManager that serves each URL from `source_dir/<dataset>/<file name>`."""

    def __init__(self, dl_manager, source_dir, dataset):
        self.dl_manager = dl_manager
        self.directory = os.path.join(source_dir, dataset)

    def download(self, url_or_urls):
        return tf.nest.map_structure(lambda url: tfds.core.Path(self.directory) / url.rsplit("/", 1)[-1], url_or_urls)

    def extract(self, path_or_paths):
        return self.dl_manager.extract(path_or_paths)

    def download_and_extract(self, url_or_urls):
        return self.extract(self.download(url_or_urls))


# Rows as the tfds-korean builders split them: `line.strip().split("\t")` after a header line.
_TSV_COLUMNS = {
    "korsts": ("genre", "filename", "year", "id", "score", "sentence1", "sentence2"),
    "kornli": ("sentence1", "sentence2", "gold_label"),
}
_NLI_LABELS = ("entailment", "neutral", "contradiction")


def check_source_file(name, path):
    """Raises DataError naming the file and line of the first row the tfds-korean builder would fail on."""
    if name in _TSV_COLUMNS:
        columns = _TSV_COLUMNS[name]
        for number, line in enumerate(errors.read_lines(path)[1:], start=2):  # after the header
            row = dict(zip(columns, line.strip().split("\t"), strict=False))
            if len(row) < len(columns):
                raise DataError(
                    f"{path} line {number}: {len(row)} tab-separated columns, expected {len(columns)} "
                    f"({', '.join(columns)})"
                )
            if name == "korsts" and not _is_number(row["score"]):
                raise DataError(f"{path} line {number}: score {row['score']!r} is not a number")
            if name == "kornli" and row["gold_label"] not in _NLI_LABELS:
                raise DataError(f"{path} line {number}: gold_label {row['gold_label']!r} is not one of {_NLI_LABELS}")
    elif name == "klue_sts":
        pairs = errors.read_json(path)
        for index, pair in enumerate(pairs if isinstance(pairs, list) else [None]):
            labels = pair.get("labels") if isinstance(pair, dict) else None
            if not (
                {"guid", "sentence1", "sentence2"} <= set(pair or {})
                and isinstance(labels, dict)
                and all(_is_number(labels.get(key)) for key in ("label", "real-label", "binary-label"))
            ):
                raise DataError(
                    f"{path} item {index}: expected guid, sentence1, sentence2 and numeric labels "
                    "(label, real-label, binary-label)"
                )
    elif not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a zip archive")


def _is_number(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _offline_builder(name, source_dir):
    """The tfds-korean builder `name`, its downloads served from `source_dir`, absent splits left out."""
    registered = BUILDERS[name]
    available = {}
    for split, relative in SOURCE_FILES[name].items():
        if os.path.exists(os.path.join(source_dir, relative)):
            check_source_file(name, os.path.join(source_dir, relative))
            available[split] = relative
        else:
            logging.warning("%s: %s is absent from %s, so split '%s' is left out", name, relative, source_dir, split)
    if not available:
        raise DataError(f"{name}: none of {', '.join(SOURCE_FILES[name].values())} is in {source_dir}")

    class OfflineBuilder(registered, skip_registration=True):
        def _split_generators(self, dl_manager):
            generators = super()._split_generators(_LocalDownloads(dl_manager, source_dir, name))
            return {split: generator for split, generator in generators.items() if split in available}

    OfflineBuilder.name = registered.name
    return OfflineBuilder


def prepare(names, source_dir, data_dir):
    """Builds each dataset in `names` into `data_dir`: from the upstream files under `source_dir`, or, when
    `source_dir` is None, downloaded by tfds (`download_and_prepare`)."""
    for name in names:
        if name not in BUILDERS:
            raise DataError(f"unknown dataset '{name}' (choose from {', '.join(BUILDERS)})")
    if source_dir is not None and not os.path.isdir(source_dir):
        raise DataError(f"--source_dir {source_dir} is not a directory")
    if data_dir:
        errors.check_can_make_directory(data_dir)
    for name in names:
        if source_dir is None:
            builder = download_and_prepare(name, data_dir)
        else:
            builder = _offline_builder(name, source_dir)(data_dir=data_dir)
            builder.download_and_prepare()
        splits = ", ".join(f"{split}: {info.num_examples}" for split, info in builder.info.splits.items())
        logging.info("prepared %s in %s (%s)", name, builder.data_dir, splits)


# === Preparation from the network ===

# Seconds a dataset's host has to answer before the network counts as unreachable. tfds itself retries a failed
# connection 10 times with exponential back-off (over 3 minutes), so an offline machine is told at once instead.
REACHABILITY_TIMEOUT = 30

# What a failed download raises: requests' errors (OSError), tfds' for an HTTP error and a wrong checksum.
DOWNLOAD_ERRORS = (OSError, tfds.download.DownloadError, tfds.download.download_manager.NonMatchingChecksumError)


def upstream_urls(name):
    """The URLs the tfds-korean builder `name` downloads: those its registered checksums list."""
    return sorted(BUILDERS[name].url_infos)


def offline_instructions(name, data_dir_root):
    files = ", ".join(SOURCE_FILES[name].values())
    return (
        f"`python data.py prepare --source_dir=DIR --data_dir={data_dir_root} --datasets={name}` "
        f"with the upstream files in DIR ({files})"
    )


def check_reachable(name, data_dir_root):
    """Raises DataError at once when a URL of `name` cannot be fetched: one HEAD request each, no retries. A
    redirect is not followed (GitHub sends release downloads to URLs signed for GET alone): an answer is enough."""
    for url in upstream_urls(name):
        try:
            response = requests.head(url, allow_redirects=False, timeout=REACHABILITY_TIMEOUT)
        except requests.RequestException as error:
            host = urllib.parse.urlsplit(url).hostname
            raise DataError(
                f"{name} is not prepared in {data_dir_root} and cannot be downloaded: {host} is unreachable "
                f"({type(error).__name__}). Connect to the internet, or prepare it offline: "
                f"{offline_instructions(name, data_dir_root)}"
            ) from error
        if response.status_code in (404, 410):
            raise DataError(
                f"{name} cannot be downloaded: {url} answers HTTP {response.status_code}. Prepare it offline: "
                f"{offline_instructions(name, data_dir_root)}"
            )


def download_and_prepare(name, data_dir=None):
    """The tfds-korean builder `name`, prepared in `data_dir`: if it is not yet, downloaded by tfds (its own URLs,
    checksums verified, tfds' progress bars) and prepared. A failure leaves nothing behind: whatever the attempt
    added to the data directory (downloads, extractions, the dataset's directory) is removed."""
    builder = BUILDERS[name](data_dir=data_dir)
    if builder.is_prepared():
        return builder
    root = builder.data_dir_root
    check_reachable(name, root)
    root_existed = tf.io.gfile.exists(root)
    before = _entries_a_preparation_adds_to(root, name)
    try:
        builder.download_and_prepare()
    except BaseException as error:
        if not root_existed:
            if tf.io.gfile.exists(root):
                tf.io.gfile.rmtree(root)
        else:
            for path in _entries_a_preparation_adds_to(root, name) - before:
                if tf.io.gfile.isdir(path):
                    tf.io.gfile.rmtree(path)
                elif tf.io.gfile.exists(path):
                    tf.io.gfile.remove(path)
        if isinstance(error, DOWNLOAD_ERRORS):
            # A checksum mismatch is several lines naming the file it was downloaded to, which is gone now.
            first_line = (str(error) or type(error).__name__).splitlines()[0]
            message = re.sub(r", downloaded to .*?, has", " has", first_line).rstrip(":")
            raise DataError(
                f"downloading {name} failed, nothing was kept: {message}. Rerun, or prepare it offline: "
                f"{offline_instructions(name, root)}"
            ) from error
        raise
    return builder


def _entries_a_preparation_adds_to(root, name):
    """Paths in the places tfds writes while preparing `name`: the data directory, the dataset's directory, and
    the downloads and extractions shared by every dataset."""
    downloads = os.path.join(root, "downloads")
    places = [root, os.path.join(root, name), downloads, os.path.join(downloads, "extracted")]
    return {
        os.path.join(place, entry.rstrip("/"))
        for place in places
        if tf.io.gfile.isdir(place)
        for entry in tf.io.gfile.listdir(place)
    }


# === Loading ===


def load(name, split, data_dir=None):
    """`tfds.load` of a tfds-korean split, the dataset downloaded and prepared first if it is not yet, with errors
    that say how to fix them."""
    if name not in SOURCE_FILES:
        raise DataError(f"unknown dataset '{name}' (choose from {', '.join(SOURCE_FILES)})")
    if split not in SOURCE_FILES[name]:
        raise DataError(f"unknown split '{split}' of {name} (choose from {', '.join(SOURCE_FILES[name])})")
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        logging.info("%s is not prepared in %s: downloading and preparing it", name, builder.data_dir_root)
        builder = download_and_prepare(name, data_dir)
    if split not in builder.info.splits:
        raise DataError(
            f"{name}:{split} was not prepared in {builder.data_dir_root} because its source file was absent: "
            f"put {SOURCE_FILES[name][split]} under --source_dir and rerun `python data.py prepare --datasets={name}`"
        )
    return tfds.load(name, split=split, data_dir=data_dir, download=False)


def sts_pairs(name, split, data_dir=None):
    """An STS split as a dataset of {"sentence1", "sentence2", "score"} (gold score on a 0-5 scale)."""
    if name not in STS_SCORE_FEATURES:
        raise DataError(f"unknown STS dataset '{name}' (choose from {', '.join(STS_SCORE_FEATURES)})")
    score = STS_SCORE_FEATURES[name]
    return load(name, split, data_dir).map(
        lambda example: {
            "sentence1": example["sentence1"],
            "sentence2": example["sentence2"],
            "score": example[score],
        }
    )


# === Training data ===

# Several workers (MultiWorkerMirroredStrategy) each make the same batches and take their replicas' share of every
# global batch (DATA sharding), so a step trains on the batch one process would; TF's default would shard by input
# file, and a TFDS split may be a single file.
SPLIT_GLOBAL_BATCHES = tf.data.Options()
SPLIT_GLOBAL_BATCHES.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA

# The original scripts' shuffle buffer of corpus sentences (train_unsupervised.py: shuffle(1_000_000)).
SHUFFLE_BUFFER_SIZE = 1_000_000


def corpus_sentences(data_dir=None):
    """Every sentence of the korean_wikipedia_corpus documents (their `content`), as a dataset of strings."""
    documents = load("korean_wikipedia_corpus", "train", data_dir)
    sentences = documents.flat_map(lambda document: tf.data.Dataset.from_tensor_slices(document["content"]))
    if not list(sentences.take(1)):
        raise DataError("korean_wikipedia_corpus:train has no sentences to train on")
    return sentences


# Trimmed batches keep a multiple of this many columns: few distinct shapes, so XLA (which Keras turns on for
# GPUs) compiles a handful of programs, not one per sentence length.
TRIMMED_LENGTH_MULTIPLE = 8


def trim_padding(features):
    """Features [batch, max_len] -> [batch, length]: the batch's longest sentence rounded up to a multiple of
    TRIMMED_LENGTH_MULTIPLE (at most max_len). Padding columns only cost compute: padded positions are masked
    out of attention and pooling, so the embeddings are unchanged."""
    longest = tf.reduce_max(tf.reduce_sum(features["input_mask"], axis=1))
    length = -(-longest // TRIMMED_LENGTH_MULTIPLE) * TRIMMED_LENGTH_MULTIPLE  # slicing stops at max_len
    return {name: values[:, :length] for name, values in features.items()}  # each [batch, length]


def unsupervised_batches(sentences, tokenizer, batch_size, seed):
    """Batches of tokenized sentences, each [batch_size, length <= max_len], pass after pass over the corpus
    without end, each pass shuffled anew; as for `supervised_batches`, a batch never spans two passes, and the
    last `len(sentences) % batch_size` sentences of each shuffled pass are left out."""
    return (
        sentences.shuffle(SHUFFLE_BUFFER_SIZE, seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size, drop_remainder=True)
        .repeat()
        .map(tokenizer.trimmed, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
        .with_options(SPLIT_GLOBAL_BATCHES)
    )


# tfds kornli's gold_label ClassLabel: ["entailment", "neutral", "contradiction"].
ENTAILMENT, NEUTRAL, CONTRADICTION = 0, 1, 2
# The original scripts' shuffle buffer of NLI triples (train_supervised.py: shuffle(500_000)).
TRIPLE_SHUFFLE_BUFFER_SIZE = 500_000


def nli_triples(split, data_dir=None):
    """{"premise", "entailment", "contradiction"} for every premise of a KorNLI split that has both an entailment
    and a contradiction hypothesis (the last of each in file order, as the original work took them).

    Rows are grouped by premise in one streaming tf.data reduction: each premise and its two hypotheses are
    held once, as tensors, however the rows are ordered, and no Python string is made. Premises are keyed by
    their 63-bit fingerprint; a collision (odds ~1e-8 at KorNLI's size) would merge two premises.
    """

    def initial_state(_):
        return {
            "premise": "",
            "entailment": "",
            "contradiction": "",
            "has_entailment": False,
            "has_contradiction": False,
        }

    def add_row(state, row):
        is_entailment = tf.equal(row["gold_label"], ENTAILMENT)
        is_contradiction = tf.equal(row["gold_label"], CONTRADICTION)
        return {
            "premise": row["sentence1"],
            "entailment": tf.where(is_entailment, row["sentence2"], state["entailment"]),
            "contradiction": tf.where(is_contradiction, row["sentence2"], state["contradiction"]),
            "has_entailment": state["has_entailment"] | is_entailment,
            "has_contradiction": state["has_contradiction"] | is_contradiction,
        }

    grouped = (
        load("kornli", split, data_dir)
        .filter(lambda row: row["gold_label"] != NEUTRAL)
        .apply(
            tf.data.experimental.group_by_reducer(
                key_func=lambda row: tf.strings.to_hash_bucket_fast(row["sentence1"], 2**63 - 1),
                reducer=tf.data.experimental.Reducer(initial_state, add_row, lambda state: state),
            )
        )
    )
    return grouped.filter(lambda state: state["has_entailment"] & state["has_contradiction"]).map(
        lambda state: {key: state[key] for key in ("premise", "entailment", "contradiction")}
    )


def nli_triples_of_splits(splits, data_dir=None):
    """The triples of every KorNLI split in `splits`, concatenated, and {split: number of triples}.

    Counting makes one pass over each split, which fills the cache that the training epochs read.
    """
    if not splits:
        raise DataError("no KorNLI split given (e.g. mnli_train)")
    triples = None
    counts = {}
    for split in splits:
        split_triples = nli_triples(split, data_dir).cache()
        counts[split] = int(split_triples.reduce(0, lambda count, _: count + 1))
        triples = split_triples if triples is None else triples.concatenate(split_triples)
    return triples, counts


def supervised_batches(triples, tokenizer, batch_size, seed):
    """Batches of tokenized (premise, entailment, contradiction) feature dicts, each [batch_size, length <= max_len],
    epoch after epoch without end: every epoch is one pass over the triples, shuffled anew.

    A batch never spans two epochs, so it never holds a triple twice (a premise would meet its own copy as an
    in-batch negative). The last `len(triples) % batch_size` triples of each shuffled epoch are left out: the
    original scripts train on that partial batch, but every batch of the same size splits evenly over replicas.
    """
    return (
        triples.shuffle(TRIPLE_SHUFFLE_BUFFER_SIZE, seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size, drop_remainder=True)
        .repeat()
        .map(
            lambda batch: tuple(tokenizer.trimmed(batch[key]) for key in ("premise", "entailment", "contradiction")),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .prefetch(tf.data.AUTOTUNE)
        .with_options(SPLIT_GLOBAL_BATCHES)
    )


# === Command line ===

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) != 2 or argv[1] != "prepare":
        raise errors.InputError(
            "usage: python data.py prepare [--source_dir=DIR] [--data_dir=TFDS_DIR] [--datasets=...]"
        )
    prepare(FLAGS.datasets, FLAGS.source_dir, FLAGS.data_dir)


if __name__ == "__main__":
    flags.DEFINE_string(
        "source_dir",
        None,
        "Directory with the upstream files, laid out as docs/data.md shows (default: download them with tfds).",
    )
    flags.DEFINE_string("data_dir", None, "TFDS data directory to prepare into (default: TFDS's).")
    flags.DEFINE_list("datasets", list(BUILDERS), "Datasets to prepare.")
    errors.run(main)
