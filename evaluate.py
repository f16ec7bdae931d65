"""Scores a BERT checkpoint as a sentence encoder on STS sets: cosine similarity of the two sentences'
embeddings against the gold score, Pearson and Spearman (KorSTS is reported by Spearman, KLUE STS by Pearson).

    python evaluate.py --config=configs/char_bert_base.json --checkpoint=KR-BERT/model.ckpt-2000000 \\
        --vocab_path=KR-BERT/vocab_char_16424.txt --datasets=korsts:dev,korsts:test,klue_sts:dev
"""

import sys

import tensorflow as tf
from absl import app, flags

import data
import model
import sts
import training

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Google-format bert_config.json.")
flags.DEFINE_string("checkpoint", None, "Checkpoint prefix (Google format or saved by training), or its directory.")
flags.DEFINE_string("vocab_path", None, "BERT vocab file, e.g. vocab_char_16424.txt.")
flags.DEFINE_string(
    "saved_model", None, "A SavedModel of export.py, instead of --config, --checkpoint and --vocab_path."
)
flags.DEFINE_string("data_dir", None, "TFDS data directory with the prepared datasets (default: TFDS's).")
flags.DEFINE_list("datasets", ["korsts:dev", "korsts:test", "klue_sts:dev"], "STS sets as DATASET:SPLIT.")
flags.DEFINE_integer(
    "max_sequence_length", 64, "Tokens per sentence, [CLS] and [SEP] included (a SavedModel has its own)."
)
flags.DEFINE_enum(
    "pooling",
    "cls",
    model.POOLINGS,
    "Sentence embedding: [CLS] output, pooler output or mean (a SavedModel has its own).",
)
flags.DEFINE_integer("batch_size", 64, "Sentence pairs per batch.")
flags.DEFINE_string("results_json", None, "Write {set: {n, pearson, spearman}} here.")
CHECKPOINT_FLAGS = ("config", "checkpoint", "vocab_path")


def one_model_source(values):
    """Either --saved_model alone or all of the checkpoint flags."""
    given = [bool(values[name]) for name in CHECKPOINT_FLAGS]
    return all(given) if not values["saved_model"] else not any(given)


flags.register_multi_flags_validator(
    [*CHECKPOINT_FLAGS, "saved_model"],
    one_model_source,
    message="give either --saved_model or all of --config, --checkpoint and --vocab_path",
)


def embedder_and_tokenizer():
    """What to evaluate: (embedder, tokenizer), from a SavedModel or from a checkpoint, and a description."""
    if FLAGS.saved_model:
        # The SavedModel tokenizes inside: it takes the sentences as they are.
        return model.load_saved_encoder(FLAGS.saved_model), tf.identity, f"SavedModel {FLAGS.saved_model}"
    config = model.BertConfig.from_json_file(FLAGS.config)
    tokenizer = data.KrBertTokenizer(FLAGS.vocab_path, FLAGS.max_sequence_length, config.vocab_size)
    encoder = model.BertEncoder(config, dtype="float32")
    prefix = model.load_checkpoint(encoder, FLAGS.checkpoint)
    embedder = model.sentence_embedder(encoder, FLAGS.pooling)
    return embedder, tokenizer.trimmed, f"checkpoint {prefix}, {FLAGS.pooling} pooling"


def evaluate():
    # Every set is looked up first, so a missing split fails before the model is loaded.
    sets = {
        f"{name}:{split}": data.sts_pairs(name, split, FLAGS.data_dir) for name, split in sts.parse_sets(FLAGS.datasets)
    }
    embedder, tokenizer, description = embedder_and_tokenizer()
    print(description)
    results = sts.StsEvaluator(sets, tokenizer, FLAGS.batch_size)(embedder, verbose=True)

    print(f"{'set':<16}{'n':>6}{'pearson':>10}{'spearman':>10}   (x100)")
    for key, scores in results.items():
        print(f"{key:<16}{scores['n']:>6}{scores['pearson'] * 100:>10.2f}{scores['spearman'] * 100:>10.2f}")
    if FLAGS.results_json:
        training.write_json_atomically(FLAGS.results_json, results)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        evaluate()
    except (model.ConfigError, model.CheckpointError, data.DataError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    app.run(main)
