"""The flags that say what a model is made of, shared by every script: --config, --vocab_path and --do_lower_case,
each the model's own unless given (`huggingface.model_files`). Only scripts and this module read flags."""

from absl import flags

import huggingface


def define_flags(flag_values=flags.FLAGS, fallback=""):
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


def model_files(values, weights, max_sequence_length, default_files=(None, None)):
    """huggingface.ModelFiles of the model at `weights` with the flags' overrides, its config checked against
    `max_sequence_length` and its weights against its config: before any data is read or model built."""
    files = huggingface.model_files(weights, values.config, values.vocab_path, values.do_lower_case, default_files)
    files.config.check_sequence_length(max_sequence_length)
    if files.weights:
        huggingface.check_weights(files.config, files.weights)
    return files
