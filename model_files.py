"""What an encoder is made of, wherever it comes from (a Hugging Face Hub id, a Hugging Face directory, a
Google-format checkpoint): its config, vocab, lower-casing and weights found and checked against each other before
anything is built, and the encoder and tokenizer made from them.
"""

import dataclasses
import os

import errors
import files
import google_checkpoint
import hub
import huggingface
import model
import run_directory
import tokenization

# What training writes into a run directory besides the checkpoints, so a checkpoint there needs nothing else.
GOOGLE_CONFIG_FILE = "bert_config.json"
# KR-BERT character's TensorFlow release (snunlp/KR-BERT) names its config and vocab otherwise: unpacked into one
# directory, its checkpoint lies beside these two (docs/training.md, "KR-BERT's TensorFlow release").
KR_BERT_RELEASE_FILES = ("bert_config_char16424.json", "vocab_char_16424.txt")
# Tokens per sentence of a model that is not a run's: the original work's evaluation length.
DEFAULT_MAX_SEQUENCE_LENGTH = 64


def run_sequence_length(weights):
    """The max_sequence_length the run that saved the checkpoint `weights` trained and evaluated at (its
    run_config.json), or DEFAULT_MAX_SEQUENCE_LENGTH for weights that are not a run's (a Hub id, a Hugging Face
    directory, a release, a path that is not found)."""
    local = weights and not hub.is_hub_id(weights) and files.exists_as_path_or_prefix(weights)
    if not local or huggingface.is_huggingface_directory(weights):
        return DEFAULT_MAX_SEQUENCE_LENGTH
    try:
        prefix = google_checkpoint.resolve_checkpoint(weights)
    except errors.CheckpointError:  # said again, in full, where the checkpoint is read
        return DEFAULT_MAX_SEQUENCE_LENGTH
    run_config, _ = run_directory.checkpoint_run(prefix)
    return run_config["max_sequence_length"] if run_config else DEFAULT_MAX_SEQUENCE_LENGTH


def check_weights(config, weights):
    """Raises errors.CheckpointError unless the weights at `weights` (a Hugging Face directory or a Google-format
    checkpoint) hold every tensor `config` makes, in its shape: read from the file's header before a model is built,
    so a config that does not fit its weights never builds a model of its size."""
    if huggingface.is_huggingface_directory(weights):
        path = huggingface.weights_path(weights)
        with huggingface.open_weights(path, huggingface.weight_bytes(config)) as (shapes, _):
            huggingface.tensor_names(path, shapes, config)
    else:
        google_checkpoint.open_checkpoint(weights, config)


@dataclasses.dataclass(frozen=True)
class ModelFiles:
    """What an encoder is made of: its config, its vocab, whether its tokenization lower-cases, and its weights
    (a local Hugging Face directory or Google-format checkpoint; None: random initialisation)."""

    config: model.BertConfig
    vocab_path: str
    lower_case: bool
    weights: str | None


def find(weights, config_path=None, vocab_path=None, lower_case=None):
    """The config, vocab, lower-casing and local weights of the model at `weights`: each as given, else the
    model's own.

    A Hub id is downloaded first (`hub.download_from_hub`). A Hugging Face directory brings all three. A Google-format
    checkpoint brings the bert_config.json, vocab.txt and tokenizer_config.json beside it (or, for a run's `best/`,
    in the run directory), as training writes them and Google's releases ship the first two, else KR-BERT's release
    files beside it (KR_BERT_RELEASE_FILES); without a tokenizer_config.json it does not lower-case.

    Args:
        weights: a Hub id, a Hugging Face directory, a checkpoint prefix or its directory, or None (random
            initialisation).
        config_path: a Google-format bert_config.json, instead of the model's own.
        vocab_path: a vocab file, instead of the model's own.
        lower_case: BERT's do_lower_case, instead of the model's own.
    """
    if hub.is_hub_id(weights):
        if lower_case is None:
            lower_case = hub.HUB_LOWER_CASE.get(weights.partition("@")[0])
        weights = hub.download_from_hub(weights)
    if huggingface.is_huggingface_directory(weights):
        config = model.BertConfig.from_json_file(config_path) if config_path else huggingface.read_config(weights)
        vocab_path = vocab_path or os.path.join(weights, huggingface.VOCAB_FILE)
        lower_case = huggingface.read_lower_case(weights) if lower_case is None else lower_case
        return ModelFiles(config, vocab_path, lower_case, weights)
    if weights and not files.exists_as_path_or_prefix(weights):
        # Said before the config is looked for beside it: a mistyped path is not a model without a config.
        raise errors.CheckpointError(f"checkpoint not found: {weights} (expected {weights}.index and its data files)")
    directory = checkpoint_directory(weights)
    if directory:
        config_path = config_path or os.path.join(directory, GOOGLE_CONFIG_FILE)
        vocab_path = vocab_path or os.path.join(directory, huggingface.VOCAB_FILE)
        if lower_case is None and files.exists(os.path.join(directory, huggingface.TOKENIZER_CONFIG_FILE)):
            lower_case = huggingface.read_lower_case(directory)
    elif weights:
        release_config, release_vocab = (os.path.join(checkpoint_parent(weights), n) for n in KR_BERT_RELEASE_FILES)
        config_path = config_path or (release_config if files.exists(release_config) else None)
        vocab_path = vocab_path or (release_vocab if files.exists(release_vocab) else None)
    if not config_path or not vocab_path:
        raise errors.ConfigError(
            f"{weights or 'a model from random initialisation'} has no {GOOGLE_CONFIG_FILE} and "
            f"{huggingface.VOCAB_FILE} (nor KR-BERT's {' and '.join(KR_BERT_RELEASE_FILES)}) beside it: give its "
            "config and vocab"
        )
    return ModelFiles(model.BertConfig.from_json_file(config_path), vocab_path, bool(lower_case), weights)


def checkpoint_directory(weights):
    """The directory with the bert_config.json and vocab.txt of the checkpoint at `weights`, or None."""
    if not weights:
        return None
    directory = checkpoint_parent(weights)
    for candidate in (directory, files.parent(directory)):
        needed = (GOOGLE_CONFIG_FILE, huggingface.VOCAB_FILE)
        if candidate and all(files.exists(os.path.join(candidate, name)) for name in needed):
            return candidate
    return None


def checkpoint_parent(weights):
    """The directory a checkpoint prefix lies in, or the checkpoint directory itself."""
    return weights if files.isdir(weights) else files.parent(weights)


def resolve_weights(weights):
    """What `load_encoder_weights` will read, checked before anything is built: a model.safetensors or a
    checkpoint prefix."""
    if huggingface.is_huggingface_directory(weights):
        return huggingface.weights_path(weights)
    return google_checkpoint.resolve_checkpoint(weights)


def load_encoder_weights(encoder, weights):
    """Loads a Hugging Face directory or a Google-format checkpoint into `encoder`; returns what was read."""
    if huggingface.is_huggingface_directory(weights):
        return huggingface.load_weights(encoder, weights)
    return google_checkpoint.load_checkpoint(encoder, weights)


def find_checked(weights, max_sequence_length, config_path=None, vocab_path=None, lower_case=None):
    """`find`, the config checked against `max_sequence_length` and the weights against the config: before any
    data is read or model built."""
    files = find(weights, config_path, vocab_path, lower_case)
    files.config.check_sequence_length(max_sequence_length)
    if files.weights:
        check_weights(files.config, files.weights)
    return files


def load_encoder(files, max_sequence_length, policy="float32"):
    """(tokenizer, encoder with the weights loaded, what was read) of `ModelFiles` `files`, for evaluation and
    export; the encoder computes in the Keras dtype policy `policy` (distribution.encoding_policy), its weights
    float32."""
    tokenizer = tokenization.KrBertTokenizer(
        files.vocab_path, max_sequence_length, files.config.vocab_size, files.lower_case
    )
    encoder = model.BertEncoder(files.config, dtype=policy)
    return tokenizer, encoder, load_encoder_weights(encoder, files.weights)
