"""Unsupervised SimCSE: every sentence is encoded twice with independent dropout masks; the two views are
positives, the rest of the batch negatives. Defaults are the original recipe (KR-BERT char, Korean Wikipedia
sentences, batch 64, 25,000 steps, peak learning rate 3e-5, temperature 0.05, max length 64, evaluation on
KorSTS dev and KLUE STS dev every 250 steps).

    python train_unsupervised.py --mixed_precision
"""

import sys

from absl import app, flags

import data
import training

FLAGS = flags.FLAGS
training.define_flags(batch_size=64, learning_rate=3e-5, max_sequence_length=64, evaluation_frequency=250)
flags.DEFINE_integer("total_steps", 25_000, "Training steps.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config, tokenizer, strategy = training.setup()
        sentences = data.corpus_sentences(FLAGS.data_dir)
        training.train(
            "unsupervised",
            config,
            tokenizer,
            lambda seed: data.unsupervised_batches(sentences, tokenizer, FLAGS.batch_size, seed),
            FLAGS.total_steps,
            strategy,
        )
    except training.INPUT_ERRORS as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    app.run(main)
