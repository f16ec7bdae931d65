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
"""

import os

from absl import flags, logging

import data
import errors
import huggingface
import model
import model_flags
import training

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "checkpoint",
    None,
    "A Google-format checkpoint prefix (one saved by training, KR-BERT's release) or its directory, or a Hugging "
    "Face BERT directory, or a Hugging Face Hub id (owner/name[@revision]).",
)
model_flags.define_flags()
flags.DEFINE_string("output", None, "Directory to write to; it must not exist yet.")
flags.DEFINE_enum("format", "savedmodel", ["savedmodel", "huggingface"], "What to write.")
flags.DEFINE_integer("max_sequence_length", 64, "Tokens per sentence, [CLS] and [SEP] included.", lower_bound=2)
flags.DEFINE_enum("pooling", "cls", model.POOLINGS, "Sentence embedding: [CLS] output, pooler output or mean.")
flags.DEFINE_string(
    "results_json", None, "evaluate.py's --results_json of this checkpoint, for the model card (Hugging Face)."
)
for name in ("checkpoint", "output"):
    flags.mark_flag_as_required(name)


def export():
    if os.path.exists(FLAGS.output):
        raise errors.InputError(f"--output {FLAGS.output} exists already: choose a new directory")
    errors.check_can_make_directory(FLAGS.output)
    results = errors.read_json(FLAGS.results_json) if FLAGS.results_json else None
    files = model_flags.model_files(FLAGS, FLAGS.checkpoint, FLAGS.max_sequence_length)
    tokenizer = data.KrBertTokenizer(
        files.vocab_path, FLAGS.max_sequence_length, files.config.vocab_size, files.lower_case
    )
    encoder = model.BertEncoder(files.config, dtype="float32")
    loaded = huggingface.load_encoder_weights(encoder, files.weights)
    if FLAGS.format == "savedmodel":
        model.save_embedder(model.sentence_embedder(encoder, FLAGS.pooling), tokenizer, FLAGS.output)
    else:
        run_config, record = training.checkpoint_run(loaded)
        card = huggingface.model_card(loaded, FLAGS.pooling, FLAGS.max_sequence_length, run_config, record, results)
        huggingface.write_directory(
            encoder, files.vocab_path, files.lower_case, FLAGS.max_sequence_length, FLAGS.pooling, FLAGS.output, card
        )
    logging.info(
        "exported %s (%s pooling, max length %d) to %s as %s",
        loaded,
        FLAGS.pooling,
        FLAGS.max_sequence_length,
        FLAGS.output,
        FLAGS.format,
    )


def main(argv):
    if len(argv) > 1:
        raise errors.InputError(f"unexpected arguments: {' '.join(argv[1:])}")
    export()


if __name__ == "__main__":
    errors.run(main)
