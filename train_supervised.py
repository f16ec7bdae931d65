"""Supervised SimCSE on KorNLI: the premise is the anchor, its entailment hypothesis the positive and its
contradiction hypothesis a hard negative; every other positive and hard negative of the batch is a negative too.
Defaults are the original recipe (KR-BERT char, KorNLI mnli_train + snli_train, batch 128, 3 epochs, peak
learning rate 5e-5, temperature 0.05, max length 48, evaluation on KorSTS dev and KLUE STS dev every 125 steps).

    python train_supervised.py --mixed_precision
"""

from absl import flags, logging

import data
import errors
import training_flags

FLAGS = flags.FLAGS


def define_flags():
    """The flags of the script, defined when it runs (so that its functions import with any other script's)."""
    training_flags.define_flags("supervised")
    recipe = training_flags.ORIGINAL_RECIPES["supervised"]
    flags.DEFINE_integer("epochs", recipe["epochs"], "Passes over the training triples.", lower_bound=1)
    flags.DEFINE_list("train_splits", list(recipe["train_splits"]), "KorNLI splits to build triples from.")


def main():
    strategy = training_flags.make_strategy(FLAGS)
    training_flags.wait_for_datasets(FLAGS, strategy, "kornli")
    model_files = training_flags.load_model_files(FLAGS)
    triples, counts = data.nli_triples_of_splits(FLAGS.train_splits, FLAGS.data_dir)
    for split, count in counts.items():
        logging.info("kornli:%s: %d triples", split, count)
    steps_per_epoch, left_out = divmod(sum(counts.values()), FLAGS.batch_size)
    if steps_per_epoch == 0:
        raise errors.TrainingError(
            f"{sum(counts.values())} triples in {', '.join(FLAGS.train_splits)} do not fill one batch of "
            f"{FLAGS.batch_size}"
        )
    logging.info(
        "%d steps an epoch; the last %d triples of each shuffled epoch are left out (a partial batch)",
        steps_per_epoch,
        left_out,
    )
    recipe = training_flags.make_recipe(
        FLAGS, "supervised", FLAGS.epochs * steps_per_epoch, train_splits=tuple(FLAGS.train_splits), epochs=FLAGS.epochs
    )
    training_flags.train(
        FLAGS,
        model_files,
        recipe,
        strategy,
        lambda tokenizer, seed: data.supervised_batches(triples, tokenizer, recipe.batch_size, seed),
        run_files={"data_stats.json": {"triples": counts}},
    )


if __name__ == "__main__":
    define_flags()
    errors.run(main)
