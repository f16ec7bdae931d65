"""The SimCSE objective against numpy, on one device and on two replicas; independent dropout masks, the
learning-rate schedule, precision."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import SMALL, SMALL_NO_DROPOUT, small_inputs

import distribution
import errors
import gradient_cache
import model
import optimization
import simcse
import training


def numpy_cross_entropy(logits):
    """Mean cross-entropy with target i for row i, in float64."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -np.mean(log_probabilities[np.arange(len(logits)), np.arange(len(logits))])


def numpy_simcse_logits(anchors, *candidate_views, temperature):
    def unit(x):
        x = np.asarray(x, np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    candidates = np.concatenate([unit(view) for view in candidate_views])  # [batch * views, hidden]
    return unit(anchors) @ candidates.T / temperature


def test_contrastive_loss_is_cross_entropy_with_diagonal_targets():
    logits = np.random.default_rng(0).normal(size=(5, 10)) * 5
    assert float(simcse.contrastive_loss(tf.constant(logits, tf.float32))) == pytest.approx(
        numpy_cross_entropy(logits), rel=1e-6
    )


def shifted_inputs(inputs, shift):
    ids = np.where(inputs["input_mask"] > 0, (inputs["input_word_ids"] + shift) % SMALL["vocab_size"], 0)
    return {**inputs, "input_word_ids": ids.astype(np.int32)}


def test_supervised_logits_are_anchors_against_positives_then_hard_negatives():
    encoder = model.BertEncoder(model.BertConfig.from_dict(SMALL))
    simcse_model = simcse.SimCSE(encoder, temperature=0.05)
    views = (small_inputs(), shifted_inputs(small_inputs(), 7), shifted_inputs(small_inputs(), 13))
    logits = simcse_model(views, training=False).numpy()
    assert logits.shape == (3, 6) and logits.dtype == np.float32
    pooled = [encoder(view, training=False)["pooled_output"].numpy() for view in views]
    expected = numpy_simcse_logits(*pooled, temperature=0.05)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-4)
    loss = simcse.contrastive_loss(tf.constant(logits))
    assert float(loss) == pytest.approx(numpy_cross_entropy(expected), rel=1e-5)


def test_unsupervised_views_draw_independent_dropout_masks():
    encoder = model.BertEncoder(model.BertConfig.from_dict(SMALL))
    simcse_model = simcse.SimCSE(encoder, temperature=0.05)
    inputs = small_inputs()
    # Without dropout both views are the same sentence: cosine 1 on the diagonal.
    np.testing.assert_allclose(np.diag(simcse_model(inputs, training=False)), 1 / 0.05, rtol=1e-5)
    # In training, each pass draws its own masks: the two views of a sentence differ.
    diagonal = np.diag(simcse_model(inputs, training=True).numpy())
    assert (diagonal < 1 / 0.05 - 1e-3).all()


def test_mixed_precision_logits_are_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        encoder = model.BertEncoder(model.BertConfig.from_dict(SMALL))
        assert encoder(small_inputs())["sequence_output"].dtype == tf.bfloat16
        assert simcse.SimCSE(encoder, temperature=0.05)(small_inputs()).dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_linear_warmup_then_linear_decay_at_step_plus_one_as_the_original():
    schedule = optimization.LinearWarmupDecay(3e-5, warmup_steps=1250, total_steps=25000)
    steps = (0, 1, 624, 1249, 13124, 24999, 26000)
    values = [float(schedule(step)) for step in steps]
    # The first update already learns: step 0 uses peak / warmup_steps, as the original scripts' scheduler does.
    expected = [3e-5 / 1250, 2 * 3e-5 / 1250, 1.5e-5, 3e-5, 1.5e-5, 0.0, 0.0]
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-12)


def test_optimizer_is_the_original_scripts_adam():
    simcse_model = optimization.compile_simcse(
        model.BertEncoder(model.BertConfig.from_dict(SMALL)), 0.05, 3e-5, 10, 100
    )
    optimizer = simcse_model.optimizer
    # tf.keras.optimizers.Adam with its defaults, as the original scripts use it: no weight decay.
    assert type(optimizer) is keras.optimizers.Adam
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) == (0.9, 0.999, 1e-7)
    assert optimizer.weight_decay is None


def test_precision_policies_and_what_is_logged(caplog):
    caplog.set_level(logging.INFO, logger="absl")
    gpu = bool(tf.config.list_physical_devices("GPU"))
    assert distribution.default_precision(False) == "float32"
    assert distribution.default_precision(True) == ("mixed_float16" if gpu else "mixed_bfloat16")
    assert distribution.default_precision(True, on_tpu=True) == "mixed_bfloat16"
    try:
        distribution.set_precision("float32")
        assert keras.mixed_precision.global_policy().name == "float32"
        assert "without a GPU" not in caplog.text
        for precision in ("mixed_bfloat16", "mixed_float16"):
            distribution.set_precision(precision)
            assert keras.mixed_precision.global_policy().name == precision
        with pytest.raises(errors.TrainingError, match="mixed_float16 does not run on TPUs: use mixed_bfloat16"):
            distribution.set_precision("mixed_float16", on_tpu=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert "precision policy: float32; devices: /device:CPU:0, /device:CPU:1" in caplog.text  # conftest: 2 CPUs
    if not gpu:
        assert "mixed_bfloat16 without a GPU: faster than float32 on CPU only with native bfloat16" in caplog.text
        assert "mixed_float16 without a GPU" in caplog.text


def random_views(batch):
    rng = np.random.default_rng(3)
    views = []
    for _ in range(3):
        ids = rng.integers(5, SMALL["vocab_size"], size=(batch, 7)).astype(np.int32)
        mask = (np.arange(7)[None, :] < rng.integers(2, 8, size=(batch, 1))).astype(np.int32)
        views.append({"input_word_ids": ids * mask, "input_mask": mask, "input_type_ids": np.zeros_like(ids)})
    return tuple(views)


def compiled_simcse(weights=None, mini_batch_size=None):
    encoder = model.BertEncoder(model.BertConfig.from_dict(SMALL_NO_DROPOUT))
    simcse_model = simcse.SimCSE(encoder, temperature=0.05, mini_batch_size=mini_batch_size)
    simcse_model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.0))
    if weights is not None:
        simcse_model.encoder.set_weights(weights)
    return simcse_model


@pytest.mark.parametrize(("kind", "mini_batch_size"), [("supervised", None), ("unsupervised", None), ("supervised", 2)])
def test_two_replicas_give_the_single_device_loss_and_gradients(two_replicas, kind, mini_batch_size):
    views = random_views(batch=8)
    if kind == "unsupervised":
        views = views[0]
    single = compiled_simcse()
    loss, gradients = single.loss_and_gradients(views)
    gradients = [tf.convert_to_tensor(g) for g in gradients]

    strategy = two_replicas
    with strategy.scope():
        # With gradient caching, each replica embeds its 4 anchors 2 at a time.
        mirrored = compiled_simcse(single.encoder.get_weights(), mini_batch_size)
    # The global batch of 8, split over the replicas: each contrasts its 4 anchors with all 8 candidates.
    per_replica = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(views).unbatch().batch(8))
    replica_loss, replica_gradients = strategy.run(mirrored.loss_and_gradients, args=(next(iter(per_replica)),))
    assert strategy.num_replicas_in_sync == 2
    distributed_loss = strategy.reduce(tf.distribute.ReduceOp.MEAN, replica_loss, axis=None)
    distributed_gradients = [
        tf.convert_to_tensor(strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None)) for g in replica_gradients
    ]
    assert float(distributed_loss) == pytest.approx(float(loss), abs=1e-5)
    largest = max(float(tf.reduce_max(tf.abs(g))) for g in gradients)
    for expected, distributed in zip(gradients, distributed_gradients, strict=True):
        # Float32 sums in another order: equal to 1e-5 relative to the largest gradient.
        np.testing.assert_allclose(distributed, expected, atol=1e-5 * max(1.0, largest))


def per_replica_values(strategy, function):
    return [tensor.numpy() for tensor in strategy.experimental_local_results(strategy.run(function))]


def test_an_overflow_on_one_replica_skips_the_step_on_every_replica(two_replicas):
    # Replica 1's gradient is infinite, replica 0's finite: the step is skipped (weights, Adam's moments and the
    # counter unchanged) and the scale halved, as on one device; then a finite step on both is applied.
    with two_replicas.scope():
        weights = keras.Variable(np.ones(3, np.float32))
        optimizer = optimization.ReplicaLossScaleOptimizer(keras.optimizers.Adam(0.1), initial_scale=2.0**10)
        optimizer.build([weights])

    @tf.function
    def step(overflow_on_replica_1):
        def apply():
            replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.float32)
            gradient = tf.ones(3) / (1.0 - replica * overflow_on_replica_1)  # inf on replica 1 when asked
            optimizer.apply([gradient], [weights])

        two_replicas.run(apply)

    step(tf.constant(1.0))
    np.testing.assert_array_equal(weights.numpy(), np.ones(3))
    assert int(optimizer.iterations.numpy()) == 0 and float(optimizer.dynamic_scale.numpy()) == 2.0**9
    assert all(np.isfinite(variable.numpy()).all() for variable in optimizer.variables)
    step(tf.constant(0.0))
    assert int(optimizer.iterations.numpy()) == 1 and np.isfinite(weights.numpy()).all()
    assert (weights.numpy() < 1.0).all()


def test_dropout_is_keras_on_one_device_and_independent_on_every_replica(two_replicas):
    ones = tf.ones([4, 64])
    ours, stock = model.ReplicaDropout(0.5, seed=3), keras.layers.Dropout(0.5, seed=3)
    for _ in range(2):  # a single-device run draws exactly Keras' masks
        np.testing.assert_array_equal(ours(ones, training=True), stock(ones, training=True))
    with two_replicas.scope():
        ours, stock = model.ReplicaDropout(0.5, seed=3), keras.layers.Dropout(0.5, seed=3)
    # Keras' own Dropout draws the same masks on both replicas for the same input: the defect.
    first, second = per_replica_values(two_replicas, lambda: stock(ones, training=True))
    np.testing.assert_array_equal(first, second)
    # Over several draws (each step draws one per dropout layer and view): no mask of one replica is any mask of
    # the other, at any draw.
    draws = [per_replica_values(two_replicas, lambda: ours(ones, training=True)) for _ in range(4)]
    masks = [[draw[replica] != 0 for draw in draws] for replica in (0, 1)]  # [replica][draw] of [4, 64]
    assert not any(np.array_equal(a, b) for a in masks[0] for b in masks[1])
    assert len({mask.tobytes() for mask in masks[0] + masks[1]}) == 8
    # And so for the whole encoder: the same sentences on two replicas are two different views.
    with two_replicas.scope():
        encoder = model.BertEncoder(model.BertConfig.from_dict(SMALL))
    inputs = small_inputs()
    first, second = per_replica_values(two_replicas, lambda: encoder(inputs, training=True)["pooled_output"])
    assert np.abs(first - second).max() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("mini_batch_size", [None, 4])
def test_training_step_compiles_with_xla(mini_batch_size):
    # What Keras does on one GPU (jit_compile="auto"), forced on CPU: train()'s training step on trimmed batches
    # of two lengths, each its own XLA program, and the step learns; with gradient caching too.
    simcse_model = optimization.compile_simcse(
        model.BertEncoder(model.BertConfig.from_dict({**SMALL, "num_hidden_layers": 1})),  # one layer: less to compile
        0.05,
        1e-3,
        1,
        10,
        jit_compile=True,
        mini_batch_size=mini_batch_size,
    )
    assert simcse_model.jit_compile is True
    simcse_model.optimizer.build(simcse_model.trainable_variables)
    train_function = training.make_train_function(simcse_model, tf.distribute.get_strategy())
    rng = np.random.default_rng(0)

    def batch(length):
        ids = rng.integers(5, SMALL["vocab_size"], size=(8, length)).astype(np.int32)
        mask = (np.arange(length)[None] < rng.integers(2, length + 1, size=(8, 1))).astype(np.int32)
        features = {"input_word_ids": ids * mask, "input_mask": mask, "input_type_ids": np.zeros_like(ids)}
        return {name: tf.constant(value) for name, value in features.items()}

    before = [weight.numpy() for weight in simcse_model.encoder.trainable_weights]
    losses = [float(train_function(batch(length))["loss"]) for length in (8, 16, 8, 16)]
    assert np.isfinite(losses).all() and int(simcse_model.optimizer.iterations) == 4
    after = simcse_model.encoder.trainable_weights
    assert any(not np.allclose(b, a.numpy()) for b, a in zip(before, after, strict=True))


# === Gradient caching (--mini_batch_size) ===


def compiled_cached_simcse(config, mini_batch_size, optimizer=None):
    simcse_model = simcse.SimCSE(
        model.BertEncoder(model.BertConfig.from_dict(config)), 0.05, mini_batch_size=mini_batch_size
    )
    simcse_model.compile(optimizer=optimizer or keras.optimizers.Adam(1e-3))
    return simcse_model


def one_tape_over_chunks(simcse_model, inputs, chunks):
    """The full-batch loss and gradients with the views embedded chunk by chunk under one tape, every activation
    kept: what gradient caching must equal, the same dropout masks drawn in the same order."""
    with tf.GradientTape() as tape:
        embeddings = [
            tf.concat(
                [
                    simcse_model.embed(gradient_cache.chunk(view, index, simcse_model.mini_batch_size), training=True)
                    for index in range(chunks)
                ],
                axis=0,
            )
            for view in simcse_model.views(inputs)
        ]
        loss, scaled_loss = simcse_model.replica_loss(simcse_model.logits(embeddings))
    return loss, tape.gradient(scaled_loss, simcse_model.trainable_weights)


def assert_same_gradients(gradients, expected, relative=1e-5):
    expected = [tf.convert_to_tensor(g).numpy() for g in expected]
    largest = max(float(np.abs(g).max()) for g in expected)
    assert largest > 0
    for value, wanted in zip(gradients, expected, strict=True):
        np.testing.assert_allclose(tf.convert_to_tensor(value).numpy(), wanted, atol=relative * largest, rtol=0)


@pytest.mark.parametrize("kind", [pytest.param("supervised", marks=pytest.mark.slow), "unsupervised"])
def test_gradient_caching_replays_the_dropout_masks_and_gives_the_full_batch_gradients(kind):
    # Seeded weights and masks: unseeded, about one run in six parted from the one tape by more than 1e-6 relative
    # in the loss (float32 sums taken in another order; seen before and after the module split alike).
    keras.utils.set_random_seed(0)
    simcse_model = compiled_cached_simcse(SMALL, mini_batch_size=2)  # dropout 0.1 everywhere
    inputs = random_views(batch=8) if kind == "supervised" else random_views(batch=8)[0]
    seed_states = simcse_model.encoder.dropout_seed_states()
    assert len(seed_states) == 1 + 3 * SMALL["num_hidden_layers"]
    start = [state.numpy() for state in seed_states]
    loss, gradients = tf.function(simcse_model.loss_and_gradients)(inputs)
    after = [state.numpy() for state in seed_states]
    for state, value in zip(seed_states, start, strict=True):
        state.assign(value)
    expected_loss, expected = one_tape_over_chunks(simcse_model, inputs, chunks=4)
    # The step consumed the draws of one pass over the chunks (the replay set them back), as the one tape did.
    assert [state.numpy().tolist() for state in seed_states] == [value.tolist() for value in after]
    assert float(loss) == pytest.approx(float(expected_loss), rel=1e-6)
    assert_same_gradients(gradients, expected)
    # Other masks give other gradients: the replay, not the dropout rate, makes them equal.
    _, other = one_tape_over_chunks(simcse_model, inputs, chunks=4)
    with pytest.raises(AssertionError):
        assert_same_gradients(other, expected, relative=1e-3)


def test_gradient_caching_in_one_chunk_or_without_dropout_is_the_plain_step():
    inputs = random_views(batch=8)
    cached = compiled_cached_simcse(SMALL, mini_batch_size=8)
    plain = simcse.SimCSE(cached.encoder, 0.05)  # the same encoder and seed states
    plain.compile(optimizer=keras.optimizers.Adam(1e-3))
    start = [state.numpy() for state in cached.encoder.dropout_seed_states()]
    _, gradients = cached.loss_and_gradients(inputs)
    for state, value in zip(cached.encoder.dropout_seed_states(), start, strict=True):
        state.assign(value)
    _, expected = plain.loss_and_gradients(inputs)
    assert_same_gradients(gradients, expected)

    cached = compiled_cached_simcse(SMALL_NO_DROPOUT, mini_batch_size=2)
    plain = simcse.SimCSE(cached.encoder, 0.05)
    plain.compile(optimizer=keras.optimizers.Adam(1e-3))
    assert cached.encoder.dropout_seed_states() == []
    assert_same_gradients(cached.loss_and_gradients(inputs)[1], plain.loss_and_gradients(inputs)[1])


@pytest.mark.slow
def test_gradient_caching_with_dropout_on_two_replicas_is_one_tape_on_each(two_replicas):
    # Each replica replays its own masks (its seed states set back, its id folded into every draw): on each, the
    # loss and gradients of one tape over the same chunks and masks; and the two replicas' masks differ. Unsupervised:
    # dropout makes its two views.
    keras.utils.set_random_seed(0)
    with two_replicas.scope():
        cached = compiled_cached_simcse(SMALL, mini_batch_size=2)  # dropout 0.1 everywhere
    inputs = random_views(batch=8)[0]
    # The global batch of 8 over two replicas: 4 anchors each, in 2 chunks.
    per_replica = next(
        iter(two_replicas.experimental_distribute_dataset(tf.data.Dataset.from_tensors(inputs).unbatch().batch(8)))
    )
    seed_states = cached.encoder.dropout_seed_states()
    start = [state.numpy() for state in seed_states]

    def local(results):
        loss, gradients = results
        return two_replicas.experimental_local_results(loss), [
            [tf.convert_to_tensor(g) for g in two_replicas.experimental_local_results(gradient)]
            for gradient in gradients
        ]

    losses, gradients = local(two_replicas.run(tf.function(cached.loss_and_gradients), args=(per_replica,)))
    for state, value in zip(seed_states, start, strict=True):
        state.assign(value)
    expected_losses, expected = local(
        two_replicas.run(tf.function(lambda view: one_tape_over_chunks(cached, view, chunks=2)), args=(per_replica,))
    )
    for replica in (0, 1):
        assert float(losses[replica]) == pytest.approx(float(expected_losses[replica]), rel=1e-6)
        assert_same_gradients([g[replica] for g in gradients], [g[replica] for g in expected])
    assert float(losses[0]) != pytest.approx(float(losses[1]), rel=1e-6)


@pytest.mark.slow
def test_gradient_caching_under_mixed_float16_carries_the_loss_scale():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3), initial_scale=2.0**10)
        one_layer = {**SMALL_NO_DROPOUT, "num_hidden_layers": 1}  # float16 is slow on CPU
        cached = compiled_cached_simcse(one_layer, mini_batch_size=2, optimizer=optimizer)
        plain = simcse.SimCSE(cached.encoder, 0.05)
        plain.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3), initial_scale=2.0**10))
        inputs = random_views(batch=8)
        _, gradients = cached.loss_and_gradients(inputs)
        _, expected = plain.loss_and_gradients(inputs)
        # Both scaled by 2^10 (optimizer.apply unscales); float16 compute: equal to 1e-2 of the largest.
        assert_same_gradients(gradients, expected, relative=1e-2)
        # And 2^10 times float32's gradients of the same weights, without loss scaling: the scale is carried, not
        # lost on both paths alike.
        keras.mixed_precision.set_global_policy("float32")
        float32 = compiled_cached_simcse(one_layer, mini_batch_size=None)
        float32.encoder.set_weights(cached.encoder.get_weights())
        _, reference = float32.loss_and_gradients(inputs)
        assert_same_gradients([tf.convert_to_tensor(g) / 2.0**10 for g in gradients], reference, relative=1e-2)
        keras.mixed_precision.set_global_policy("mixed_float16")
        before = [weight.numpy() for weight in cached.trainable_weights]
        tf.function(cached.train_step)(inputs)
        assert int(optimizer.iterations) == 1
        assert any(not np.allclose(b, w.numpy()) for b, w in zip(before, cached.trainable_weights, strict=True))
    finally:
        keras.mixed_precision.set_global_policy("float32")
