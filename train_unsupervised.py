"""Unsupervised SimCSE: every sentence is encoded twice with independent dropout masks; the two views are
positives, the rest of the batch negatives. Defaults are the original recipe (KR-BERT char, Korean Wikipedia
sentences, batch 64, 25,000 steps, peak learning rate 3e-5, temperature 0.05, max length 64, evaluation on
KorSTS dev and KLUE STS dev every 250 steps).

    python train_unsupervised.py --mixed_precision
"""

from absl import flags

import data
import errors
import training_flags

FLAGS = flags.FLAGS


def define_flags():
    """The flags of the script, defined when it runs (so that its functions import with any other script's)."""
    training_flags.define_flags("unsupervised")
    total_steps = training_flags.ORIGINAL_RECIPES["unsupervised"]["total_steps"]
    flags.DEFINE_integer("total_steps", total_steps, "Training steps.", lower_bound=1)


def main():
    strategy = training_flags.make_strategy(FLAGS)
    training_flags.wait_for_datasets(FLAGS, strategy, "korean_wikipedia_corpus")
    model_files = training_flags.load_model_files(FLAGS)
    recipe = training_flags.make_recipe(FLAGS, "unsupervised", FLAGS.total_steps)
    sentences = data.corpus_sentences(FLAGS.data_dir)
    training_flags.train(
        FLAGS,
        model_files,
        recipe,
        strategy,
        lambda tokenizer, seed: data.unsupervised_batches(sentences, tokenizer, recipe.batch_size, seed),
    )


if __name__ == "__main__":
    define_flags()
    errors.run(main)
