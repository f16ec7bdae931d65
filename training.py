"""The training core both SimCSE scripts share, with plain arguments: the recipe, the distribution strategy and
precision policy, the model and optimizer, STS evaluation during training, and the run directory (checkpoints,
`best/`, eval_history.jsonl, the training state) kept consistent through kills and resumes.
train_unsupervised.py and train_supervised.py wire their flags to `train` through training_flags.py.
"""

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import tempfile

import keras
import tensorflow as tf
from absl import logging

import data
import errors
import huggingface
import model
import sts


class TrainingError(errors.InputError):
    """Training that cannot start or go on: a run directory of another recipe, a diverged loss."""


# Evaluated during training, as in the original work; `best` is chosen by the first's Spearman.
EVALUATION_SETS = (("korsts", "dev"), ("klue_sts", "dev"))
# Step checkpoints kept besides `best`; older ones are deleted (a KR-BERT base checkpoint is ~0.4 GB).
KEEP_STEP_CHECKPOINTS = 5
# Training states kept in state/: the newest, and the one before in case the newest is damaged.
KEEP_STATES = 2


# How long a worker waits for the others in a collective (each step's all-reduce) before it gives up. A worker
# that dies usually ends the others at once (its connections are refused), or within TF's health checks; this
# bounds the rest (a host that stopped answering). It must exceed the chief's evaluation, which the others wait
# for at every evaluation point.
COLLECTIVE_TIMEOUT_SECONDS = 900


# The Keras dtype policies a run can train in.
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# mixed_float16's first loss scale (Keras' default); halved at every step that overflows, doubled after 2,000
# steps that do not.
INITIAL_LOSS_SCALE = 2.0**15


# === Recipe ===


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What makes a run what it is: written to run_config.json, and a run is resumed only with the same values.

    Args:
        kind: "unsupervised" or "supervised".
        total_steps: optimizer steps of the whole run.
        batch_size: sentences (unsupervised) or triples (supervised) per step, over all replicas.
        learning_rate: peak learning rate, reached after `warmup_ratio * total_steps` steps, then decayed to 0.
        warmup_ratio: fraction of the steps with linear warm-up, in [0, 1).
        temperature: temperature of the contrastive softmax.
        max_sequence_length: tokens per sentence, [CLS] and [SEP] included.
        evaluation_frequency: evaluate and save every this many steps (and at the last).
        seed: seed of initialisation, shuffling and dropout.
        precision: the Keras dtype policy, one of `PRECISIONS` (`default_precision` picks one).
        train_splits: supervised only, the KorNLI splits of the triples.
        epochs: supervised only, passes over the triples.
        mini_batch_size: gradient caching: sentences (unsupervised) or triples (supervised) encoded at a time, a
            divisor of every replica's batch (`model.SimCSE`); None: the whole batch at once.

    Example:
        >>> recipe = Recipe(kind="unsupervised", total_steps=600, batch_size=64, learning_rate=3e-5,
        ...                 warmup_ratio=0.05, temperature=0.05, max_sequence_length=64, evaluation_frequency=200,
        ...                 seed=42, precision="float32")
        >>> recipe.warmup_steps
        30
    """

    kind: str
    total_steps: int
    batch_size: int
    learning_rate: float
    warmup_ratio: float
    temperature: float
    max_sequence_length: int
    evaluation_frequency: int
    seed: int
    precision: str
    train_splits: tuple[str, ...] | None = None
    epochs: int | None = None
    mini_batch_size: int | None = None

    def __post_init__(self):
        checks = [
            (self.total_steps >= 1, "total_steps must be positive"),
            (self.batch_size >= 2, "batch_size must be at least 2 (in-batch negatives)"),
            (0 < self.learning_rate < math.inf, "learning_rate must be positive and finite"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
            (0 < self.temperature < math.inf, "temperature must be positive and finite"),
            (self.max_sequence_length >= 2, "max_sequence_length must leave room for [CLS] and [SEP]"),
            (self.evaluation_frequency >= 1, "evaluation_frequency must be positive"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}"),
            (self.mini_batch_size is None or self.mini_batch_size >= 1, "mini_batch_size must be positive"),
        ]
        for holds, message in checks:
            if not holds:
                field = message.split()[0]
                raise TrainingError(f"{message}, got {getattr(self, field)}")

    @property
    def warmup_steps(self):
        return int(self.warmup_ratio * self.total_steps)

    def run_config(self, bert_config):
        """run_config.json: the recipe's set fields and the BERT config, as JSON values."""
        values = {name: value for name, value in dataclasses.asdict(self).items() if value is not None}
        return json.loads(json.dumps({**values, "bert_config": bert_config.to_dict()}))


# === Strategy, precision, model ===


def make_strategy(name="default", num_cpu_devices=1, tpu=""):
    """A tf.distribute strategy by name; `num_cpu_devices` > 1 first splits the host CPU into that many logical
    devices (so the multi-replica path runs without GPUs), which must happen before the runtime starts."""
    if num_cpu_devices > 1:
        (cpu,) = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_cpu_devices)
    if name == "default":
        strategy = tf.distribute.get_strategy()
    elif name == "mirrored":
        # Every GPU; without GPUs, every (logical) CPU device.
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy([device.name for device in devices])
    elif name == "multi_worker_mirrored":
        # Workers, chief and others, from TF_CONFIG; a collective that waits longer than the timeout fails.
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                timeout_seconds=COLLECTIVE_TIMEOUT_SECONDS
            )
        )
    elif name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    else:
        raise TrainingError(f"unknown distribution strategy '{name}'")
    logging.info("distribution strategy: %s, %d replica(s)", name, strategy.num_replicas_in_sync)
    return strategy


def default_precision(mixed_precision, on_tpu=False):
    """The policy of --mixed_precision: float32 without it; with it mixed_float16 on a GPU (with loss scaling),
    mixed_bfloat16 on CPU and TPU (float16 has no fast kernels there; bfloat16 needs no loss scaling)."""
    if not mixed_precision:
        return "float32"
    return "mixed_float16" if tf.config.list_physical_devices("GPU") and not on_tpu else "mixed_bfloat16"


def set_precision(precision, on_tpu=False):
    """Sets the global Keras dtype policy `precision` before any layer is made, and says which, on which devices."""
    if on_tpu and precision == "mixed_float16":
        raise TrainingError("mixed_float16 does not run on TPUs: use mixed_bfloat16")
    keras.mixed_precision.set_global_policy(precision)
    devices = ", ".join(device.name for device in tf.config.list_logical_devices())
    logging.info("precision policy: %s; devices: %s", precision, devices)
    if precision != "float32" and not tf.config.list_physical_devices("GPU") and not on_tpu:
        logging.warning(
            "%s without a GPU: faster than float32 on CPU only with native bfloat16 (AMX, AVX512_BF16) and "
            "mixed_bfloat16; is TensorFlow's GPU build installed (tensorflow[and-cuda])?",
            precision,
        )


def compile_simcse(
    encoder, temperature, learning_rate, warmup_steps, total_steps, jit_compile="auto", mini_batch_size=None
):
    """SimCSE over `encoder`, compiled with the original scripts' optimizer: Keras' Adam with its
    defaults (beta 0.9 / 0.999, epsilon 1e-7), no weight decay, linear warm-up and decay. `jit_compile` is
    Keras': "auto" compiles the step with XLA on one GPU and not on CPU. `mini_batch_size`: gradient caching
    (`model.SimCSE`)."""
    simcse = model.SimCSE(encoder, temperature, mini_batch_size=mini_batch_size)
    schedule = model.LinearWarmupDecay(learning_rate, warmup_steps, total_steps)
    optimizer = keras.optimizers.Adam(schedule)
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        # A step whose scaled gradients overflow is skipped, the scale halved; `optimizer.iterations` counts the
        # steps applied (the learning-rate schedule follows it), training.train the steps taken.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=INITIAL_LOSS_SCALE)
    simcse.compile(optimizer=optimizer, jit_compile=jit_compile)
    return simcse


def load_evaluation_sets(data_dir=None):
    """The STS sets evaluated during training, {"korsts:dev": pairs, "klue_sts:dev": pairs}."""
    return {f"{name}:{split}": data.sts_pairs(name, split, data_dir) for name, split in EVALUATION_SETS}


# === Training ===


def train(
    recipe,
    config,
    vocab_path,
    make_batches,
    evaluation_sets,
    run_dir,
    tensorboard_dir,
    pretrained_weight=None,
    strategy=None,
    run_files=None,
    lower_case=False,
):
    """Trains SimCSE by `recipe`, evaluating every `recipe.evaluation_frequency` steps; returns `run_dir`.

    A `run_dir` that exists already is resumed from its last saved state, if it was made with the same recipe.
    Everything that can be wrong with the input is checked before any model is built, and a new run directory
    is made only once the model has loaded. Under MultiWorkerMirroredStrategy only the chief evaluates and writes
    `run_dir` and `tensorboard_dir`; every worker reads `run_dir` to resume, so it must be a path all can read.

    Args:
        recipe: a `Recipe`.
        config: the encoder's `model.BertConfig`.
        vocab_path: its BERT vocab file.
        make_batches: (tokenizer, seed) -> a dataset of training batches (`data.unsupervised_batches`, ...).
        evaluation_sets: {"korsts:dev": pairs, "klue_sts:dev": pairs} (`load_evaluation_sets`).
        run_dir: where checkpoints, `best/`, eval_history.jsonl and the state go.
        tensorboard_dir: where the TensorBoard scalars go.
        pretrained_weight: the weights to start from, a Google-format checkpoint or a Hugging Face directory;
            None: random initialisation.
        strategy: a tf.distribute strategy; None: the default one.
        run_files: {file name: JSON value} written into a new run directory besides run_config.json.
        lower_case: BERT's do_lower_case for the vocab.

    A new run directory also gets the encoder's bert_config.json, vocab.txt and tokenizer_config.json, so its
    checkpoints evaluate and export with nothing else given (`huggingface.model_files`).
    """
    strategy = strategy or tf.distribute.get_strategy()
    if recipe.batch_size % strategy.num_replicas_in_sync:
        raise TrainingError(
            f"batch_size {recipe.batch_size} does not split over {strategy.num_replicas_in_sync} replicas"
        )
    replica_batch_size = recipe.batch_size // strategy.num_replicas_in_sync
    if recipe.mini_batch_size and replica_batch_size % recipe.mini_batch_size:
        raise TrainingError(
            f"mini_batch_size {recipe.mini_batch_size} does not divide the batch of each replica ({recipe.batch_size}"
            f" over {strategy.num_replicas_in_sync} replica(s): {replica_batch_size})"
        )
    config.check_sequence_length(recipe.max_sequence_length)
    tokenizer = data.KrBertTokenizer(vocab_path, recipe.max_sequence_length, config.vocab_size, lower_case)
    errors.check_can_make_directory(run_dir)
    errors.check_can_make_directory(tensorboard_dir)
    run = RunDirectory(run_dir)
    run_config = recipe.run_config(config)
    # Multi-worker runs: the chief writes the run directory and TensorBoard; every worker reads the run directory
    # (a path all workers share) to resume, and saves its training state where the chief cannot see it.
    chief = strategy.extended.should_checkpoint
    start_step, history = 0, []
    if run.exists():
        run.check_recipe(run_config)
        start_step = run.saved_step()
        if start_step >= recipe.total_steps:
            logging.info("%s has finished all %d steps already", run_dir, recipe.total_steps)
            return run_dir
        if chief:
            history = run.resume(start_step)
    if pretrained_weight and not start_step:
        huggingface.resolve_weights(pretrained_weight)

    previous_policy = keras.mixed_precision.global_policy()
    set_precision(recipe.precision, on_tpu=isinstance(strategy, tf.distribute.TPUStrategy))
    worker_state_dir = None if chief else worker_state_directory(run_dir, strategy.cluster_resolver.task_id)
    try:
        keras.utils.set_random_seed(recipe.seed)
        with strategy.scope():
            encoder, simcse, state = build_simcse(recipe, config, run.saved_state() if start_step else None)
            if not start_step and pretrained_weight:
                loaded = huggingface.load_encoder_weights(encoder, pretrained_weight)
                logging.info("loaded pretrained weights from %s", loaded)
            elif not start_step:
                logging.warning("no pretrained weights: training from random initialisation")
        logging.info(
            "total steps: %d, warm-up steps: %d, starting at step %d",
            recipe.total_steps,
            recipe.warmup_steps,
            start_step,
        )
        new_run = chief and not run.exists()
        if new_run:
            model_files = {
                huggingface.GOOGLE_CONFIG_FILE: config.to_dict(),
                huggingface.VOCAB_FILE: "".join(errors.read_lines(vocab_path)),
                huggingface.TOKENIZER_CONFIG_FILE: huggingface.tokenizer_config(lower_case),
            }
            run.create({"run_config.json": run_config, **model_files, **(run_files or {})})
        new_tensorboard_dir = chief and not os.path.exists(tensorboard_dir)
        if chief:
            logging.info("run directory: %s", run_dir)
            evaluation = chief_evaluation(
                encoder, state, recipe, config, tokenizer, evaluation_sets, run, history, tensorboard_dir
            )
        else:
            state_manager = tf.train.CheckpointManager(state, worker_state_dir, max_to_keep=1)
            evaluation = EvaluateAndCheckpoint(encoder, state_manager, recipe)
        try:
            # A resumed run draws other batches than the first steps of the run it continues.
            batches = make_batches(tokenizer, recipe.seed + start_step)
            run_steps(simcse, strategy, batches, start_step, recipe.total_steps, evaluation, show_progress=chief)
        finally:
            if new_run and not run.saved_state():
                # Stopped before its first evaluation: nothing to resume from, so nothing is left behind.
                shutil.rmtree(run_dir, ignore_errors=True)
                if new_tensorboard_dir:
                    shutil.rmtree(tensorboard_dir, ignore_errors=True)
        if evaluation.failure:
            raise TrainingError(evaluation.failure)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        if worker_state_dir:
            shutil.rmtree(worker_state_dir, ignore_errors=True)
    return run_dir


def chief_evaluation(encoder, state, recipe, config, tokenizer, evaluation_sets, run, history, tensorboard_dir):
    """The chief's EvaluateAndCheckpoint: STS evaluation of a float32 copy of `encoder`, saved to `run`."""
    float32_encoder = model.BertEncoder(config, dtype="float32")
    return EvaluateAndCheckpoint(
        encoder,
        tf.train.CheckpointManager(state, run.state_dir, max_to_keep=KEEP_STATES),
        recipe,
        float32_encoder,
        sts.StsEvaluator(
            evaluation_sets,
            tokenizer.trimmed,  # as evaluate.py encodes
            model.sentence_embedder(float32_encoder, "cls"),
            recipe.batch_size,
        ),
        run,
        history,
        tf.summary.create_file_writer(tensorboard_dir),
    )


def run_steps(simcse, strategy, batches, start_step, total_steps, evaluation, show_progress):
    """Trains `simcse` on `batches` from step `start_step` + 1 to `total_steps` (fewer if the batches end),
    calling `evaluation` after every step and stopping when it returns False. A worker of a multi-worker run
    that dies or hangs ends the others with a TrainingError."""
    train_function = make_train_function(simcse, strategy)
    progress = keras.utils.Progbar(
        total_steps, verbose=1 if show_progress else 0, stateful_metrics=["loss", "learning_rate"]
    )
    progress.update(start_step)
    step = start_step
    try:
        for step, batch in zip(
            range(start_step + 1, total_steps + 1), strategy.experimental_distribute_dataset(batches), strict=False
        ):
            logs = train_function(batch)
            loss, learning_rate = float(logs["loss"]), float(logs["learning_rate"])
            progress.update(step, [("loss", loss), ("learning_rate", learning_rate)])
            if not evaluation(step, loss, learning_rate, simcse.loss_tracker):
                return
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as error:
        saved_step = max(start_step, evaluation.saved_step())
        raise TrainingError(lost_worker_message(error, step, saved_step)) from error


def worker_state_directory(run_dir, task_id):
    """A new, empty directory for the training state of worker `task_id` (not the chief) of the run in `run_dir`,
    in the system's temporary directory, named by both: a rerun clears what a killed worker left there."""
    name = hashlib.sha256(os.path.abspath(run_dir).encode()).hexdigest()[:16]
    path = os.path.join(tempfile.gettempdir(), f"simcse-worker-{task_id}-state-{name}")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def build_simcse(recipe, config, saved_state=None):
    """(encoder, compiled SimCSE, its training state), restored from `saved_state` if given; in the strategy's
    scope. The state holds the model, optimizer slots, step counter and (mixed_float16) loss scale: all a resumed
    run needs. The optimizer's variables are made here, not in the first step, which may be traced in a replica."""
    encoder = model.BertEncoder(config)
    simcse = compile_simcse(
        encoder,
        recipe.temperature,
        recipe.learning_rate,
        recipe.warmup_steps,
        recipe.total_steps,
        mini_batch_size=recipe.mini_batch_size,
    )
    simcse.optimizer.build(simcse.trainable_variables)
    state = tf.train.Checkpoint(model=simcse, optimizer=simcse.optimizer)
    if saved_state:
        state.restore(saved_state).assert_existing_objects_matched()
        logging.info("resuming from %s", saved_state)
    return encoder, simcse, state


def make_train_function(simcse, strategy):
    """One optimizer step of a compiled `simcse` on a global batch from `strategy.experimental_distribute_dataset`,
    as Keras' `fit` makes it (keras/src/backend/tensorflow/trainer.py): every replica trains on its share, the
    optimizer sums the gradients over replicas, and {"loss", "learning_rate"} are averaged over replicas. `fit`
    itself fails under MultiWorkerMirroredStrategy (keras-team/keras#20585). Traced once per batch length class
    (`reduce_retracing`), compiled with XLA if `simcse.jit_compile`.
    """

    @tf.function(reduce_retracing=True, jit_compile=simcse.jit_compile)
    def train_function(batch):
        logs = strategy.run(simcse.train_step, args=(batch,))
        return {name: strategy.reduce("MEAN", value, axis=None) for name, value in logs.items()}

    return train_function


def lost_worker_message(error, step, saved_step):
    """The one line for a collective that failed at `step`: a worker of a multi-worker run died or hung."""
    reason = re.sub(r"^\{\{[^}]*\}\}\s*", "", error.message.splitlines()[0])
    return (
        f"lost contact with another worker after step {step} ({reason}): rerun the same command on every worker to "
        f"resume from step {saved_step}"
    )


def state_step(prefix):
    """The step of a training state's checkpoint prefix (`.../ckpt-N`: checkpoint number = step); 0 for None."""
    return int(prefix.rsplit("-", 1)[1]) if prefix else 0


def checkpoint_run(prefix):
    """(run_config, eval_history.jsonl record) of a checkpoint training saved (`RUN/step-N`, `RUN/best/model.ckpt-N`);
    (None, None) for any other checkpoint."""
    for directory in (os.path.dirname(prefix), os.path.dirname(os.path.dirname(prefix))):
        run = RunDirectory(directory)
        if os.path.exists(run.config_path):
            step = state_step(prefix)
            return errors.read_json(run.config_path), next((r for r in run.history() if r["step"] == step), None)
    return None, None


def history_record(step, loss, learning_rate, results):
    """A line of eval_history.jsonl from the evaluator's results; a metric that is not finite is None."""
    record = {
        "step": step,
        "loss": loss,
        "learning_rate": learning_rate,
        "klue_sts_pearson": results["klue_sts:dev"]["pearson"],
        "korsts_spearman": results["korsts:dev"]["spearman"],
    }
    for key, scores in results.items():
        name = key.split(":")[0]
        record[f"{name}_alignment"] = scores["alignment"]
        record[f"{name}_uniformity"] = scores["uniformity"]
    return record


def best_step(history):
    """The step of the first record with the highest KorSTS dev Spearman; None if no record has one."""
    scored = [record for record in history if record["korsts_spearman"] is not None]
    return max(scored, key=lambda record: record["korsts_spearman"])["step"] if scored else None


class EvaluateAndCheckpoint:
    """Called after every step: every `recipe.evaluation_frequency` steps and at the last, STS evaluation of a
    float32 copy of the weights, the evaluation saved to the run directory, TensorBoard scalars, the training
    state, then `best/`; False (stop) once the loss is not finite, keeping the last good checkpoints.

    Evaluation runs on a float32 copy, exactly as evaluate.py runs on a saved checkpoint, so the scores recorded
    are the ones evaluate.py gives for the same checkpoint, with mixed precision too.

    Workers other than the chief of a multi-worker run are given no `evaluator`: they save the training state
    alone (to a directory of their own: saving may take part in collectives), and their next step waits for the
    chief's evaluation.
    """

    def __init__(
        self,
        encoder,
        state_manager,
        recipe,
        float32_encoder=None,
        evaluator=None,
        run=None,
        history=None,
        summary_writer=None,
    ):
        self.encoder = encoder
        self.state_manager = state_manager
        self.recipe = recipe
        self.float32_encoder = float32_encoder
        self.evaluator = evaluator
        self.run = run
        self.history = history
        self.summary_writer = summary_writer
        self.failure = None

    def saved_step(self):
        """The step of the newest training state saved, 0 if none."""
        return state_step(self.state_manager.latest_checkpoint)

    def __call__(self, step, loss, learning_rate, loss_tracker):
        """After step `step` (counted from the start of the run): False to stop training."""
        if not math.isfinite(loss):
            last = self.state_manager.latest_checkpoint or "none"
            self.failure = f"the loss became {loss} at step {step}: training stopped; last good state: {last}"
            return False
        if step % self.recipe.evaluation_frequency and step != self.recipe.total_steps:
            return True
        if self.evaluator:
            record = self.evaluate(step, loss, learning_rate)
        self.state_manager.save(checkpoint_number=step)
        if self.evaluator:
            self.run.point_best_at(best_step(self.history))
            logging.info("step %d: %s", step, json.dumps(record))
        # The loss shown and recorded is the mean since the previous evaluation.
        loss_tracker.reset_state()
        return True

    def evaluate(self, step, loss, learning_rate):
        """Evaluates the weights after `step` and saves the evaluation; returns its history record."""
        weights = self.encoder.checkpoint_variables()
        for name, variable in self.float32_encoder.checkpoint_variables().items():
            variable.assign(weights[name])
        record = history_record(step, loss, learning_rate, self.evaluator())
        self.run.save_evaluation(record, self.float32_encoder, self.history)
        with self.summary_writer.as_default(step=step):
            for name, value in record.items():
                if name != "step" and value is not None:
                    tf.summary.scalar(name, value)
        self.summary_writer.flush()
        return record


# === Run directory ===


class RunDirectory:
    """A run's files, kept consistent through kills and resumes.

    - `run_config.json` (the recipe) and any other run files, written with the directory, all at once.
    - `step-N`: a Google-format checkpoint per evaluation; the newest `keep_step_checkpoints` are kept.
    - `best/`: the checkpoint of the best KorSTS dev Spearman so far, named by its `checkpoint` state file.
    - `eval_history.jsonl`: one record per evaluation, rewritten atomically.
    - `state/`: the training state, checkpoint number = step (saved by the caller's CheckpointManager).

    An evaluation is saved in this order: step checkpoint, best candidate, history, (training state), then
    `best/` is pointed at the best of the history. The state is the commit: a run killed anywhere in between
    resumes from the state before, and `resume` cuts everything back to it, so no evaluation is lost or
    repeated and `best/` always names a step the history holds.
    """

    def __init__(self, path, keep_step_checkpoints=KEEP_STEP_CHECKPOINTS):
        self.path = path
        self.keep_step_checkpoints = keep_step_checkpoints
        self.config_path = os.path.join(path, "run_config.json")
        self.history_path = os.path.join(path, "eval_history.jsonl")
        self.best_dir = os.path.join(path, "best")
        self.state_dir = os.path.join(path, "state")

    def exists(self):
        return os.path.exists(self.path)

    def create(self, files):
        """Makes the directory with `files` ({name: JSON value for a .json name, text otherwise}) in it, all at
        once: under a temporary name, renamed."""
        temporary = f"{self.path}.tmp-{os.getpid()}"
        try:
            os.makedirs(temporary)
            for name, value in files.items():
                if name.endswith(".json"):
                    errors.write_json_atomically(os.path.join(temporary, name), value)
                else:
                    errors.write_text_atomically(os.path.join(temporary, name), value)
            os.rename(temporary, self.path)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)

    def check_recipe(self, run_config):
        """Raises TrainingError unless the directory was made by a run of `run_config`."""
        if not os.path.exists(self.config_path):
            raise TrainingError(
                f"{self.path} exists but is not a run directory (no run_config.json): choose another run name"
            )
        saved = errors.read_json(self.config_path)
        if not isinstance(saved, dict):
            raise TrainingError(f"{self.config_path} is not a JSON object")
        differences = [
            f"{key} {saved.get(key)!r} -> {run_config.get(key)!r}"
            for key in sorted(set(saved) | set(run_config))
            if saved.get(key) != run_config.get(key)
        ]
        if differences:
            raise TrainingError(
                f"{self.path} was made with another recipe ({'; '.join(differences)}): "
                "rerun with its flags to resume, or choose another run name"
            )

    def saved_state(self):
        """The prefix of the newest training state, or None."""
        return tf.train.latest_checkpoint(self.state_dir)

    def saved_step(self):
        """The step of the newest training state, 0 if there is none."""
        return state_step(self.saved_state())

    def history(self):
        """The records of eval_history.jsonl; TrainingError naming the line if one is not a record."""
        if not os.path.exists(self.history_path):
            return []
        records = []
        for number, line in enumerate(errors.read_lines(self.history_path), start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                record = error
            if not (isinstance(record, dict) and isinstance(record.get("step"), int)):
                raise TrainingError(
                    f"{self.history_path} line {number} is not an evaluation record: restore the file, or "
                    "choose another run name"
                )
            records.append(record)
        return records

    def write_history(self, history):
        errors.write_text_atomically(
            self.history_path, "".join(json.dumps(record, allow_nan=False) + "\n" for record in history)
        )

    def step_checkpoints(self):
        """The steps of the step-N checkpoints, ascending."""
        prefix = os.path.join(self.path, "step-")
        return sorted(int(path[len(prefix) : -len(".index")]) for path in tf.io.gfile.glob(f"{prefix}*.index"))

    def remove_step_checkpoint(self, step):
        for path in tf.io.gfile.glob(os.path.join(self.path, f"step-{step}.*")):
            tf.io.gfile.remove(path)

    def resume(self, step):
        """Cuts the directory back to what it was when the state of `step` was saved; returns the history."""
        # What a killed save left behind: temporary files, never a checkpoint that is in use.
        for path in tf.io.gfile.glob(os.path.join(self.path, "*.tmp-*")) + tf.io.gfile.glob(
            os.path.join(self.best_dir, "*.tmp-*")
        ):
            tf.io.gfile.remove(path)
        history = self.history()
        kept = [record for record in history if record["step"] <= step]
        if len(kept) < len(history):
            self.write_history(kept)
        for saved in self.step_checkpoints():
            if saved > step:
                self.remove_step_checkpoint(saved)
        self.point_best_at(best_step(kept))
        return kept

    def save_evaluation(self, record, encoder, history):
        """Writes the evaluation `record` of `encoder`: its step checkpoint (pruning the oldest), the checkpoint
        for `best/` if it is the best so far (not yet pointed at), and `history` with the record appended."""
        step = record["step"]
        model.save_checkpoint(encoder, os.path.join(self.path, f"step-{step}"))
        for old in self.step_checkpoints()[: -self.keep_step_checkpoints]:
            self.remove_step_checkpoint(old)
        history.append(record)
        if best_step(history) == step:
            model.save_checkpoint(encoder, os.path.join(self.best_dir, f"model.ckpt-{step}"))
        self.write_history(history)

    def point_best_at(self, step):
        """Makes `best/` hold the checkpoint of `step` alone (None: no checkpoint), switching its state file
        atomically before anything is deleted."""
        keep = os.path.join(self.best_dir, f"model.ckpt-{step}")
        if step is not None and tf.io.gfile.exists(f"{keep}.index"):
            # Relative to the directory, so the run directory can be moved.
            tf.compat.v1.train.update_checkpoint_state(self.best_dir, os.path.basename(keep))
        else:
            keep = None
            if tf.io.gfile.exists(os.path.join(self.best_dir, "checkpoint")):
                tf.io.gfile.remove(os.path.join(self.best_dir, "checkpoint"))
        for path in tf.io.gfile.glob(os.path.join(self.best_dir, "model.ckpt-*")):
            if keep is None or not path.startswith(f"{keep}."):
                tf.io.gfile.remove(path)
