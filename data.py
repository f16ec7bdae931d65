"""The tfds-korean datasets: prepared with tfds (from the network or from local copies), read with tfds, and made
into training batches with tf.data.

A dataset that is not prepared in the data directory is downloaded and prepared on first use, as `tfds.load`
does: the tfds-korean builders' own URLs, checksums verified by tfds. Or ahead of time:

    python data.py prepare --data_dir=~/tensorflow_datasets

Without internet, the same builders run with their downloads served from local copies of the upstream files:

    python data.py prepare --source_dir=SOURCE --data_dir=~/tensorflow_datasets

A split whose source file is absent is left out (with a warning naming the file); asking for it later
fails with an error that says which file to provide.
"""

import os
import re
import urllib.parse

# What tfds downloads with: a reachability check through it sees the same proxies (HTTPS_PROXY) and CA bundle
# (REQUESTS_CA_BUNDLE) as the download.
import requests
import tensorflow as tf
import tensorflow_datasets as tfds
import tfds_korean.klue_sts
import tfds_korean.klue_tc
import tfds_korean.korean_wikipedia_corpus
import tfds_korean.kornli
import tfds_korean.korquad
import tfds_korean.korsts
import tfds_korean.nsmc
import tfds_korean.question_pair
from absl import flags, logging

import errors
import files
import source_files

BUILDERS = {
    "korsts": tfds_korean.korsts.Korsts,
    "klue_sts": tfds_korean.klue_sts.KlueSts,
    "kornli": tfds_korean.kornli.Kornli,
    "korean_wikipedia_corpus": tfds_korean.korean_wikipedia_corpus.KoreanWikipediaCorpus,
    "nsmc": tfds_korean.nsmc.Nsmc,
    "klue_tc": tfds_korean.klue_tc.KlueTc,
    "question_pair": tfds_korean.question_pair.QuestionPair,
    # Its first config, tfds' default: KorQuAD 1.0.
    "korquad": tfds_korean.korquad.Korquad,
}
# The gold similarity feature of each STS dataset (both on a 0-5 scale).
STS_SCORE_FEATURES = {"korsts": "score", "klue_sts": "label"}


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


def _has_source_files(name, source_dir):
    return any(files.exists(os.path.join(source_dir, path)) for path in source_files.SOURCE_FILES[name].values())


def _offline_builder(name, source_dir):
    """The tfds-korean builder `name`, its downloads served from `source_dir`, absent splits left out."""
    registered = BUILDERS[name]
    available = {}
    for split, relative in source_files.SOURCE_FILES[name].items():
        if files.exists(os.path.join(source_dir, relative)):
            source_files.check(name, os.path.join(source_dir, relative))
            available[split] = relative
        else:
            logging.warning("%s: %s is absent from %s, so split '%s' is left out", name, relative, source_dir, split)
    if not available:
        raise errors.DataError(
            f"{name}: none of {', '.join(source_files.SOURCE_FILES[name].values())} is in {source_dir}"
        )

    class OfflineBuilder(registered, skip_registration=True):
        def _split_generators(self, dl_manager):
            generators = super()._split_generators(_LocalDownloads(dl_manager, source_dir, name))
            return {split: generator for split, generator in generators.items() if split in available}

    OfflineBuilder.name = registered.name
    return OfflineBuilder


def prepare(names, source_dir, data_dir):
    """Builds each dataset in `names` into `data_dir`: from the upstream files under `source_dir`, or, when
    `source_dir` is None, downloaded by tfds (`download_and_prepare`). `names` None: every dataset, but, from
    `source_dir`, those with none of their files there (a warning names them)."""
    if source_dir is not None and not files.isdir(source_dir):
        raise errors.DataError(f"--source_dir {source_dir} is not a directory")
    if data_dir:
        files.check_can_make_directory(data_dir)
    if names is None:
        names = [name for name in BUILDERS if source_dir is None or _has_source_files(name, source_dir)]
        for name in sorted(BUILDERS.keys() - set(names)):
            logging.warning("%s: none of its files is in %s, so it is left out", name, source_dir)
        if not names:
            raise errors.DataError(f"none of the datasets' files is in {source_dir} (laid out as docs/data.md shows)")
    for name in names:
        if name not in BUILDERS:
            raise errors.DataError(f"unknown dataset '{name}' (choose from {', '.join(BUILDERS)})")
    for name in names:
        if source_dir is None:
            builder = download_and_prepare(name, data_dir)
        else:
            builder = _offline_builder(name, source_dir)(data_dir=data_dir)
            prepare_leaving_nothing_on_failure(builder)
        splits = ", ".join(f"{split}: {info.num_examples}" for split, info in builder.info.splits.items())
        logging.info("prepared %s in %s (%s)", name, builder.data_dir, splits)


# === Preparation from the network ===

# Seconds a dataset's host has to answer before the network counts as unreachable. tfds itself retries a failed
# connection 10 times with exponential back-off (over 3 minutes), so an offline machine is told at once instead.
REACHABILITY_TIMEOUT = 30

# What a failed download raises: requests' errors (OSError), tfds' for an HTTP error and a wrong checksum.
DOWNLOAD_ERRORS = (OSError, tfds.download.DownloadError, tfds.download.download_manager.NonMatchingChecksumError)


def upstream_urls(name):
    """The URLs the tfds-korean builder `name` downloads: those its registered checksums list for the files of
    SOURCE_FILES (korquad's also list KorQuAD 2.1's, which the 1.0 config never downloads)."""
    names = {path.rsplit("/", 1)[-1] for path in source_files.SOURCE_FILES[name].values()}
    return sorted(url for url in BUILDERS[name].url_infos if url.rsplit("/", 1)[-1] in names)


def offline_instructions(name, data_dir_root):
    upstream = ", ".join(source_files.SOURCE_FILES[name].values())
    return (
        f"`python data.py prepare --source_dir=DIR --data_dir={data_dir_root} --datasets={name}` "
        f"with the upstream files in DIR ({upstream})"
    )


def check_reachable(name, data_dir_root):
    """Raises errors.DataError at once when a URL of `name` cannot be fetched: one HEAD request each, no retries. A
    redirect is not followed (GitHub sends release downloads to URLs signed for GET alone): an answer is enough."""
    for url in upstream_urls(name):
        try:
            response = requests.head(url, allow_redirects=False, timeout=REACHABILITY_TIMEOUT)
        except requests.RequestException as error:
            host = urllib.parse.urlsplit(url).hostname
            raise errors.DataError(
                f"{name} is not prepared in {data_dir_root} and cannot be downloaded: {host} is unreachable "
                f"({type(error).__name__}). Connect to the internet, or prepare it offline: "
                f"{offline_instructions(name, data_dir_root)}"
            ) from error
        if response.status_code in (404, 410):
            raise errors.DataError(
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
    try:
        prepare_leaving_nothing_on_failure(builder)
    except DOWNLOAD_ERRORS as error:
        # A checksum mismatch is several lines naming the file it was downloaded to, which is gone now.
        message = re.sub(r", downloaded to .*?, has", " has", errors.first_line(error)).rstrip(":")
        raise errors.DataError(
            f"downloading {name} failed, nothing was kept: {message}. Rerun, or prepare it offline: "
            f"{offline_instructions(name, root)}"
        ) from error
    return builder


def prepare_leaving_nothing_on_failure(builder):
    """`builder.download_and_prepare()`; if it fails or is interrupted, whatever it added to the data directory
    (downloads, extractions, the dataset's directory) is removed."""
    root, name = builder.data_dir_root, builder.name
    root_existed = tf.io.gfile.exists(root)
    before = _entries_a_preparation_adds_to(root, name)
    try:
        builder.download_and_prepare()
    except BaseException:
        if not root_existed:
            if tf.io.gfile.exists(root):
                tf.io.gfile.rmtree(root)
        else:
            for path in _entries_a_preparation_adds_to(root, name) - before:
                if tf.io.gfile.isdir(path):
                    tf.io.gfile.rmtree(path)
                elif tf.io.gfile.exists(path):
                    tf.io.gfile.remove(path)
        raise


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
    if name not in source_files.SOURCE_FILES:
        raise errors.DataError(f"unknown dataset '{name}' (choose from {', '.join(source_files.SOURCE_FILES)})")
    if split not in source_files.SOURCE_FILES[name]:
        raise errors.DataError(
            f"unknown split '{split}' of {name} (choose from {', '.join(source_files.SOURCE_FILES[name])})"
        )
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        logging.info("%s is not prepared in %s: downloading and preparing it", name, builder.data_dir_root)
        builder = download_and_prepare(name, data_dir)
    if split not in builder.info.splits:
        raise errors.DataError(
            f"{name}:{split} was not prepared in {builder.data_dir_root} because its source file was absent: "
            f"put {source_files.SOURCE_FILES[name][split]} under --source_dir and rerun "
            f"`python data.py prepare --datasets={name}`"
        )
    return tfds.load(name, split=split, data_dir=data_dir, download=False)


def sts_pairs(name, split, data_dir=None):
    """An STS split as a dataset of {"sentence1", "sentence2", "score"} (gold score on a 0-5 scale)."""
    if name not in STS_SCORE_FEATURES:
        raise errors.DataError(f"unknown STS dataset '{name}' (choose from {', '.join(STS_SCORE_FEATURES)})")
    score = STS_SCORE_FEATURES[name]
    return load(name, split, data_dir).map(
        lambda example: {
            "sentence1": example["sentence1"],
            "sentence2": example["sentence2"],
            "score": example[score],
        }
    )


# === Transfer tasks: evaluation beyond STS ===

# The text and class features of each classification dataset (nsmc's label is 0 negative, 1 positive; klue_tc's
# is the topic's name).
CLASSIFICATION_FEATURES = {"nsmc": ("document", "label"), "klue_tc": ("title", "label")}


def labelled_sentences(name, split, data_dir=None):
    """A classification split as a dataset of {"sentence", "label"}, the label the class as a string."""
    if name not in CLASSIFICATION_FEATURES:
        raise errors.DataError(
            f"unknown classification dataset '{name}' (choose from {', '.join(CLASSIFICATION_FEATURES)})"
        )
    text, label = CLASSIFICATION_FEATURES[name]
    examples = load(name, split, data_dir)
    as_string = tf.identity if examples.element_spec[label].dtype == tf.string else tf.strings.as_string
    return examples.map(lambda example: {"sentence": example[text], "label": as_string(example[label])})


def question_pairs(split, data_dir=None):
    """question_pair as a dataset of {"sentence1", "sentence2", "label"}: label 1 where the two questions ask the same
    thing, which upstream marks is_duplicate 0 (759 of the 760 pairs of identical questions in its train split)."""
    return load("question_pair", split, data_dir).map(
        lambda pair: {"sentence1": pair["question1"], "sentence2": pair["question2"], "label": 1 - pair["is_duplicate"]}
    )


def questions_and_passages(split, data_dir=None):
    """KorQuAD 1.0 as a dataset of {"question", "passage"}: each question with the paragraph it was asked on."""
    return load("korquad", split, data_dir).map(lambda qa: {"question": qa["question"], "passage": qa["context"]})


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
        raise errors.DataError("korean_wikipedia_corpus:train has no sentences to train on")
    return sentences


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
        raise errors.DataError("no KorNLI split given (e.g. mnli_train)")
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


def main():
    prepare(FLAGS.datasets, FLAGS.source_dir, FLAGS.data_dir)


def define_flags():
    """The flags of `python data.py prepare`, defined when it runs (so that the module imports with any script)."""
    flags.DEFINE_string(
        "source_dir",
        None,
        "Directory with the upstream files, laid out as docs/data.md shows (default: download them with tfds).",
    )
    flags.DEFINE_string("data_dir", None, "TFDS data directory to prepare into (default: TFDS's).")
    flags.DEFINE_list(
        "datasets", None, "Datasets to prepare (default: all; from --source_dir, those with files there)."
    )


if __name__ == "__main__":
    define_flags()
    errors.run(main, command="prepare")
