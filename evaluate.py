"""Scores a BERT checkpoint as a sentence encoder: on STS sets, the cosine similarity of the two sentences'
embeddings against the gold score, Pearson and Spearman (KorSTS is reported by Spearman, KLUE STS by Pearson); on
transfer tasks, classification, pair classification and retrieval scores as MTEB computes them (transfer.py).

    python evaluate.py --checkpoint=KR-BERT-char16424/model.ckpt-2000000 \\
        --datasets=korsts:dev,korsts:test,klue_sts:dev  # KR-BERT's TensorFlow release (docs/training.md)
    python evaluate.py --checkpoint=models/RUN/best      # a run's config and vocab are in its directory
    python evaluate.py --checkpoint=models/RUN/best --datasets=nsmc:test,klue_tc:dev,question_pair:test,korquad:dev

From Python, `evaluation.evaluate(["korsts:dev"], checkpoint="models/RUN/best")` returns the scores.
"""

from absl import flags

import errors
import evaluation
import files
import model_flags
import tokenization

FLAGS = flags.FLAGS

# Each kind's columns of the printed table: (heading, the metric, the metric's standard deviation over experiments).
TABLE_COLUMNS = {
    "sts": (("pearson", "pearson", None), ("spearman", "spearman", None)),
    "classification": (("accuracy", "accuracy", "accuracy_std"), ("macro-F1", "macro_f1", "macro_f1_std")),
    "pair classification": (("AP", "average_precision", None), ("accuracy", "accuracy", None)),
    "retrieval": (("nDCG@10", "ndcg_at_10", None), ("MRR@10", "mrr_at_10", None), ("R@1", "recall_at_1", None),
                  ("R@10", "recall_at_10", None)),
}  # fmt: skip


def print_table(results):
    """The scores x100, one table per kind of set; "n/a" where a metric is undefined (constant predictions)."""
    kinds = {}
    for key in results:
        kinds.setdefault(evaluation.kind(key), []).append(key)
    for kind, keys in kinds.items():
        columns = TABLE_COLUMNS[kind]
        print(f"{'set':<26}{'n':>7}" + "".join(f"{heading:>16}" for heading, _, _ in columns) + "   (x100)")
        for key in keys:
            scores = results[key]
            cells = [percent(scores[name], scores.get(spread) if spread else None) for _, name, spread in columns]
            print(f"{key:<26}{scores['n']:>7}" + "".join(f"{cell:>16}" for cell in cells))


def percent(value, spread=None):
    if value is None:
        return "n/a"
    return f"{value * 100:.2f}" + ("" if spread is None else f" ± {spread * 100:.2f}")


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
    flags.DEFINE_list(
        "datasets",
        ["korsts:dev", "korsts:test", "klue_sts:dev"],
        "Sets as DATASET:SPLIT: STS (korsts, klue_sts) and transfer tasks (nsmc, klue_tc, question_pair, korquad).",
    )
    model_flags.define_max_sequence_length(None, model_flags.RUN_LENGTH_NOTE + "; a SavedModel has its own)")
    model_flags.define_pooling(" (a SavedModel has its own)")
    model_flags.define_batch_size(64)
    model_flags.define_precision(None, " (default: float32; a SavedModel has its own)")
    flags.DEFINE_integer(
        "max_examples", None, "Score at most this many examples of each set, a seeded sample (default: all).",
        lower_bound=1,
    )  # fmt: skip
    flags.DEFINE_integer(
        "passage_length", None, "Tokens of each retrieval paragraph (default: the model's max_position_embeddings; "
        "a SavedModel has its own).", lower_bound=tokenization.MIN_SEQUENCE_LENGTH,
    )  # fmt: skip
    flags.DEFINE_string(
        "results_json", None, "Write {set: {n, metric: value, ...}} here (null: undefined); docs/evaluation.md."
    )
    flags.register_multi_flags_validator(
        [*CHECKPOINT_FLAGS, "saved_model"],
        one_model_source,
        message="give either --saved_model or --checkpoint (with --config, --vocab_path, --do_lower_case if need be)",
    )


def main():
    if FLAGS.results_json:
        files.check_can_write_file(FLAGS.results_json)
    results = evaluation.evaluate(
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
        FLAGS.max_examples,
        FLAGS.passage_length,
        FLAGS.precision,
        verbose=True,
    )
    print_table(results)
    if FLAGS.results_json:
        files.write_json_atomically(FLAGS.results_json, results)


if __name__ == "__main__":
    define_flags()
    errors.run(main)
