"""Where and how a run computes: the tf.distribute strategy (one device, mirrored replicas, several workers,
TPU), the Keras precision policy, and what a worker of a multi-worker run keeps, waits for and says on its own.
"""

import hashlib
import os
import re
import shutil
import tempfile
import time

import keras
import tensorflow as tf
from absl import logging

import data
import errors
import files

# How long a worker waits for the others in a collective (each step's all-reduce) before it gives up. A worker
# that dies usually ends the others at once (its connections are refused), or within TF's health checks; this
# bounds the rest (a host that stopped answering). It must exceed the chief's evaluation, which the others wait
# for at every evaluation point.
COLLECTIVE_TIMEOUT_SECONDS = 900
# How often a worker looks whether the chief has prepared the datasets.
PREPARATION_POLL_SECONDS = 5


# The Keras dtype policies a run can train in.
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


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
        raise errors.TrainingError(f"unknown distribution strategy '{name}'")
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
        raise errors.TrainingError("mixed_float16 does not run on TPUs: use mixed_bfloat16")
    keras.mixed_precision.set_global_policy(precision)
    devices = ", ".join(device.name for device in tf.config.list_logical_devices())
    logging.info("precision policy: %s; devices: %s", precision, devices)
    if precision != "float32" and not tf.config.list_physical_devices("GPU") and not on_tpu:
        logging.warning(
            "%s without a GPU: faster than float32 on CPU only with native bfloat16 (AMX, AVX512_BF16) and "
            "mixed_bfloat16; is TensorFlow's GPU build installed (tensorflow[and-cuda])?",
            precision,
        )


def worker_state_directory(run_dir, task_id):
    """A new, empty directory for the training state of worker `task_id` (not the chief) of the run in `run_dir`,
    in the system's temporary directory, named by both: a rerun clears what a killed worker left there."""
    name = hashlib.sha256(files.absolute(run_dir).encode()).hexdigest()[:16]
    path = os.path.join(tempfile.gettempdir(), f"simcse-worker-{task_id}-state-{name}")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def wait_for_the_chiefs_datasets(names, data_dir, timeout_seconds):
    """For a worker of a multi-worker run other than the chief: returns once every tfds-korean dataset of `names` is
    prepared in `data_dir`. The chief alone prepares them: two preparations in one shared directory would remove
    each other's files. errors.DataError, with the command that prepares them first, if they are not prepared
    within `timeout_seconds`."""
    deadline = time.monotonic() + timeout_seconds
    while unprepared := [name for name in names if not data.BUILDERS[name](data_dir=data_dir).is_prepared()]:
        left = deadline - time.monotonic()
        if left <= 0:
            where = f" --data_dir={data_dir}" if data_dir else ""
            raise errors.DataError(
                f"{', '.join(unprepared)} not prepared after {timeout_seconds} s of waiting for the chief, which "
                f"prepares a multi-worker run's datasets: prepare them before starting the workers, "
                f"`python data.py prepare --datasets={','.join(unprepared)}{where}`"
            )
        logging.info("waiting for the chief to prepare %s", ", ".join(unprepared))
        time.sleep(min(PREPARATION_POLL_SECONDS, left))


def lost_worker_message(error, step, saved_step):
    """The one line for a collective that failed at `step`: a worker of a multi-worker run died or hung."""
    reason = re.sub(r"^\{\{[^}]*\}\}\s*", "", errors.first_line(error))
    return (
        f"lost contact with another worker after step {step} ({reason}): rerun the same command on every worker to "
        f"resume from step {saved_step}"
    )
