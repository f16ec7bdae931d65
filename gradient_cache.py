"""Gradient caching (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup"):
a SimCSE step's loss and gradients for batches whose activations do not fit, holding one chunk's at a time.

1. Every view is embedded `mini_batch_size` sentences at a time, without a gradient tape: no activation outlives
   its chunk.
2. The loss of the whole batch (negatives gathered from every replica, as `simcse.SimCSE.call` does) and its
   gradient with respect to the embeddings, [batch, hidden] per view: the cache.
3. Every chunk is encoded again, each dropout layer's seed state set back so that it draws the masks of step 1,
   and the cached gradient is back-propagated through it; parameter gradients are summed.

The result is the gradient of the full-batch loss (tested against one tape over the same masks), for about one
extra forward pass. Chunks run one after another (tf.while_loop), so their activations never coexist.
"""

import tensorflow as tf


def loss_and_gradients(simcse, inputs):
    """`simcse.SimCSE.loss_and_gradients` of `simcse` on `inputs`, by gradient caching in chunks of
    `simcse.mini_batch_size`."""
    views = simcse.views(inputs)
    seed_states = simcse.encoder.dropout_seed_states()
    saved_seeds = [tf.identity(state.value) for state in seed_states]
    embeddings = [tf.stop_gradient(embed_in_chunks(simcse, view)) for view in views]  # each [batch, hidden]
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        loss, scaled_loss = simcse.replica_loss(simcse.logits(embeddings))
    embedding_gradients = tape.gradient(scaled_loss, embeddings)  # each [batch, hidden]
    for state, saved in zip(seed_states, saved_seeds, strict=True):
        state.assign(saved)
    gradients = [tf.zeros_like(weight) for weight in simcse.trainable_weights]
    for view, embedding_gradient in zip(views, embedding_gradients, strict=True):
        gradients = backpropagate_in_chunks(simcse, view, embedding_gradient, gradients)
    return loss, gradients


def rows(tensor, index, mini_batch_size):
    """Rows [index * mini_batch_size, (index + 1) * mini_batch_size) of a [batch, columns] tensor: a slice of static
    size, which XLA compiles (a strided slice of computed bounds it does not)."""
    return tf.slice(tensor, [index * mini_batch_size, 0], [mini_batch_size, -1])


def chunk(view, index, mini_batch_size):
    """Chunk `index` of a feature dict, each [mini_batch_size, seq]."""
    return {name: rows(features, index, mini_batch_size) for name, features in view.items()}


def chunk_count(view, mini_batch_size):
    """The chunks of a feature dict (`mini_batch_size` divides its batch: training.train checks it)."""
    return tf.shape(view["input_mask"])[0] // mini_batch_size


def over_chunks(view, mini_batch_size, step, state):
    """`state = step(index, state)` for every chunk index of a feature dict, one chunk after the other
    (tf.while_loop, parallel_iterations=1)."""
    count = chunk_count(view, mini_batch_size)
    _, state = tf.while_loop(
        lambda index, _: index < count,
        lambda index, state: (index + 1, step(index, state)),
        (0, state),
        parallel_iterations=1,
    )
    return state


def embed_in_chunks(simcse, view):
    """`simcse.embed(view, training=True)`, chunk after chunk: float32 [batch, hidden]."""
    size = simcse.mini_batch_size

    def step(index, embeddings):
        return embeddings.write(index, simcse.embed(chunk(view, index, size), training=True))

    embeddings = tf.TensorArray(tf.float32, size=chunk_count(view, size))
    return over_chunks(view, size, step, embeddings).concat()  # [batch, hidden]


def backpropagate_in_chunks(simcse, view, embedding_gradient, gradients):
    """`gradients` plus the parameter gradients of sum(simcse.embed(view) * embedding_gradient), chunk after
    chunk."""
    size = simcse.mini_batch_size

    def step(index, gradients):
        with tf.GradientTape() as tape:
            embeddings = simcse.embed(chunk(view, index, size), training=True)  # [chunk, hidden]
            cached = rows(embedding_gradient, index, size)  # [chunk, hidden]
            surrogate = tf.reduce_sum(embeddings * cached)  # its gradient: the cached one, carried back
        chunk_gradients = tape.gradient(surrogate, simcse.trainable_weights)
        return [
            total if chunk_gradient is None else total + tf.convert_to_tensor(chunk_gradient)
            for total, chunk_gradient in zip(gradients, chunk_gradients, strict=True)
        ]

    return over_chunks(view, size, step, gradients)
