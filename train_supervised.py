"""Supervised SimCSE on KorNLI: the premise is the anchor, its entailment hypothesis the positive and its
contradiction hypothesis a hard negative; every other positive and hard negative of the batch is a negative too.
Defaults are the original recipe (KR-BERT char, KorNLI mnli_train + snli_train, batch 128, 3 epochs, peak
learning rate 5e-5, temperature 0.05, max length 48, evaluation on KorSTS dev and KLUE STS dev every 125 steps).

    python train_supervised.py --mixed_precision
"""

import sys

from absl import app, flags, logging

import data
import training

FLAGS = flags.FLAGS
training.define_flags(batch_size=128, learning_rate=5e-5, max_sequence_length=48, evaluation_frequency=125)
flags.DEFINE_integer("epochs", 3, "Passes over the training triples.")
flags.DEFINE_list("train_splits", ["mnli_train", "snli_train"], "KorNLI splits to build triples from.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config, tokenizer, strategy = training.setup()
        triples = None
        counts = {}
        for split in FLAGS.train_splits:
            split_triples = data.nli_triples(split, FLAGS.data_dir).cache()
            # Counting makes one pass, which fills the cache the training epochs read.
            counts[split] = int(split_triples.reduce(0, lambda count, _: count + 1))
            logging.info("kornli:%s: %d triples", split, counts[split])
            triples = split_triples if triples is None else triples.concatenate(split_triples)
        steps_per_epoch = sum(counts.values()) // FLAGS.batch_size
        if steps_per_epoch == 0:
            raise data.DataError(
                f"{sum(counts.values())} triples in {', '.join(FLAGS.train_splits)} do not fill one batch of "
                f"{FLAGS.batch_size}"
            )
        training.train(
            "supervised",
            config,
            tokenizer,
            lambda seed: data.supervised_batches(triples, tokenizer, FLAGS.batch_size, seed),
            FLAGS.epochs * steps_per_epoch,
            strategy,
            recipe={"train_splits": FLAGS.train_splits, "epochs": FLAGS.epochs},
            run_files={"data_stats.json": {"triples": counts}},
        )
    except training.INPUT_ERRORS as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    app.run(main)
