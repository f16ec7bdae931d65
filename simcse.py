"""SimCSE's contrastive objective (Gao et al., 2021) over a BERT encoder: the loss, the model whose `train_step`
is one optimizer step, and the gathering of every replica's embeddings into each replica's negatives.
"""

import keras
import tensorflow as tf

import gradient_cache
import model


def contrastive_loss(logits, first_target=0):
    """Cross-entropy of logits [batch, candidates] whose target for row i is candidate first_target + i,
    averaged over the rows."""
    targets = first_target + tf.range(tf.shape(logits)[0])  # [batch]
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True))


def gather_from_replicas(embeddings):
    """[batch, hidden] of this replica -> [replicas * batch, hidden] of all, in replica order; as is on one device."""
    replica = tf.distribute.get_replica_context()
    if replica is None or replica.num_replicas_in_sync == 1:
        return embeddings
    return replica.all_gather(embeddings, axis=0)


class SimCSE(keras.Model):
    """SimCSE's contrastive objective over a BERT encoder; its `train_step` is one optimizer step (training.py runs it).

    Inputs: the encoder's feature dict, which is encoded twice (unsupervised: each pass draws its own dropout
    masks), or a tuple (anchors, positives, hard negatives) of feature dicts (supervised).
    Outputs: float32 logits [batch, batch * (views - 1)], cosine(anchor i, candidate j) / temperature, where
    the candidates are all positives, then all hard negatives; anchor i's target is candidate i. Under a
    tf.distribute strategy the candidates are gathered from every replica, so each anchor sees the global batch
    (logits [local batch, global batch * (views - 1)]) and the targets are offset by the replica's position.

    Args:
        encoder: a `model.BertEncoder`.
        temperature: softmax temperature of the cosine similarities.
        pooling: sentence embedding for the loss; the original recipe trains on the pooler output.
        mini_batch_size: if set, a training step caches gradients (gradient_cache.py): the batch is
            encoded this many sentences at a time, so activations are held for one chunk, not the batch. It must
            divide every replica's batch (`training.train` checks it), so chunks have one static shape (XLA).

    Example:
        >>> config = model.BertConfig.from_json_file("../shared/data/checkpoints/tiny-char-mlm/bert_config.json")
        >>> simcse = SimCSE(model.BertEncoder(config), temperature=0.05)
        >>> ids = tf.constant([[2, 7, 3], [2, 9, 3], [2, 8, 3]])
        >>> features = {"input_word_ids": ids, "input_mask": tf.ones_like(ids), "input_type_ids": tf.zeros_like(ids)}
        >>> simcse(features, training=True).shape  # unsupervised: 3 sentences against their 3 second views
        TensorShape([3, 3])
        >>> simcse((features, features, features), training=True).shape  # supervised: positives, hard negatives
        TensorShape([3, 6])
    """

    def __init__(self, encoder, temperature, pooling="pooled", mini_batch_size=None, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.temperature = temperature
        self.pooling = pooling
        self.mini_batch_size = mini_batch_size
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, inputs, training=None):
        return self.logits([self.embed(view, training) for view in self.views(inputs)])

    @staticmethod
    def views(inputs):
        """The feature dicts encoded in a step: the sentences twice (unsupervised), or the three of a triple."""
        return inputs if isinstance(inputs, tuple) else (inputs, inputs)

    def embed(self, view, training):
        """Feature dict [batch, seq] -> the loss's sentence embeddings, float32 [batch, hidden] whatever the
        compute dtype (cosine similarities and the loss are computed in float32)."""
        return tf.cast(model.pool(self.encoder(view, training=training), view["input_mask"], self.pooling), tf.float32)

    def logits(self, embeddings):
        """Embeddings of each view, each [batch, hidden] -> logits [batch, global batch * (views - 1)]."""
        unit = [tf.math.l2_normalize(e, axis=1) for e in embeddings]  # each [batch, hidden]
        candidates = tf.concat([gather_from_replicas(e) for e in unit[1:]], axis=0)  # [global * (v - 1), h]
        return tf.matmul(unit[0], candidates, transpose_b=True) / self.temperature

    def replica_loss(self, logits):
        """This replica's loss, its anchors against all candidates, and that loss as the optimizer takes its
        gradient: this replica's share of the global mean (the optimizer sums gradients over replicas), scaled
        under mixed_float16 (compile wraps the optimizer; the identity otherwise)."""
        replica = tf.distribute.get_replica_context()
        loss = contrastive_loss(logits, replica.replica_id_in_sync_group * tf.shape(logits)[0])
        return loss, self.optimizer.scale_loss(loss / replica.num_replicas_in_sync)

    def loss_and_gradients(self, inputs):
        """This replica's loss and its share of the gradients of the global mean loss."""
        if self.mini_batch_size:
            return gradient_cache.loss_and_gradients(self, inputs)
        with tf.GradientTape() as tape:
            loss, scaled_loss = self.replica_loss(self(inputs, training=True))
        return loss, tape.gradient(scaled_loss, self.trainable_weights)

    def train_step(self, inputs):
        learning_rate = self.optimizer.learning_rate
        loss, gradients = self.loss_and_gradients(inputs)
        self.optimizer.apply(gradients, self.trainable_weights)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result(), "learning_rate": learning_rate}

    @property
    def metrics(self):
        return [self.loss_tracker]
