"""Run as a script by test_distribution.py: SimCSE's loss and gradients on 2 logical CPU replicas and on one
device, for the same global batch with dropout off; prints the largest differences as JSON."""

import json
import sys

import tensorflow as tf

# Before anything initialises the runtime: the host CPU as two logical devices.
(cpu,) = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from test_model import SMALL  # noqa: E402

import model  # noqa: E402

NO_DROPOUT = {**SMALL, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def make_views(batch):
    rng = np.random.default_rng(3)
    views = []
    for _ in range(3):
        ids = rng.integers(5, SMALL["vocab_size"], size=(batch, 7)).astype(np.int32)
        mask = (np.arange(7)[None, :] < rng.integers(2, 8, size=(batch, 1))).astype(np.int32)
        views.append({"input_word_ids": ids * mask, "input_mask": mask, "input_type_ids": np.zeros_like(ids)})
    return tuple(views)


def make_simcse(weights=None):
    simcse = model.SimCSE(model.BertEncoder(model.BertConfig.from_dict(NO_DROPOUT)), temperature=0.05)
    simcse.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.0))
    if weights is not None:
        simcse.encoder.set_weights(weights)
    return simcse


def dense_loss_and_gradients(simcse, views):
    loss, gradients = simcse.loss_and_gradients(views)
    return loss, [tf.convert_to_tensor(g) for g in gradients]


def main(supervised):
    views = make_views(batch=8)
    if not supervised:
        views = views[0]
    single = make_simcse()
    loss, gradients = dense_loss_and_gradients(single, views)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = make_simcse(single.encoder.get_weights())
    per_replica = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(views).unbatch().batch(8)  # the global batch, split over the replicas
    )
    replica_loss, replica_gradients = strategy.run(
        lambda v: dense_loss_and_gradients(mirrored, v), args=(next(iter(per_replica)),)
    )
    distributed_loss = strategy.reduce(tf.distribute.ReduceOp.MEAN, replica_loss, axis=None)
    distributed_gradients = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in replica_gradients]
    print(
        json.dumps(
            {
                "replicas": strategy.num_replicas_in_sync,
                "loss": float(loss),
                "loss_difference": abs(float(loss) - float(distributed_loss)),
                "gradient_difference": max(
                    float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(gradients, distributed_gradients, strict=True)
                ),
                "largest_gradient": max(float(tf.reduce_max(tf.abs(g))) for g in gradients),
            }
        )
    )


if __name__ == "__main__":
    main(supervised=sys.argv[1] == "supervised")
