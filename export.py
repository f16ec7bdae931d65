"""Exports a checkpoint as a self-contained SavedModel: raw Korean sentences in, L2-normalised embeddings out.

    python export.py --config=configs/char_bert_base.json --checkpoint=models/RUN/best \\
        --vocab_path=kr-bert-char/vocab_char_16424.txt --output=exported/krbert-simcse

The `serving_default` signature takes a 1-D string tensor `sentences` and returns
{"embeddings": float32 [batch, hidden]}. Tokenization runs inside the graph and the vocab is an asset of the
SavedModel, so the directory loads with `tf.saved_model.load` (or serves with TF Serving) on its own.
"""

import os

from absl import flags, logging

import data
import errors
import model

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Google-format bert_config.json.")
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix (Google format or saved by training), or its directory.")
flags.DEFINE_string("vocab_path", None, "BERT vocab file, e.g. vocab_char_16424.txt.")
flags.DEFINE_string("output", None, "Directory to write the SavedModel to; it must not exist yet.")
flags.DEFINE_integer("max_sequence_length", 64, "Tokens per sentence, [CLS] and [SEP] included.", lower_bound=2)
flags.DEFINE_enum("pooling", "cls", model.POOLINGS, "Sentence embedding: [CLS] output, pooler output or mean.")
for name in ("config", "checkpoint", "vocab_path", "output"):
    flags.mark_flag_as_required(name)


def export():
    if os.path.exists(FLAGS.output):
        raise errors.InputError(f"--output {FLAGS.output} exists already: choose a new directory")
    errors.check_can_make_directory(FLAGS.output)
    config = model.BertConfig.from_json_file(FLAGS.config)
    config.check_sequence_length(FLAGS.max_sequence_length)
    tokenizer = data.KrBertTokenizer(FLAGS.vocab_path, FLAGS.max_sequence_length, config.vocab_size)
    encoder = model.BertEncoder(config, dtype="float32")
    prefix = model.load_checkpoint(encoder, FLAGS.checkpoint)
    model.save_embedder(model.sentence_embedder(encoder, FLAGS.pooling), tokenizer, FLAGS.output)
    logging.info(
        "exported %s (%s pooling, max length %d) to %s", prefix, FLAGS.pooling, FLAGS.max_sequence_length, FLAGS.output
    )


def main(argv):
    if len(argv) > 1:
        raise errors.InputError(f"unexpected arguments: {' '.join(argv[1:])}")
    export()


if __name__ == "__main__":
    errors.run(main)
