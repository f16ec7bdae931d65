"""The flags several scripts share, defined once: what a model is made of (--checkpoint, --config, --vocab_path,
--do_lower_case, each the model's own unless given: `model_files.find`), and --pooling, --max_sequence_length,
--data_dir and --batch_size. Only scripts and this module read flags."""

from absl import flags

import distribution
import model
import model_files
import tokenization

# princeton-nlp/SimCSE's names of the same embeddings (its --pooler_type), for users coming from there.
POOLING_HELP = (
    "Sentence embedding: cls, the [CLS] output before the pooler (princeton-nlp/SimCSE's cls_before_pooler); "
    "pooled, BERT's tanh pooler over it (their cls, with BERT's pooler as the MLP); mean, the mean of the token "
    "outputs (their avg)"
)


def define_model_flags(flag_values=flags.FLAGS, fallback=""):
    """--config, --vocab_path, --do_lower_case; `fallback` names what the script uses where the model has none."""
    flags.DEFINE_string(
        "config", None, f"Google-format bert_config.json (default: the model's own{fallback}).", flag_values=flag_values
    )
    flags.DEFINE_string(
        "vocab_path", None, f"BERT vocab file (default: the model's own{fallback}).", flag_values=flag_values
    )
    flags.DEFINE_boolean(
        "do_lower_case",
        None,
        "BERT's lower-casing and accent stripping (default: the model's own, else off).",
        flag_values=flag_values,
    )


def define_checkpoint(releases):
    """--checkpoint, the model a script reads; `releases` names the Google-format checkpoints users give most."""
    flags.DEFINE_string(
        "checkpoint",
        None,
        f"A Google-format checkpoint prefix ({releases}) or its directory, or a Hugging Face BERT directory, or a "
        "Hugging Face Hub id (owner/name[@revision]).",
    )


def define_pooling(note=""):
    """--pooling; `note` adds what the script's help needs to say."""
    flags.DEFINE_enum("pooling", "cls", model.POOLINGS, f"{POOLING_HELP}{note}.")


# The default of evaluate.py's and export.py's --max_sequence_length (model_files.run_sequence_length), for their help.
RUN_LENGTH_NOTE = (
    f" (default: the run's own, from the run_config.json of a checkpoint of a run, else "
    f"{model_files.DEFAULT_MAX_SEQUENCE_LENGTH}"
)


def define_max_sequence_length(default, note="", flag_values=flags.FLAGS):
    """--max_sequence_length with the script's default; `note` as for `define_pooling`."""
    flags.DEFINE_integer(
        "max_sequence_length",
        default,
        f"Tokens per sentence, [CLS] and [SEP] included{note}.",
        lower_bound=tokenization.MIN_SEQUENCE_LENGTH,
        flag_values=flag_values,
    )


def define_data_dir(flag_values=flags.FLAGS):
    """--data_dir of a script that reads datasets (evaluation, training)."""
    flags.DEFINE_string(
        "data_dir",
        None,
        "TFDS data directory (default: TFDS's); datasets not prepared there are downloaded.",
        flag_values=flag_values,
    )


def define_precision(default, note=""):
    """--precision of a script that encodes sentences; `note` as for `define_pooling`."""
    flags.DEFINE_enum(
        "precision",
        default,
        list(distribution.ENCODING_POLICIES),
        "What the encoder multiplies in: float32, or bfloat16 (float32 weights, LayerNorm and softmax; refused "
        "where bfloat16 is not native: a GPU before compute capability 8.0, a CPU without AVX512_BF16, AMX or Arm "
        f"BF16){note}.",
    )


def define_batch_size(default):
    """--batch_size of a script that embeds sentences (evaluate.py, search.py)."""
    flags.DEFINE_integer("batch_size", default, "Sentences embedded per batch.", lower_bound=1)


def find_model_files(values, weights):
    """model_files.ModelFiles of the model at `weights` with the flags' overrides, checked against
    --max_sequence_length and its weights (`model_files.find_checked`)."""
    return model_files.find_checked(
        weights, values.max_sequence_length, values.config, values.vocab_path, values.do_lower_case
    )
