"""Scores a BERT checkpoint as a sentence encoder on STS sets: cosine similarity of the two sentences'
embeddings against the gold score, Pearson and Spearman (KorSTS is reported by Spearman, KLUE STS by Pearson).

    python evaluate.py --config=configs/char_bert_base.json --checkpoint=KR-BERT/model.ckpt-2000000 \\
        --vocab_path=KR-BERT/vocab_char_16424.txt --datasets=korsts:dev,korsts:test,klue_sts:dev
    python evaluate.py --checkpoint=models/RUN/best      # a run's config and vocab are in its directory
    python evaluate.py --checkpoint=klue-bert-base       # so are a Hugging Face directory's
"""

import tensorflow as tf
from absl import flags

import data
import errors
import huggingface
import model
import model_flags
import sts

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "checkpoint",
    None,
    "A Google-format checkpoint prefix (KR-BERT's release, one saved by training) or its directory, or a Hugging "
    "Face BERT directory, or a Hugging Face Hub id (owner/name[@revision]).",
)
model_flags.define_flags()
flags.DEFINE_string(
    "saved_model", None, "A SavedModel of export.py, instead of --config, --checkpoint and --vocab_path."
)
flags.DEFINE_string(
    "data_dir", None, "TFDS data directory (default: TFDS's); datasets not prepared there are downloaded."
)
flags.DEFINE_list("datasets", ["korsts:dev", "korsts:test", "klue_sts:dev"], "STS sets as DATASET:SPLIT.")
flags.DEFINE_integer(
    "max_sequence_length",
    64,
    "Tokens per sentence, [CLS] and [SEP] included (a SavedModel has its own).",
    lower_bound=2,
)
flags.DEFINE_enum(
    "pooling",
    "cls",
    model.POOLINGS,
    "Sentence embedding: [CLS] output, pooler output or mean (a SavedModel has its own).",
)
flags.DEFINE_integer("batch_size", 64, "Sentences per batch.", lower_bound=1)
flags.DEFINE_string(
    "results_json", None, "Write {set: {n, pearson, spearman, alignment, uniformity}} here (null: undefined)."
)
CHECKPOINT_FLAGS = ("checkpoint", "config", "vocab_path", "do_lower_case")


def one_model_source(values):
    """Either --saved_model alone or --checkpoint (with its own flags)."""
    if values["saved_model"]:
        return all(values[name] is None for name in CHECKPOINT_FLAGS)
    return bool(values["checkpoint"])


flags.register_multi_flags_validator(
    [*CHECKPOINT_FLAGS, "saved_model"],
    one_model_source,
    message="give either --saved_model or --checkpoint (with --config, --vocab_path, --do_lower_case if need be)",
)


def evaluate():
    if FLAGS.results_json:
        errors.check_can_write_file(FLAGS.results_json)
    # Every set is looked up first, so a missing split fails before the model is loaded.
    sets = {
        f"{name}:{split}": data.sts_pairs(name, split, FLAGS.data_dir) for name, split in sts.parse_sets(FLAGS.datasets)
    }
    if FLAGS.saved_model:
        embedder = model.load_saved_embedder(FLAGS.saved_model)
        tokenizer = tf.identity  # the SavedModel tokenizes inside: it takes the sentences as they are
        print(f"SavedModel {FLAGS.saved_model}")
    else:
        files = model_flags.model_files(FLAGS, FLAGS.checkpoint, FLAGS.max_sequence_length)
        tokenizer = data.KrBertTokenizer(
            files.vocab_path, FLAGS.max_sequence_length, files.config.vocab_size, files.lower_case
        ).trimmed
        encoder = model.BertEncoder(files.config, dtype="float32")
        loaded = huggingface.load_encoder_weights(encoder, files.weights)
        embedder = model.sentence_embedder(encoder, FLAGS.pooling)
        print(f"checkpoint {loaded}, {FLAGS.pooling} pooling")
    results = sts.StsEvaluator(sets, tokenizer, embedder, FLAGS.batch_size)(verbose=True)

    print(f"{'set':<16}{'n':>6}{'pearson':>10}{'spearman':>10}   (x100)")
    for key, scores in results.items():
        pearson, spearman = (percent(scores[name]) for name in ("pearson", "spearman"))
        print(f"{key:<16}{scores['n']:>6}{pearson:>10}{spearman:>10}")
    if FLAGS.results_json:
        errors.write_json_atomically(FLAGS.results_json, results)


def percent(value):
    """A correlation x100 for the table; "n/a" where it is undefined (constant predictions)."""
    return "n/a" if value is None else f"{value * 100:.2f}"


def main(argv):
    if len(argv) > 1:
        raise errors.InputError(f"unexpected arguments: {' '.join(argv[1:])}")
    evaluate()


if __name__ == "__main__":
    errors.run(main)
