"""What evaluate.py runs, callable from Python: a model loaded once and scored on STS sets (sts.py) and on transfer
tasks (transfer.py), every set read before the model is loaded, so a missing split fails first.

    >>> import evaluation
    >>> results = evaluation.evaluate(["korsts:dev", "question_pair:test"], checkpoint="models/RUN/best")
"""

import tensorflow as tf

import data
import distribution
import errors
import model
import model_files
import saved_model
import sts
import tokenization
import transfer


def parse_sets(specs):
    """["korsts:dev", ...] -> [("korsts", "dev"), ...], each dataset an STS set or a transfer task."""
    if not specs:
        raise errors.DataError("no set given (e.g. korsts:dev)")
    sets = []
    for spec in specs:
        name, _, split = spec.partition(":")
        if not name or not split:
            raise errors.DataError(f"'{spec}' is not DATASET:SPLIT (e.g. korsts:dev)")
        if name not in data.STS_SCORE_FEATURES and name not in transfer.KINDS:
            known = ", ".join([*data.STS_SCORE_FEATURES, *transfer.KINDS])
            raise errors.DataError(f"unknown dataset '{name}' in {spec} (choose from {known})")
        sets.append((name, split))
    return sets


def kind(key):
    """ "sts", or the transfer task's kind (transfer.KINDS), of the set "DATASET:SPLIT"."""
    name = key.partition(":")[0]
    return "sts" if name in data.STS_SCORE_FEATURES else transfer.KINDS[name]


def sampled_sts_pairs(name, split, data_dir, max_examples):
    """`data.sts_pairs`, or a seeded sample of `max_examples` of them (`transfer.sample`)."""
    pairs = data.sts_pairs(name, split, data_dir)
    if max_examples is None:
        return pairs
    return tf.data.Dataset.from_tensor_slices(transfer.sample(transfer.columns(pairs), max_examples))


def evaluate(
    datasets,
    checkpoint=None,
    saved_model_dir=None,
    config_path=None,
    vocab_path=None,
    lower_case=None,
    data_dir=None,
    max_sequence_length=None,
    pooling="cls",
    batch_size=64,
    max_examples=None,
    passage_length=None,
    precision=None,
    verbose=False,
):
    """{"name:split": {metric: value}} of the model on each set in `datasets` ("korsts:dev", "nsmc:test", ...).

    Args:
        datasets: sets as "DATASET:SPLIT": STS sets (korsts, klue_sts) and transfer tasks (transfer.KINDS).
        checkpoint: a Google-format checkpoint prefix or its directory, a Hugging Face directory or a Hub id;
            its config, vocab and lower-casing are its own unless `config_path`, `vocab_path`, `lower_case` say.
        saved_model_dir: a SavedModel of export.py instead (its own tokenizer, length and pooling, for everything).
        data_dir: the TFDS data directory (None: TFDS's).
        max_sequence_length: tokens per sentence (a checkpoint's); None: the run's own for a checkpoint of a run
            (its run_config.json), else model_files.DEFAULT_MAX_SEQUENCE_LENGTH.
        pooling, batch_size: how sentences are encoded (a checkpoint's).
        max_examples: score at most this many examples of each set, a seeded sample (None: all).
        passage_length: tokens of each retrieval paragraph (None: the model's max_position_embeddings).
        precision: what a checkpoint's encoder computes in, "float32" (None) or "bfloat16" (where it is native:
            distribution.encoding_policy); a SavedModel computes in the precision it was exported in.
        verbose: print what is evaluated and progress bars.
    """
    if max_examples is not None and max_examples < 1:
        raise errors.InputError(f"max_examples is {max_examples}: score at least 1 example of each set")
    if saved_model_dir is None:
        precision = precision or "float32"
        policy = distribution.encoding_policy(precision)  # refused before anything is read
    sts_sets, tasks = {}, {}
    for name, split in parse_sets(datasets):
        if name in data.STS_SCORE_FEATURES:
            sts_sets[f"{name}:{split}"] = sampled_sts_pairs(name, split, data_dir, max_examples)
        else:
            tasks[f"{name}:{split}"] = transfer.load(name, split, data_dir, max_examples)
    if saved_model_dir:
        embedder = saved_model.load_saved_embedder(saved_model_dir)
        tokenizer = passage_tokenizer = tf.identity  # the SavedModel tokenizes inside: it takes the sentences
        max_sequence_length = passage_length = embedder.max_sequence_length
        precision = embedder.precision
        described = f"SavedModel {saved_model_dir}, max length {max_sequence_length or 'not recorded'}, {precision}"
    else:
        max_sequence_length = max_sequence_length or model_files.run_sequence_length(checkpoint)
        found = model_files.find_checked(checkpoint, max_sequence_length, config_path, vocab_path, lower_case)
        passage_length = passage_length or found.config.max_position_embeddings
        found.config.check_sequence_length(passage_length)
        bert_tokenizer, encoder, loaded = model_files.load_encoder(found, max_sequence_length, policy)
        tokenizer = bert_tokenizer.trimmed
        passage_tokenizer = tokenization.KrBertTokenizer(
            found.vocab_path, passage_length, found.config.vocab_size, found.lower_case
        ).trimmed
        embedder = model.sentence_embedder(encoder, pooling)
        described = f"checkpoint {loaded}, {pooling} pooling, max length {max_sequence_length}, {precision}"
    if verbose:
        print(described)
    results = sts.StsEvaluator(sts_sets, tokenizer, embedder, batch_size)(verbose) if sts_sets else {}
    for scores in results.values():
        scores |= {"max_examples": max_examples, "max_sequence_length": max_sequence_length, "precision": precision}
    encode = tf.function(embedder, reduce_retracing=True)

    def embedding(sentences_tokenizer):
        return lambda sentences, verbose: sts.embed_in_order(
            sentences, lambda batch: encode(sentences_tokenizer(batch)), batch_size, verbose
        )

    for key, task in tasks.items():
        if verbose:
            print(f"{key}: {task.kind}")
        results[key] = task.score(embedding(tokenizer), embedding(passage_tokenizer), verbose)
        results[key] |= {"max_sequence_length": max_sequence_length, "precision": precision}
        if task.kind == "retrieval":
            results[key]["passage_length"] = passage_length
    return {f"{name}:{split}": results[f"{name}:{split}"] for name, split in parse_sets(datasets)}
