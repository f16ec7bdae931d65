"""Scores a BERT checkpoint as a sentence encoder on STS sets: cosine similarity of the two sentences'
embeddings against the gold score, Pearson and Spearman (KorSTS is reported by Spearman, KLUE STS by Pearson).

    python evaluate.py --config=configs/char_bert_base.json --checkpoint=KR-BERT/model.ckpt-2000000 \\
        --vocab_path=KR-BERT/vocab_char_16424.txt --datasets=korsts:dev,korsts:test,klue_sts:dev
    python evaluate.py --checkpoint=models/RUN/best      # a run's config and vocab are in its directory
    python evaluate.py --checkpoint=klue-bert-base       # so are a Hugging Face directory's

From Python, `sts.evaluate(["korsts:dev"], checkpoint="models/RUN/best")` returns the scores.
"""

from absl import flags

import errors
import files
import model_flags
import sts

FLAGS = flags.FLAGS


def print_table(results):
    """The scores x100 as a table; "n/a" where a correlation is undefined (constant predictions)."""
    print(f"{'set':<16}{'n':>6}{'pearson':>10}{'spearman':>10}   (x100)")
    for key, scores in results.items():
        pearson, spearman = (percent(scores[name]) for name in ("pearson", "spearman"))
        print(f"{key:<16}{scores['n']:>6}{pearson:>10}{spearman:>10}")


def percent(value):
    return "n/a" if value is None else f"{value * 100:.2f}"


CHECKPOINT_FLAGS = ("checkpoint", "config", "vocab_path", "do_lower_case")


def one_model_source(values):
    """Either --saved_model alone or --checkpoint (with its own flags)."""
    if values["saved_model"]:
        return all(values[name] is None for name in CHECKPOINT_FLAGS)
    return bool(values["checkpoint"])


def define_flags():
    """The flags of the script, defined when it runs (so that its functions import with any other script's)."""
    model_flags.define_checkpoint("KR-BERT's release, one saved by training")
    model_flags.define_model_flags()
    flags.DEFINE_string(
        "saved_model", None, "A SavedModel of export.py, instead of --config, --checkpoint and --vocab_path."
    )
    model_flags.define_data_dir()
    flags.DEFINE_list("datasets", ["korsts:dev", "korsts:test", "klue_sts:dev"], "STS sets as DATASET:SPLIT.")
    model_flags.define_max_sequence_length(64, " (a SavedModel has its own)")
    model_flags.define_pooling(" (a SavedModel has its own)")
    model_flags.define_batch_size(64)
    flags.DEFINE_string(
        "results_json", None, "Write {set: {n, pearson, spearman, alignment, uniformity}} here (null: undefined)."
    )
    flags.register_multi_flags_validator(
        [*CHECKPOINT_FLAGS, "saved_model"],
        one_model_source,
        message="give either --saved_model or --checkpoint (with --config, --vocab_path, --do_lower_case if need be)",
    )


def main():
    if FLAGS.results_json:
        files.check_can_write_file(FLAGS.results_json)
    results = sts.evaluate(
        FLAGS.datasets,
        FLAGS.checkpoint,
        FLAGS.saved_model,
        FLAGS.config,
        FLAGS.vocab_path,
        FLAGS.do_lower_case,
        FLAGS.data_dir,
        FLAGS.max_sequence_length,
        FLAGS.pooling,
        FLAGS.batch_size,
        verbose=True,
    )
    print_table(results)
    if FLAGS.results_json:
        files.write_json_atomically(FLAGS.results_json, results)


if __name__ == "__main__":
    define_flags()
    errors.run(main)
