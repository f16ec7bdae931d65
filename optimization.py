"""The original scripts' optimization: Adam under a linear warm-up and decay of the learning rate, and SimCSE
compiled with it (with loss scaling under mixed_float16).
"""

import keras
import tensorflow as tf

import simcse

# mixed_float16's first loss scale (Keras' default); halved at every step that overflows, doubled after 2,000
# steps that do not.
INITIAL_LOSS_SCALE = 2.0**15


class LinearWarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak` over `warmup_steps`, then linear decay to 0 at `total_steps`, as the original
    scripts' LinearWarmupAndDecayScheduler: evaluated at `step + 1`, so the first update (step 0) already uses
    `peak / warmup_steps`, the peak is reached at step `warmup_steps - 1` and 0 at step `total_steps - 1`."""

    def __init__(self, peak, warmup_steps, total_steps):
        self.peak = peak
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps

    def __call__(self, step):
        step = tf.cast(step, tf.float32) + 1.0  # the original's current_step
        warmup = self.peak * step / max(1, self.warmup_steps)
        decay = self.peak * tf.maximum(0.0, (self.total_steps - step) / max(1, self.total_steps - self.warmup_steps))
        return tf.where(step < self.warmup_steps, warmup, decay)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


class ReplicaLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras' LossScaleOptimizer, with a step skipped on every replica when any replica's gradients overflow.

    Under a tf.distribute strategy Keras checks the gradients before they are summed over replicas and, on the
    merge_call path (MirroredStrategy), takes replica 0's verdict: an overflow on another replica alone would reach
    Adam's moments as inf and the weights as NaN, and several workers could take different branches and hang in the
    next all-reduce. Here every replica's verdict is all replicas': the replicas that overflowed, counted by an
    all-reduce.

    Example:
        >>> optimizer = ReplicaLossScaleOptimizer(keras.optimizers.Adam(1e-3), initial_scale=2.0**15)
        >>> bool(optimizer.check_finite([tf.constant([1.0, float("inf")])]))
        False
    """

    def check_finite(self, grads):
        finite = super().check_finite(grads)  # bool [], this replica's gradients
        replica = tf.distribute.get_replica_context()
        if replica is None or replica.num_replicas_in_sync == 1:
            return finite
        overflowed = replica.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))  # float32 []
        return tf.equal(overflowed, 0.0)


def compile_simcse(
    encoder, temperature, learning_rate, warmup_steps, total_steps, jit_compile="auto", mini_batch_size=None
):
    """SimCSE over `encoder`, compiled with the original scripts' optimizer: Keras' Adam with its
    defaults (beta 0.9 / 0.999, epsilon 1e-7), no weight decay, linear warm-up and decay. `jit_compile` is
    Keras': "auto" compiles the step with XLA on one GPU and not on CPU. `mini_batch_size`: gradient caching
    (gradient_cache.py)."""
    simcse_model = simcse.SimCSE(encoder, temperature, mini_batch_size=mini_batch_size)
    schedule = LinearWarmupDecay(learning_rate, warmup_steps, total_steps)
    optimizer = keras.optimizers.Adam(schedule)
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        # A step whose scaled gradients overflow is skipped, the scale halved; `optimizer.iterations` counts the
        # steps applied (the learning-rate schedule follows it), training.train the steps taken.
        optimizer = ReplicaLossScaleOptimizer(optimizer, initial_scale=INITIAL_LOSS_SCALE)
    simcse_model.compile(optimizer=optimizer, jit_compile=jit_compile)
    return simcse_model
