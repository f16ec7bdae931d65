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


# The precisions sentences are encoded in (evaluate.py, export.py, report.py): the Keras policy of each. bfloat16
# keeps float32 weights, LayerNorm and softmax, and multiplies in bfloat16 (the embeddings come out float32).
ENCODING_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
# CPU flags of native bfloat16 arithmetic in /proc/cpuinfo: x86's AVX512_BF16 and AMX, Arm's BF16.
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
# GPUs compute in bfloat16 from compute capability 8.0 (Ampere) on.
BFLOAT16_GPU_CAPABILITY = (8, 0)


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The feature flags of the first CPU in `cpuinfo` (x86 "flags", Arm "Features"); empty where it is unreadable."""
    try:
        with open(cpuinfo, encoding="utf-8") as lines:
            for line in lines:
                name, _, value = line.partition(":")
                if name.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def bfloat16_device():
    """What computes in bfloat16 here, natively ("GPU:0", "CPU (avx512_bf16)"), or None."""
    for index, gpu in enumerate(tf.config.list_physical_devices("GPU")):
        if tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0)) >= BFLOAT16_GPU_CAPABILITY:
            return f"GPU:{index}"
    native = sorted(set(BFLOAT16_CPU_FLAGS) & cpu_flags())
    return f"CPU ({', '.join(native)})" if native else None


def encoding_policy(precision):
    """The Keras policy that encodes in `precision` (ENCODING_POLICIES); bfloat16 only where it is native (emulated,
    it is slower than float32 and no more exact)."""
    if precision not in ENCODING_POLICIES:
        raise errors.InputError(f"precision {precision!r} is not one of {', '.join(ENCODING_POLICIES)}")
    if precision == "bfloat16" and bfloat16_device() is None:
        raise errors.InputError(
            "precision bfloat16: this machine has no native bfloat16 (no GPU of compute capability 8.0 or more, "
            f"no CPU flag {', '.join(BFLOAT16_CPU_FLAGS[:-1])} or {BFLOAT16_CPU_FLAGS[-1]}): use float32"
        )
    return ENCODING_POLICIES[precision]


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
