"""What train_unsupervised.py and train_supervised.py share: their flags, the distribution strategy and precision
policy, the model and optimizer, the STS evaluation that writes checkpoints, `best`, eval_history.jsonl and
TensorBoard scalars, and resuming a run that was stopped.

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


class TrainingError(Exception):
    """Training that cannot start or go on: a run directory of another recipe, a diverged loss."""


# Errors reported as one line by the scripts.
INPUT_ERRORS = (model.ConfigError, model.CheckpointError, data.DataError, TrainingError)
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
    flags.DEFINE_string(
        "run_name",
        None,
        "Run directory under --model_checkpoints (default: <kind>-<date>-<time>); an existing one resumes.",
    )
    flags.DEFINE_enum(
        "distribution_strategy",
        "default",
        ["default", "mirrored", "multi_worker_mirrored", "tpu"],
        "tf.distribute strategy; the global batch is split over the replicas.",
    )
    flags.DEFINE_string("tpu", "", "TPU name or address, with --distribution_strategy=tpu.")
    flags.DEFINE_integer(
        "num_cpu_devices", 1, "Split the host CPU into this many logical devices (multi-replica runs without GPUs)."
    )


def setup():
    """Checks the flags, config and vocab, makes the distribution strategy, sets precision and seeds.

    Returns (config, tokenizer, strategy).
    """
    # Logical devices must be made before anything else touches the TensorFlow runtime.
    strategy = make_strategy()
    if FLAGS.batch_size < 2:
        raise data.DataError(f"--batch_size must be at least 2 (in-batch negatives), got {FLAGS.batch_size}")
    if FLAGS.batch_size % strategy.num_replicas_in_sync:
        raise data.DataError(
            f"--batch_size {FLAGS.batch_size} does not split over {strategy.num_replicas_in_sync} replicas"
        )
    if FLAGS.evaluation_frequency < 1:
        raise data.DataError(f"--evaluation_frequency must be positive, got {FLAGS.evaluation_frequency}")
    config = model.BertConfig.from_json_file(FLAGS.config)
    tokenizer = data.KrBertTokenizer(FLAGS.vocab_path, FLAGS.max_sequence_length, config.vocab_size)
    set_precision(FLAGS.mixed_precision, on_tpu=FLAGS.distribution_strategy == "tpu")
    keras.utils.set_random_seed(FLAGS.seed)
    return config, tokenizer, strategy


def make_strategy():
    if FLAGS.num_cpu_devices > 1:
        (cpu,) = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.num_cpu_devices
        )
    name = FLAGS.distribution_strategy
    if name == "default":
        strategy = tf.distribute.get_strategy()
    elif name == "mirrored":
        # Every GPU; without GPUs, every (logical) CPU device.
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy([device.name for device in devices])
    elif name == "multi_worker_mirrored":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=FLAGS.tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    logging.info("distribution strategy: %s, %d replica(s)", name, strategy.num_replicas_in_sync)
    return strategy


def set_precision(mixed_precision, on_tpu=False):
    """Sets the global Keras dtype policy before any layer is made, and says which."""
    if not mixed_precision:
        policy = "float32"
    elif tf.config.list_physical_devices("GPU") and not on_tpu:
        policy = "mixed_float16"  # with loss scaling: compile wraps the optimizer
    else:
        policy = "mixed_bfloat16"  # CPU and TPU: bfloat16 matmuls, no loss scaling needed
    keras.mixed_precision.set_global_policy(policy)
    logging.info("precision policy: %s", policy)


def write_json_atomically(path, value):
    """Writes JSON next to `path` and renames it into place: a reader sees the old file or the new one."""
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
        f.write("\n")
    os.replace(temporary, path)


def compile_simcse(encoder, temperature, learning_rate, warmup_steps, total_steps):
    """SimCSE over `encoder`, compiled for `fit` with the recipe's optimizer: AdamW with linear warm-up and decay."""
    simcse = model.SimCSE(encoder, temperature)
    schedule = model.LinearWarmupDecay(learning_rate, warmup_steps, total_steps)
    simcse.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.0, epsilon=ADAM_EPSILON))
    return simcse


def train(kind, config, tokenizer, make_batches, total_steps, strategy, recipe=None, run_files=None):
    """Trains SimCSE for `total_steps` on `make_batches(seed)`, evaluating every --evaluation_frequency steps.

    A run directory that exists already is resumed from its last evaluation, if it was made with the same
    recipe. Everything that can be wrong with the input is checked before a new run directory is made;
    `run_files`, {file name: JSON value}, are written into it with its `run_config.json`.
    """
    evaluator = sts.StsEvaluator(
        {f"{name}:{split}": data.sts_pairs(name, split, FLAGS.data_dir) for name, split in EVALUATION_SETS},
        tokenizer.trimmed,  # as evaluate.py encodes
        FLAGS.batch_size,
    )
    run_name = FLAGS.run_name or f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = os.path.join(FLAGS.model_checkpoints, run_name)
    run_config = {
        "kind": kind,
        "bert_config": config.to_dict(),
        "total_steps": total_steps,
        **{name: FLAGS[name].value for name in RECIPE_FLAGS},
        **(recipe or {}),
    }
    resuming = os.path.exists(run_dir)
    if resuming:
        check_same_recipe(run_dir, run_config)

    with strategy.scope():
        encoder = model.BertEncoder(config)
        warmup_steps = int(FLAGS.warmup_ratio * total_steps)
        simcse = compile_simcse(encoder, FLAGS.temperature, FLAGS.learning_rate, warmup_steps, total_steps)
        # Model, optimizer slots, step counter and (mixed_float16) loss scale: all a resumed run needs.
        state = tf.train.Checkpoint(model=simcse, optimizer=simcse.optimizer)
        last_state = tf.train.latest_checkpoint(os.path.join(run_dir, "state")) if resuming else None
        if last_state:
            simcse.optimizer.build(simcse.trainable_variables)
            state.restore(last_state).assert_existing_objects_matched()
            logging.info("resuming %s from %s", run_dir, last_state)
        elif FLAGS.pretrained_weight:
            logging.info("loaded pretrained weights from %s", model.load_checkpoint(encoder, FLAGS.pretrained_weight))
        else:
            logging.warning("no --pretrained_weight: training from random initialisation")
    start_step = int(simcse.optimizer.iterations.numpy())
    logging.info("total steps: %d, warm-up steps: %d, starting at step %d", total_steps, warmup_steps, start_step)

    if not resuming:
        make_run_directory(run_dir, {"run_config.json": run_config, **(run_files or {})})
    logging.info("run directory: %s", run_dir)
    if start_step >= total_steps:
        logging.info("%s has finished all %d steps already", run_dir, total_steps)
        return run_dir
    evaluation = EvaluateAndCheckpoint(
        encoder,
        evaluator,
        run_dir,
        os.path.join(FLAGS.tensorboard_log_path, run_name),
        start_step,
        total_steps,
        tf.train.CheckpointManager(state, os.path.join(run_dir, "state"), max_to_keep=2),
    )
    # A resumed run draws other batches than the first steps of the run it continues.
    simcse.fit(
        make_batches(FLAGS.seed + start_step),
        epochs=1,
        steps_per_epoch=total_steps - start_step,
        callbacks=[evaluation],
    )
    if evaluation.failure:
        raise TrainingError(evaluation.failure)
    return run_dir


# Flags that define a run: resuming with other values would make a different run.
RECIPE_FLAGS = (
    "batch_size", "warmup_ratio", "learning_rate", "temperature", "max_sequence_length", "evaluation_frequency",
    "seed", "mixed_precision",
)  # fmt: skip


def check_same_recipe(run_dir, run_config):
    path = os.path.join(run_dir, "run_config.json")
    if not os.path.exists(path):
        raise TrainingError(
            f"{run_dir} exists but is not a run directory (no run_config.json): choose another --run_name"
        )
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    differences = [
        f"{key} {saved.get(key)!r} -> {run_config.get(key)!r}"
        for key in sorted(set(saved) | set(run_config))
        if saved.get(key) != run_config.get(key)
    ]
    if differences:
        raise TrainingError(
            f"{run_dir} was made with another recipe ({'; '.join(differences)}): "
            "rerun with its flags to resume, or choose another --run_name"
        )


def make_run_directory(run_dir, files):
    """Makes `run_dir` with `files` ({name: JSON value}) in it, all at once: under a temporary name, renamed."""
    temporary = f"{run_dir}.tmp-{os.getpid()}"
    os.makedirs(temporary)
    for name, value in files.items():
        write_json_atomically(os.path.join(temporary, name), value)
    os.rename(temporary, run_dir)


class EvaluateAndCheckpoint(keras.callbacks.Callback):
    """Every --evaluation_frequency steps and at the last: STS evaluation in float32, a checkpoint, `best` by
    KorSTS dev Spearman, a line of eval_history.jsonl, TensorBoard scalars, then the training state.

    Evaluation runs on a float32 copy of the weights, exactly as evaluate.py runs on a saved checkpoint, so
    the scores recorded here are the ones evaluate.py gives for the same checkpoint, with mixed precision too.
    The training state is saved last: a run killed after an evaluation but before its state was saved
    resumes from the evaluation before, and the history is cut back to it, so no evaluation is lost or
    repeated. A non-finite loss stops training, keeping the last good checkpoints.
    """

    def __init__(self, encoder, evaluator, run_dir, tensorboard_dir, start_step, total_steps, state_manager):
        super().__init__()
        self.encoder = encoder
        self.evaluator = evaluator
        self.run_dir = run_dir
        self.start_step = start_step
        self.total_steps = total_steps
        self.state_manager = state_manager
        self.float32_encoder = model.BertEncoder(encoder.config, dtype="float32")
        self.embedder = model.sentence_embedder(self.float32_encoder, "cls")
        self.writer = tf.summary.create_file_writer(tensorboard_dir)
        # What a killed save left behind: temporary files, never a checkpoint that is in use.
        for path in tf.io.gfile.glob(os.path.join(run_dir, "*.tmp-*")) + tf.io.gfile.glob(
            os.path.join(run_dir, "best", "*.tmp-*")
        ):
            tf.io.gfile.remove(path)
        self.history_path = os.path.join(run_dir, "eval_history.jsonl")
        self.history = self.read_history_until(start_step)
        self.best_spearman = max((record["korsts_spearman"] for record in self.history), default=-math.inf)
        self.saved_steps = sorted(
            int(path[len(os.path.join(run_dir, "step-")) : -len(".index")])
            for path in tf.io.gfile.glob(os.path.join(run_dir, "step-*.index"))
        )
        self.failure = None

    def read_history_until(self, step):
        if not os.path.exists(self.history_path):
            return []
        with open(self.history_path, encoding="utf-8") as f:
            history = [json.loads(line) for line in f if line.strip()]
        kept = [record for record in history if record["step"] <= step]
        if len(kept) < len(history):
            temporary = f"{self.history_path}.tmp-{os.getpid()}"
            with open(temporary, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(record) + "\n" for record in kept)
            os.replace(temporary, self.history_path)
        return kept

    def on_train_batch_end(self, batch, logs=None):
        step = self.start_step + batch + 1
        loss = float(logs["loss"])
        if not math.isfinite(loss):
            last = self.state_manager.latest_checkpoint or "none"
            self.failure = f"the loss became {loss} at step {step}: training stopped; last good state: {last}"
            self.model.stop_training = True
            return
        if step % FLAGS.evaluation_frequency and step != self.total_steps:
            return
        weights = self.encoder.checkpoint_variables()
        for name, variable in self.float32_encoder.checkpoint_variables().items():
            variable.assign(weights[name])
        results = self.evaluator(self.embedder)
        record = {
            "step": step,
            "loss": loss,
            "learning_rate": float(logs["learning_rate"]),
            "klue_sts_pearson": results["klue_sts:dev"]["pearson"],
            "korsts_spearman": results["korsts:dev"]["spearman"],
        }
        for key, scores in results.items():
            name = key.split(":")[0]
            record[f"{name}_alignment"] = scores["alignment"]
            record[f"{name}_uniformity"] = scores["uniformity"]
        self.save_checkpoints(step, record["korsts_spearman"])
        with open(self.history_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        with self.writer.as_default(step=step):
            for name, value in record.items():
                if name != "step":
                    tf.summary.scalar(name, value)
        self.writer.flush()
        self.state_manager.save(checkpoint_number=step)
        logging.info("step %d: %s", step, json.dumps(record))
        # The loss shown and recorded is the mean since the previous evaluation.
        self.model.loss_tracker.reset_state()

    def save_checkpoints(self, step, korsts_spearman):
        model.save_checkpoint(self.float32_encoder, os.path.join(self.run_dir, f"step-{step}"))
        self.saved_steps = sorted(set(self.saved_steps) | {step})
        while len(self.saved_steps) > KEEP_STEP_CHECKPOINTS:
            for path in tf.io.gfile.glob(os.path.join(self.run_dir, f"step-{self.saved_steps.pop(0)}.*")):
                tf.io.gfile.remove(path)
        if korsts_spearman > self.best_spearman:
            self.best_spearman = korsts_spearman
            save_best(self.float32_encoder, os.path.join(self.run_dir, "best"), step)


def save_best(encoder, directory, step):
    """`directory` holds one checkpoint, named by its `checkpoint` state file: the new one is written in full
    before the state file is switched to it (atomically), and only then is the old one deleted."""
    prefix = model.save_checkpoint(encoder, os.path.join(directory, f"model.ckpt-{step}"))
    # Relative to the directory, so the run directory can be moved (and --model_checkpoints be relative).
    tf.compat.v1.train.update_checkpoint_state(directory, os.path.basename(prefix))
    for path in tf.io.gfile.glob(os.path.join(directory, "model.ckpt-*")):
        if not path.startswith(prefix + "."):
            tf.io.gfile.remove(path)
