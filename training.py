"""What train_unsupervised.py and train_supervised.py share: their flags, the precision policy, the model and
optimizer, and the STS evaluation that writes checkpoints, `best`, eval_history.jsonl and TensorBoard scalars.

Each script supplies its training batches and recipe defaults and calls `train`.
"""

import json
import math
import os
import time

import keras
import tensorflow as tf
from absl import flags, logging

import data
import model
import sts

FLAGS = flags.FLAGS
# Errors that are the user's input, reported as one line by the scripts.
INPUT_ERRORS = (model.ConfigError, model.CheckpointError, data.DataError)
# Evaluated during training, as in the original work; `best` is chosen by the first's Spearman.
EVALUATION_SETS = (("korsts", "dev"), ("klue_sts", "dev"))
# Step checkpoints kept besides `best`; older ones are deleted (a KR-BERT base checkpoint is ~0.4 GB).
KEEP_STEP_CHECKPOINTS = 5
# SimCSE's optimizer (transformers' Trainer defaults): AdamW, no weight decay, epsilon 1e-8.
ADAM_EPSILON = 1e-8


def define_flags(*, batch_size, learning_rate, max_sequence_length, evaluation_frequency):
    """The flags both scripts take, with the script's recipe defaults."""
    flags.DEFINE_string("config", "configs/char_bert_base.json", "Google-format bert_config.json.")
    flags.DEFINE_string(
        "pretrained_weight",
        "kr-bert-char/model.ckpt-2000000",
        "Checkpoint to start from: KR-BERT's Google-format release or one saved here. Empty: random init.",
    )
    flags.DEFINE_string("vocab_path", "kr-bert-char/vocab_char_16424.txt", "BERT vocab file.")
    flags.DEFINE_string("data_dir", None, "TFDS data directory with the prepared datasets (default: TFDS's).")
    flags.DEFINE_boolean("mixed_precision", False, "mixed_float16 on a GPU, mixed_bfloat16 on CPU and TPU.")
    flags.DEFINE_integer("batch_size", batch_size, "Sentences (unsupervised) or triples (supervised) per step.")
    flags.DEFINE_float("warmup_ratio", 0.05, "Fraction of the steps with linear warm-up.")
    flags.DEFINE_float("learning_rate", learning_rate, "Peak learning rate.")
    flags.DEFINE_float("temperature", 0.05, "Temperature of the contrastive softmax.")
    flags.DEFINE_integer("max_sequence_length", max_sequence_length, "Tokens per sentence, [CLS] and [SEP] included.")
    flags.DEFINE_integer("evaluation_frequency", evaluation_frequency, "Evaluate and save every this many steps.")
    flags.DEFINE_string("model_checkpoints", "models", "Directory of the run directories.")
    flags.DEFINE_string("tensorboard_log_path", "logs", "Directory of the TensorBoard run directories.")
    flags.DEFINE_integer("seed", 42, "Seed of initialisation, shuffling and dropout.")


def setup():
    """Checks the flags, config and vocab, then sets precision and seeds. Returns (config, tokenizer)."""
    if FLAGS.batch_size < 2:
        raise data.DataError(f"--batch_size must be at least 2 (in-batch negatives), got {FLAGS.batch_size}")
    if FLAGS.evaluation_frequency < 1:
        raise data.DataError(f"--evaluation_frequency must be positive, got {FLAGS.evaluation_frequency}")
    config = model.BertConfig.from_json_file(FLAGS.config)
    tokenizer = data.KrBertTokenizer(FLAGS.vocab_path, FLAGS.max_sequence_length)
    if tokenizer.vocab_size != config.vocab_size:
        raise data.DataError(
            f"vocab {FLAGS.vocab_path} has {tokenizer.vocab_size} tokens, config vocab_size is {config.vocab_size}"
        )
    set_precision(FLAGS.mixed_precision)
    keras.utils.set_random_seed(FLAGS.seed)
    return config, tokenizer


def set_precision(mixed_precision):
    """Sets the global Keras dtype policy before any layer is made, and says which."""
    if not mixed_precision:
        policy = "float32"
    elif tf.config.list_physical_devices("GPU"):
        policy = "mixed_float16"  # with loss scaling: compile wraps the optimizer
    else:
        policy = "mixed_bfloat16"  # CPU and TPU: bfloat16 matmuls, no loss scaling needed
    keras.mixed_precision.set_global_policy(policy)
    logging.info("precision policy: %s", policy)


def train(kind, config, tokenizer, batches, total_steps, run_files=None):
    """Trains SimCSE on `batches` for `total_steps`, evaluating every --evaluation_frequency steps.

    Everything that can be wrong with the input is checked before the run directory is made; `run_files`,
    {file name: JSON value}, are written into it.
    """
    evaluator = sts.StsEvaluator(
        {f"{name}:{split}": data.sts_pairs(name, split, FLAGS.data_dir) for name, split in EVALUATION_SETS},
        tokenizer,
        FLAGS.batch_size,
    )
    encoder = model.BertEncoder(config)
    if FLAGS.pretrained_weight:
        prefix = model.load_checkpoint(encoder, FLAGS.pretrained_weight)
        logging.info("loaded pretrained weights from %s", prefix)
    else:
        logging.warning("no --pretrained_weight: training from random initialisation")
    simcse = model.SimCSE(encoder, FLAGS.temperature)
    warmup_steps = int(FLAGS.warmup_ratio * total_steps)
    schedule = model.LinearWarmupDecay(FLAGS.learning_rate, warmup_steps, total_steps)
    simcse.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.0, epsilon=ADAM_EPSILON))
    logging.info("total steps: %d, warm-up steps: %d", total_steps, warmup_steps)

    run_name = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = os.path.join(FLAGS.model_checkpoints, run_name)
    os.makedirs(run_dir)
    logging.info("run directory: %s", run_dir)
    for file_name, value in (run_files or {}).items():
        with open(os.path.join(run_dir, file_name), "w", encoding="utf-8") as f:
            json.dump(value, f, indent=2)
            f.write("\n")
    evaluation = EvaluateAndCheckpoint(
        encoder,
        evaluator,
        run_dir,
        os.path.join(FLAGS.tensorboard_log_path, run_name),
        FLAGS.evaluation_frequency,
        total_steps,
    )
    simcse.fit(batches, epochs=1, steps_per_epoch=total_steps, callbacks=[evaluation])
    return run_dir


class EvaluateAndCheckpoint(keras.callbacks.Callback):
    """Every `frequency` steps and at the last: STS evaluation in float32, a checkpoint, `best` by KorSTS dev
    Spearman, a line of eval_history.jsonl and TensorBoard scalars.

    Evaluation runs on a float32 copy of the weights, exactly as evaluate.py runs on a saved checkpoint, so
    the scores recorded here are the ones evaluate.py gives for the same checkpoint, with mixed precision too.
    """

    def __init__(self, encoder, evaluator, run_dir, tensorboard_dir, frequency, total_steps):
        super().__init__()
        self.encoder = encoder
        self.evaluator = evaluator
        self.run_dir = run_dir
        self.frequency = frequency
        self.total_steps = total_steps
        self.float32_encoder = model.BertEncoder(encoder.config, dtype="float32")
        self.embedder = model.sentence_embedder(self.float32_encoder, "cls")
        self.writer = tf.summary.create_file_writer(tensorboard_dir)
        self.best_spearman = -math.inf
        self.saved_steps = []

    def on_train_batch_end(self, batch, logs=None):
        step = batch + 1
        if step % self.frequency and step != self.total_steps:
            return
        weights = self.encoder.checkpoint_variables()
        for name, variable in self.float32_encoder.checkpoint_variables().items():
            variable.assign(weights[name])
        results = self.evaluator(self.embedder)
        record = {
            "step": step,
            "loss": float(logs["loss"]),
            "learning_rate": float(logs["learning_rate"]),
            "klue_sts_pearson": results["klue_sts:dev"]["pearson"],
            "korsts_spearman": results["korsts:dev"]["spearman"],
        }
        for key, scores in results.items():
            name = key.split(":")[0]
            record[f"{name}_alignment"] = scores["alignment"]
            record[f"{name}_uniformity"] = scores["uniformity"]
        self.save(step, record["korsts_spearman"])
        with open(os.path.join(self.run_dir, "eval_history.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        with self.writer.as_default(step=step):
            for name, value in record.items():
                if name != "step":
                    tf.summary.scalar(name, value)
        self.writer.flush()
        logging.info("step %d: %s", step, json.dumps(record))
        # The loss shown and recorded is the mean since the previous evaluation.
        self.model.loss_tracker.reset_state()

    def save(self, step, korsts_spearman):
        prefix = model.save_checkpoint(self.float32_encoder, os.path.join(self.run_dir, f"step-{step}"))
        self.saved_steps.append(prefix)
        if korsts_spearman > self.best_spearman:
            self.best_spearman = korsts_spearman
            model.save_checkpoint(self.float32_encoder, os.path.join(self.run_dir, "best"))
        while len(self.saved_steps) > KEEP_STEP_CHECKPOINTS:
            for path in tf.io.gfile.glob(self.saved_steps.pop(0) + ".*"):
                tf.io.gfile.remove(path)
