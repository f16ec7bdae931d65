"""Scores a BERT checkpoint as a sentence encoder on STS sets: cosine similarity of the two sentences'
embeddings against the gold score, Pearson and Spearman (KorSTS is reported by Spearman, KLUE STS by Pearson).

    python evaluate.py --config=configs/char_bert_base.json --checkpoint=KR-BERT/model.ckpt-2000000 \\
        --vocab_path=KR-BERT/vocab_char_16424.txt --datasets=korsts:dev,korsts:test,klue_sts:dev
    python evaluate.py --checkpoint=models/RUN/best      # a run's config and vocab are in its directory
    python evaluate.py --checkpoint=klue-bert-base       # so are a Hugging Face directory's

From Python, `evaluate(["korsts:dev"], checkpoint="models/RUN/best")` returns the scores.
"""

import tensorflow as tf
from absl import flags

import data
import errors
import files
import model
import model_files
import model_flags
import saved_model
import sts

FLAGS = flags.FLAGS


def evaluate(
    datasets,
    checkpoint=None,
    saved_model_dir=None,
    config_path=None,
    vocab_path=None,
    lower_case=None,
    data_dir=None,
    max_sequence_length=64,
    pooling="cls",
    batch_size=64,
    verbose=False,
):
    """{"name:split": {n, pearson, spearman, alignment, uniformity}} of the model on each STS set in `datasets`
    ("korsts:dev", ...; every set is looked up first, so a missing split fails before the model is loaded).

    Args:
        datasets: STS sets as "DATASET:SPLIT".
        checkpoint: a Google-format checkpoint prefix or its directory, a Hugging Face directory or a Hub id;
            its config, vocab and lower-casing are its own unless `config_path`, `vocab_path`, `lower_case` say.
        saved_model_dir: a SavedModel of export.py instead (it has its own tokenizer and pooling).
        data_dir: the TFDS data directory (None: TFDS's).
        max_sequence_length, pooling, batch_size: how sentences are encoded (a checkpoint's).
        verbose: print what is evaluated and a progress bar.
    """
    sets = {f"{name}:{split}": data.sts_pairs(name, split, data_dir) for name, split in sts.parse_sets(datasets)}
    if saved_model_dir:
        embedder = saved_model.load_saved_embedder(saved_model_dir)
        tokenizer = tf.identity  # the SavedModel tokenizes inside: it takes the sentences as they are
        described = f"SavedModel {saved_model_dir}"
    else:
        found = model_files.find_checked(checkpoint, max_sequence_length, config_path, vocab_path, lower_case)
        bert_tokenizer, encoder, loaded = model_files.load_encoder(found, max_sequence_length)
        tokenizer = bert_tokenizer.trimmed
        embedder = model.sentence_embedder(encoder, pooling)
        described = f"checkpoint {loaded}, {pooling} pooling"
    if verbose:
        print(described)
    return sts.StsEvaluator(sets, tokenizer, embedder, batch_size)(verbose=verbose)


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
    results = evaluate(
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
