"""Exports a checkpoint as a self-contained SavedModel (raw Korean sentences in, L2-normalised embeddings out), or
as a Hugging Face directory that transformers and sentence-transformers load.

    python export.py --checkpoint=models/RUN/best --output=exported/krbert-simcse
    python export.py --checkpoint=models/RUN/best --format=huggingface --output=exported/krbert-simcse-hf \\
        --results_json=results.json

SavedModel: the `serving_default` signature takes a 1-D string tensor `sentences` and returns
{"embeddings": float32 [batch, hidden]}. Tokenization runs inside the graph and the vocab is an asset of the
SavedModel, so the directory loads with `tf.saved_model.load` (or serves with TF Serving) on its own.

Hugging Face: `transformers.BertModel.from_pretrained(DIR)` loads the encoder and
`sentence_transformers.SentenceTransformer(DIR)` the sentence encoder with its pooling; README.md is a model
card with the run's recipe and scores (its eval_history.jsonl record, and evaluate.py's --results_json if given).

From Python: `export("models/RUN/best", "exported/krbert-simcse")`.
"""

from absl import flags, logging

import distribution
import errors
import files
import huggingface
import model
import model_files
import model_flags
import run_directory
import saved_model

FLAGS = flags.FLAGS


def export(
    checkpoint,
    output,
    output_format="savedmodel",
    config_path=None,
    vocab_path=None,
    lower_case=None,
    max_sequence_length=None,
    pooling="cls",
    results_json=None,
    precision="float32",
):
    """Writes the model at `checkpoint` to the new directory `output` as a SavedModel (`output_format`
    "savedmodel") or a Hugging Face directory ("huggingface", its model card with the scores of `results_json`,
    evaluate.py's); returns what was read. `checkpoint`, `config_path`, `vocab_path`, `lower_case` and
    `max_sequence_length` (None: the run's own, else 64) are as for `evaluation.evaluate`; the SavedModel records its
    length (`saved_model.load_saved_embedder`), the Hugging Face directory in its tokenizer and sentence-transformers
    configs. The SavedModel computes in `precision` ("float32" or "bfloat16", where native) and records it; a Hugging
    Face directory holds float32 weights, whatever precision its user loads them in."""
    files.check_new_directory(output)
    if output_format == "huggingface" and precision != "float32":
        raise errors.InputError(
            f"precision {precision} is the SavedModel's: a Hugging Face directory holds float32 weights (load them "
            "in bfloat16 with transformers' torch_dtype=torch.bfloat16)"
        )
    policy = distribution.encoding_policy(precision)  # bfloat16 refused where it is not native, before anything is read
    max_sequence_length = max_sequence_length or model_files.run_sequence_length(checkpoint)
    results = files.read_json(results_json) if results_json else None
    found = model_files.find_checked(checkpoint, max_sequence_length, config_path, vocab_path, lower_case)
    tokenizer, encoder, loaded = model_files.load_encoder(found, max_sequence_length, policy)
    if output_format == "savedmodel":
        saved_model.save_embedder(model.sentence_embedder(encoder, pooling), tokenizer, output, precision)
    else:
        run_config, record = run_directory.checkpoint_run(loaded)
        card = huggingface.model_card(loaded, pooling, max_sequence_length, run_config, record, results)
        huggingface.write_directory(
            encoder, found.vocab_path, found.lower_case, max_sequence_length, pooling, output, card
        )
    logging.info(
        "exported %s (%s pooling, max length %d, %s) to %s as %s",
        loaded,
        pooling,
        max_sequence_length,
        precision,
        output,
        output_format,
    )
    return loaded


def define_flags():
    """The flags of the script, defined when it runs (so that its functions import with any other script's)."""
    model_flags.define_checkpoint("one saved by training, KR-BERT's release")
    model_flags.define_model_flags()
    flags.DEFINE_string("output", None, "Directory to write to; it must not exist yet.")
    flags.DEFINE_enum("format", "savedmodel", ["savedmodel", "huggingface"], "What to write.")
    model_flags.define_max_sequence_length(None, model_flags.RUN_LENGTH_NOTE + ")")
    model_flags.define_pooling()
    model_flags.define_precision("float32", " (the SavedModel's; it records it)")
    flags.DEFINE_string(
        "results_json", None, "evaluate.py's --results_json of this checkpoint, for the model card (Hugging Face)."
    )
    for name in ("checkpoint", "output"):
        flags.mark_flag_as_required(name)


def main():
    export(
        FLAGS.checkpoint,
        FLAGS.output,
        FLAGS.format,
        FLAGS.config,
        FLAGS.vocab_path,
        FLAGS.do_lower_case,
        FLAGS.max_sequence_length,
        FLAGS.pooling,
        FLAGS.results_json,
        FLAGS.precision,
    )


if __name__ == "__main__":
    define_flags()
    errors.run(main)
