"""The command line of train_unsupervised.py and train_supervised.py: the flags they share, with each script's
recipe defaults, and what the scripts make of their values. Only the scripts and this module read flags;
training.py takes plain arguments.
"""

import os
import time

from absl import flags, logging

import distribution
import hub
import model_flags
import training

# The original work's recipes (jeongukjae/KR-BERT-SimCSE): the training scripts' defaults, and what report.py names
# a run's differences from. The supervised run's steps follow from its triples: epochs x (triples // batch_size).
ORIGINAL_RECIPES = {
    "unsupervised": {
        "total_steps": 25_000,
        "batch_size": 64,
        "learning_rate": 3e-5,
        "warmup_ratio": 0.05,
        "temperature": 0.05,
        "max_sequence_length": 64,
        "evaluation_frequency": 250,
    },
    "supervised": {
        "train_splits": ("mnli_train", "snli_train"),
        "epochs": 3,
        "batch_size": 128,
        "learning_rate": 5e-5,
        "warmup_ratio": 0.05,
        "temperature": 0.05,
        "max_sequence_length": 48,
        "evaluation_frequency": 125,
    },
}
# The scripts' --seed.
DEFAULT_SEED = 42


def define_flags(kind, flag_values=flags.FLAGS):
    """The flags both scripts take, with the defaults of `kind`'s original recipe (`ORIGINAL_RECIPES`);
    values out of range fail at parsing."""
    fv = flag_values
    recipe = ORIGINAL_RECIPES[kind]
    flags.DEFINE_string(
        "pretrained_weight",
        hub.KR_BERT_HUB_ID,
        "Weights to start from: a Hugging Face Hub id (owner/name[@revision]; default: KR-BERT character), a "
        "Hugging Face BERT directory, or a Google-format checkpoint (KR-BERT's TensorFlow release, one saved here). "
        "Empty: random initialisation.",
        flag_values=fv,
    )
    model_flags.define_model_flags(fv, fallback=", else KR-BERT character's")
    model_flags.define_data_dir(fv)
    flags.DEFINE_boolean(
        "mixed_precision", False, "mixed_float16 on a GPU, mixed_bfloat16 on CPU and TPU.", flag_values=fv
    )
    flags.DEFINE_enum(
        "precision",
        None,
        distribution.PRECISIONS,
        "The dtype policy itself, instead of --mixed_precision's choice (mixed_bfloat16 on Ampere and newer GPUs).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "batch_size",
        recipe["batch_size"],
        "Sentences (unsupervised) or triples (supervised) per step; at least 2 (in-batch negatives).",
        lower_bound=2,
        flag_values=fv,
    )
    flags.DEFINE_float(
        "warmup_ratio", recipe["warmup_ratio"], "Fraction of the steps with linear warm-up, in [0, 1).", flag_values=fv
    )
    flags.DEFINE_float("learning_rate", recipe["learning_rate"], "Peak learning rate.", flag_values=fv)
    flags.DEFINE_float("temperature", recipe["temperature"], "Temperature of the contrastive softmax.", flag_values=fv)
    model_flags.define_max_sequence_length(recipe["max_sequence_length"], flag_values=fv)
    flags.DEFINE_integer(
        "evaluation_frequency",
        recipe["evaluation_frequency"],
        "Evaluate and save every this many steps.",
        lower_bound=1,
        flag_values=fv,
    )
    flags.DEFINE_string("model_checkpoints", "models", "Directory of the run directories.", flag_values=fv)
    flags.DEFINE_string("tensorboard_log_path", "logs", "Directory of the TensorBoard run directories.", flag_values=fv)
    flags.DEFINE_integer("seed", DEFAULT_SEED, "Seed of initialisation, shuffling and dropout.", flag_values=fv)
    flags.DEFINE_integer(
        "mini_batch_size",
        None,
        "Gradient caching: encode the batch this many sentences (triples) at a time, holding one chunk's activations "
        "instead of the batch's, for about one more forward pass; a divisor of every replica's batch. The gradients "
        "are the whole batch's (default: off).",
        lower_bound=1,
        flag_values=fv,
    )
    flags.DEFINE_string(
        "run_name",
        None,
        "Run directory under --model_checkpoints (default: <kind>-<date>-<time>; required with several workers, "
        "which must all name one); an existing one resumes.",
        flag_values=fv,
    )
    flags.DEFINE_enum(
        "distribution_strategy",
        "default",
        ["default", "mirrored", "multi_worker_mirrored", "tpu"],
        "tf.distribute strategy; the global batch is split over the replicas.",
        flag_values=fv,
    )
    flags.DEFINE_string("tpu", "", "TPU name or address, with --distribution_strategy=tpu.", flag_values=fv)
    flags.DEFINE_integer(
        "num_cpu_devices",
        1,
        "Split the host CPU into this many logical devices (multi-replica runs without GPUs).",
        lower_bound=1,
        flag_values=fv,
    )
    for name in ("learning_rate", "temperature", "warmup_ratio"):
        holds, requirement = training.RECIPE_RANGES[name]
        flags.register_validator(name, holds, message=requirement, flag_values=fv)
    flags.register_multi_flags_validator(
        ["distribution_strategy", "run_name"],
        # A default name is the time a worker started: workers started in different seconds would not share a run.
        lambda values: values["distribution_strategy"] != "multi_worker_mirrored" or bool(values["run_name"]),
        message="give --run_name with --distribution_strategy=multi_worker_mirrored: every worker names the same run",
        flag_values=fv,
    )
    flags.register_multi_flags_validator(
        ["mixed_precision", "precision"],
        lambda values: not (values["mixed_precision"] and values["precision"]),
        message="give --mixed_precision or --precision, not both",
        flag_values=fv,
    )


# The flags that are fields of training.Recipe.
RECIPE_FLAGS = (
    "batch_size", "learning_rate", "warmup_ratio", "temperature", "max_sequence_length", "evaluation_frequency",
    "seed", "mini_batch_size",
)  # fmt: skip


def make_strategy(values):
    """The strategy of --distribution_strategy; call it before anything else touches the TensorFlow runtime."""
    return distribution.make_strategy(values.distribution_strategy, values.num_cpu_devices, values.tpu)


def make_recipe(values, kind, total_steps, **supervised):
    """training.Recipe from the flags, `total_steps` and the supervised script's `train_splits` and `epochs`."""
    precision = values.precision or distribution.default_precision(
        values.mixed_precision, on_tpu=values.distribution_strategy == "tpu"
    )
    return training.Recipe(
        kind=kind,
        total_steps=total_steps,
        precision=precision,
        **{name: values[name].value for name in RECIPE_FLAGS},
        **supervised,
    )


def wait_for_datasets(values, strategy, training_dataset):
    """Several workers: the chief prepares what is not prepared yet, as it loads it; the others wait for it here,
    before they load anything (`distribution.wait_for_the_chiefs_datasets`)."""
    if strategy.extended.should_checkpoint:
        return
    names = [training_dataset, *dict(training.EVALUATION_SETS)]
    distribution.wait_for_the_chiefs_datasets(names, values.data_dir, distribution.COLLECTIVE_TIMEOUT_SECONDS)


def load_model_files(values):
    """The config, vocab and lower-casing of the flags or of --pretrained_weight, the config checked against
    --max_sequence_length: before any data is read."""
    return model_flags.find_model_files(values, values.pretrained_weight or None)


def train(values, model_files, recipe, strategy, make_batches, run_files=None):
    """training.train with the model files, evaluation sets, directories and start of the flags."""
    run_name = values.run_name or f"{recipe.kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not values.run_name:
        logging.info("run name: %s (to resume this run, rerun the command with --run_name=%s)", run_name, run_name)
    return training.train(
        recipe,
        model_files.config,
        model_files.vocab_path,
        make_batches,
        training.load_evaluation_sets(values.data_dir),
        run_dir=os.path.join(values.model_checkpoints, run_name),
        tensorboard_dir=os.path.join(values.tensorboard_log_path, run_name),
        pretrained_weight=model_files.weights,
        strategy=strategy,
        run_files=run_files,
        lower_case=model_files.lower_case,
        start=values.pretrained_weight if hub.is_hub_id(values.pretrained_weight) else None,
    )
