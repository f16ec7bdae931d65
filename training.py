"""The training loop both SimCSE scripts share, with plain arguments: the recipe, the model and its training state
built and resumed exactly, the steps, and their stop on SIGINT or SIGTERM; after each step, checkpointing.py
evaluates and saves into run_directory.py's run directory. train_unsupervised.py and train_supervised.py wire their
flags to `train` through training_flags.py.
"""

import contextlib
import dataclasses
import json
import math
import shutil
import signal
import threading

import keras
import tensorflow as tf
from absl import logging
from tensorboard.plugins.hparams import api as hp

import checkpointing
import data
import distribution
import errors
import files
import huggingface
import model
import model_files
import optimization
import run_directory
import tokenization

# Evaluated during training, as in the original work; `best` is chosen by the first's Spearman.
EVALUATION_SETS = (("korsts", "dev"), ("klue_sts", "dev"))


# What each field of a `Recipe` must be: (holds(value), the requirement as the error says it). training_flags.py
# checks the float flags with the same table at parsing (the integer flags by their lower bounds).
RECIPE_RANGES = {
    "total_steps": (lambda steps: steps >= 1, "must be positive"),
    "batch_size": (lambda size: size >= 2, "must be at least 2 (in-batch negatives)"),
    "learning_rate": (lambda rate: 0 < rate < math.inf, "must be positive and finite"),
    "warmup_ratio": (lambda ratio: 0 <= ratio < 1, "must be in [0, 1)"),
    "temperature": (lambda temperature: 0 < temperature < math.inf, "must be positive and finite"),
    "max_sequence_length": (
        lambda length: length >= tokenization.MIN_SEQUENCE_LENGTH,
        "must leave room for [CLS] and [SEP]",
    ),
    "evaluation_frequency": (lambda frequency: frequency >= 1, "must be positive"),
    "precision": (
        lambda precision: precision in distribution.PRECISIONS,
        f"must be one of {', '.join(distribution.PRECISIONS)}",
    ),
    "mini_batch_size": (lambda size: size >= 1, "must be positive"),  # None: no gradient caching
}


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
        precision: the Keras dtype policy, one of `distribution.PRECISIONS` (`distribution.default_precision`
            picks one).
        train_splits: supervised only, the KorNLI splits of the triples.
        epochs: supervised only, passes over the triples.
        mini_batch_size: gradient caching: sentences (unsupervised) or triples (supervised) encoded at a time, a
            divisor of every replica's batch (gradient_cache.py); None: the whole batch at once.

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
        for field, (holds, requirement) in RECIPE_RANGES.items():
            value = getattr(self, field)
            if value is not None and not holds(value):
                raise errors.TrainingError(f"{field} {requirement}, got {value}")

    @property
    def warmup_steps(self):
        return int(self.warmup_ratio * self.total_steps)

    def run_config(self, bert_config):
        """run_config.json: the recipe's set fields and the BERT config, as JSON values."""
        values = {name: value for name, value in dataclasses.asdict(self).items() if value is not None}
        return json.loads(json.dumps({**values, "bert_config": bert_config.to_dict()}))


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
    start=None,
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
        start: how the run names where it started, in its start.json and TensorBoard's HParams (the Hub id the
            weights were downloaded from, say); default `pretrained_weight`'s absolute path.

    A new run directory also gets the encoder's bert_config.json, vocab.txt and tokenizer_config.json, so its
    checkpoints evaluate and export with nothing else given (`model_files.find`).
    """
    strategy = strategy or tf.distribute.get_strategy()
    if recipe.batch_size % strategy.num_replicas_in_sync:
        raise errors.TrainingError(
            f"batch_size {recipe.batch_size} does not split over {strategy.num_replicas_in_sync} replicas"
        )
    replica_batch_size = recipe.batch_size // strategy.num_replicas_in_sync
    if recipe.mini_batch_size and replica_batch_size % recipe.mini_batch_size:
        raise errors.TrainingError(
            f"mini_batch_size {recipe.mini_batch_size} does not divide the batch of each replica ({recipe.batch_size}"
            f" over {strategy.num_replicas_in_sync} replica(s): {replica_batch_size})"
        )
    config.check_sequence_length(recipe.max_sequence_length)
    tokenizer = tokenization.KrBertTokenizer(vocab_path, recipe.max_sequence_length, config.vocab_size, lower_case)
    files.check_can_make_directory(run_dir)
    files.check_can_make_directory(tensorboard_dir)
    run = run_directory.RunDirectory(run_dir)
    run_config = recipe.run_config(config)
    # Multi-worker runs: the chief writes the run directory and TensorBoard; every worker reads the run directory
    # (a path all workers share) to resume, and saves its training state where the chief cannot see it.
    chief = strategy.extended.should_checkpoint
    # The chief holds the run directory while it trains in it: a second process on it is refused.
    with contextlib.ExitStack() as holding:
        resume_from, start_step, history = None, 0, []
        if run.exists():
            run.check_recipe(run_config)
            if chief:
                holding.enter_context(run.held())
            resume_from = run.readable_state()
            start_step = run_directory.state_step(resume_from)
            if start_step >= recipe.total_steps:
                logging.info("%s has finished all %d steps already", run_dir, recipe.total_steps)
                return run_dir
            if chief:
                history = run.resume(start_step)
        if pretrained_weight and not start_step:
            model_files.resolve_weights(pretrained_weight)

        previous_policy = keras.mixed_precision.global_policy()
        distribution.set_precision(recipe.precision, on_tpu=isinstance(strategy, tf.distribute.TPUStrategy))
        worker_state_dir = (
            None if chief else distribution.worker_state_directory(run_dir, strategy.cluster_resolver.task_id)
        )
        try:
            keras.utils.set_random_seed(recipe.seed)
            with strategy.scope():
                encoder, simcse, state = build_simcse(recipe, config, resume_from)
                if not start_step and pretrained_weight:
                    loaded = model_files.load_encoder_weights(encoder, pretrained_weight)
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
                encoder_files = {
                    model_files.GOOGLE_CONFIG_FILE: config.to_dict(),
                    huggingface.VOCAB_FILE: "".join(files.read_lines(vocab_path)),
                    huggingface.TOKENIZER_CONFIG_FILE: huggingface.tokenizer_config(lower_case),
                }
                start = start or (files.absolute(pretrained_weight) if pretrained_weight else None)
                start_file = {run_directory.START_FILE: {"pretrained_weight": start}}
                run.create({"run_config.json": run_config, **encoder_files, **start_file, **(run_files or {})})
                holding.enter_context(run.held())
            new_tensorboard_dir = chief and not files.exists(tensorboard_dir)
            if chief:
                logging.info("run directory: %s", run_dir)
                summary_writer = tf.summary.create_file_writer(tensorboard_dir)
                if new_tensorboard_dir:
                    with summary_writer.as_default():
                        hp.hparams(hyperparameters(run_config, run.start()))
                evaluation = checkpointing.chief_evaluation(
                    encoder, state, recipe, config, tokenizer, evaluation_sets, run, history, summary_writer
                )
            else:
                state_manager = tf.train.CheckpointManager(state, worker_state_dir, max_to_keep=1)
                evaluation = checkpointing.EvaluateAndCheckpoint(encoder, state_manager, recipe)
            try:
                # The run's one sequence of batches, the ones its saved steps took skipped: a resumed run trains on
                # what the run it continues would have (each pass's shuffle follows from the seed and the pass).
                batches = make_batches(tokenizer, recipe.seed).skip(start_step)
                run_steps(simcse, strategy, batches, start_step, recipe.total_steps, evaluation, chief, run_dir)
            finally:
                if new_run and not run.saved_state():
                    # Stopped before its first evaluation: nothing to resume from, so nothing is left behind.
                    files.rmtree(run_dir)
                    if new_tensorboard_dir:
                        files.rmtree(tensorboard_dir)
            if evaluation.failure:
                raise errors.TrainingError(evaluation.failure)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)
            if worker_state_dir:
                shutil.rmtree(worker_state_dir, ignore_errors=True)
        return run_dir


def hyperparameters(run_config, start):
    """TensorBoard's HParams of a run: the recipe's fields, the encoder's size and the start, as str, int or float
    (so runs compare in the HParams dashboard)."""
    bert_config = run_config["bert_config"]
    values = {name: value for name, value in run_config.items() if name != "bert_config"}
    values |= {name: bert_config[name] for name in ("num_hidden_layers", "hidden_size")}
    values["pretrained_weight"] = start.get("pretrained_weight") or "none (random initialisation)"
    return {name: ",".join(value) if isinstance(value, list) else value for name, value in values.items()}


def run_steps(simcse, strategy, batches, start_step, total_steps, evaluation, show_progress, run_dir):
    """Trains `simcse` on `batches` from step `start_step` + 1 to `total_steps` (fewer if the batches end),
    calling `evaluation` after every step and stopping when it returns False. A worker of a multi-worker run
    that dies or hangs ends the others with an errors.TrainingError. SIGINT or SIGTERM (to any worker) ends every
    worker after the same step, its training state saved, with errors.Interrupted."""
    train_function = make_train_function(simcse, strategy)
    progress = keras.utils.Progbar(
        total_steps, verbose=1 if show_progress else 0, stateful_metrics=["loss", "learning_rate"]
    )
    progress.update(start_step)
    step = start_step
    try:
        with StopRequests(strategy) as stop:
            for step, batch in zip(
                range(start_step + 1, total_steps + 1), strategy.experimental_distribute_dataset(batches), strict=False
            ):
                logs = train_function(batch)
                loss, learning_rate = float(logs["loss"]), float(logs["learning_rate"])
                progress.update(step, [("loss", loss), ("learning_rate", learning_rate)])
                if not evaluation(step, loss, learning_rate, simcse.loss_tracker):
                    return
                signal_number = stop.agreed()
                if signal_number and step < total_steps:  # at the last step the run has finished: nothing to stop
                    stop.abort_on_another()
                    evaluation.save_state(step)
                    raise errors.Interrupted(
                        signal_number,
                        f"interrupted by {signal.Signals(signal_number).name} at step {step} of {total_steps}: "
                        f"its training state is saved ({run_dir}/state); rerun the same command, with the same run "
                        "name, to go on from it",
                    )
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as error:
        saved_step = max(start_step, evaluation.saved_step())
        raise errors.TrainingError(distribution.lost_worker_message(error, step, saved_step)) from error


class StopRequests:
    """SIGINT (Ctrl-C) and SIGTERM (a preemption, a scheduler) while training, as requests: the step in flight
    finishes, then the caller saves the training state and stops. A second SIGINT after `abort_on_another` raises
    KeyboardInterrupt at once (a save cut short leaves the states saved before it). Only the main thread can take
    signals; elsewhere nothing changes."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, strategy):
        self.workers_stopping = None
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):

            @tf.function  # an eager collective is slow
            def workers_stopping(received):
                return strategy.reduce("SUM", strategy.run(tf.identity, args=(received,)), axis=None)

            self.workers_stopping = workers_stopping

    def __enter__(self):
        self.signal_number = None
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {number: signal.signal(number, self.request) for number in self.SIGNALS}
        return self

    def request(self, signal_number, frame):
        del frame
        self.signal_number = signal_number

    def agreed(self):
        """The signal to stop on, or None: under several workers the same on every worker at the same step (an
        all-reduce of whether each has one, every step; a worker without one stops on SIGTERM's behalf)."""
        if self.workers_stopping is None:
            return self.signal_number
        received = tf.constant(int(self.signal_number is not None), tf.int32)
        return (self.signal_number or signal.SIGTERM) if int(self.workers_stopping(received)) else None

    def abort_on_another(self):
        if self.previous:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exception):
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def build_simcse(recipe, config, saved_state=None):
    """(encoder, compiled SimCSE, its training state), restored from `saved_state` if given; in the strategy's
    scope. The state holds the model, optimizer slots, step counter, (mixed_float16) loss scale, the dropout
    layers' random streams and the loss since the last evaluation: all a resumed run needs to go on as if it had not
    stopped. The optimizer's variables are
    made here, not in the first step, which may be traced in a replica."""
    encoder = model.BertEncoder(config)
    simcse = optimization.compile_simcse(
        encoder,
        recipe.temperature,
        recipe.learning_rate,
        recipe.warmup_steps,
        recipe.total_steps,
        mini_batch_size=recipe.mini_batch_size,
    )
    simcse.optimizer.build(simcse.trainable_variables)
    # The dropout layers' seed states and the loss tracker's sums too (Keras' tracking leaves them out): a run
    # resumed between two evaluations draws the masks, and records the mean loss, of the run it continues.
    state = tf.train.Checkpoint(
        model=simcse,
        optimizer=simcse.optimizer,
        dropout_seed_states=encoder.dropout_seed_states(),
        loss_since_evaluation=list(simcse.loss_tracker.variables),
    )
    if saved_state:
        try:
            state.restore(saved_state).assert_existing_objects_matched()
        except AssertionError:  # a state saved before the dropout streams were: the rest must all be there
            tf.train.Checkpoint(model=simcse, optimizer=simcse.optimizer).restore(
                saved_state
            ).assert_existing_objects_matched()
            logging.warning("%s holds no dropout streams (saved by an older version): new masks are drawn", saved_state)
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
