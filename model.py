"""BERT encoder in Keras 3, numerically Google's BERT, reading and writing Google-format checkpoints.

The layers mirror google-research/bert `modeling.py`: LayerNorm epsilon 1e-12, GELU in its tanh form,
attention mask adder -10000.0, a tanh pooler over [CLS]. Every weight is reachable under its Google
checkpoint name (`BertEncoder.checkpoint_variables()`), so KR-BERT's release loads directly and the
checkpoints this repository writes are Google-format too.
"""

import dataclasses
import json
import math
import os
import shutil

import keras
import tensorflow as tf

import errors

# google-research/bert modeling.py: `tf.contrib.layers.layer_norm(..., epsilon=1e-12)`; Keras defaults to 1e-3.
# A config's `layer_norm_eps` (Hugging Face's key) overrides it.
LAYER_NORM_EPSILON = 1e-12
# google-research/bert modeling.py: `adder = (1.0 - mask) * -10000.0` on the attention scores.
ATTENTION_MASK_ADDER = -10000.0
# google-research/bert modeling.py `get_activation`; "gelu" there is the tanh approximation. "gelu_exact" is the
# erf form, Hugging Face's "gelu" (models converted to Hugging Face's format from Google's run it).
ACTIVATIONS = {
    "gelu": lambda x: keras.activations.gelu(x, approximate=True),
    "gelu_exact": lambda x: keras.activations.gelu(x, approximate=False),
    "relu": keras.activations.relu,
    "tanh": keras.activations.tanh,
    "linear": keras.activations.linear,
}
POOLINGS = ("cls", "pooled", "mean")
# The config keys that count something, each at least 1.
SIZES = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
)
# A config deeper than this is refused before any layer is built (building 10^6 layers takes minutes): the deepest
# BERT published, Megatron-BERT's 48 layers, with room.
MAX_HIDDEN_LAYERS = 256
INPUT_NAMES = ("input_word_ids", "input_mask", "input_type_ids")


class ConfigError(errors.InputError):
    """A BERT config file that is missing, malformed or inconsistent."""


class CheckpointError(errors.InputError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


# === Config ===


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Google-format `bert_config.json`, the keys KR-BERT ships, and `layer_norm_eps` where it is not Google's.

    Example:
        >>> config = BertConfig.from_json_file("configs/char_bert_base.json")
        >>> config.hidden_size
        768
    """

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str
    hidden_dropout_prob: float
    attention_probs_dropout_prob: float
    max_position_embeddings: int
    type_vocab_size: int
    initializer_range: float
    layer_norm_eps: float = LAYER_NORM_EPSILON

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            expected = {"int": int, "float": (int, float), "str": str}[field.type.__name__]
            if isinstance(value, bool) or not isinstance(value, expected):
                raise ConfigError(f"config key '{field.name}' must be {field.type.__name__}, got {value!r}")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"config hidden_act '{self.hidden_act}' is not one of {sorted(ACTIVATIONS)}")
        for name in SIZES:
            if getattr(self, name) < 1:
                raise ConfigError(f"config key '{name}' must be at least 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"config hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"config key '{name}' must be in [0, 1), got {getattr(self, name)}")
        for name in ("initializer_range", "layer_norm_eps"):
            if not 0 < getattr(self, name) < math.inf:
                raise ConfigError(f"config key '{name}' must be positive and finite, got {getattr(self, name)}")
        if self.num_hidden_layers > MAX_HIDDEN_LAYERS:
            raise ConfigError(
                f"config num_hidden_layers {self.num_hidden_layers} is more than {MAX_HIDDEN_LAYERS}, deeper than any "
                "BERT published"
            )
        parameters, memory = self.parameter_count(), os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if 4 * parameters > memory:
            raise ConfigError(
                f"config makes {parameters:,} parameters: in float32, more than this machine's "
                f"{memory / 2**30:.1f} GiB of memory"
            )

    def parameter_count(self):
        """The encoder's number of weights (`checkpoint_shapes`), computed without building it."""
        return sum(math.prod(shape) for shape in checkpoint_shapes(self).values())

    @classmethod
    def from_dict(cls, values):
        if not isinstance(values, dict):
            raise ConfigError(f"a BERT config must be a JSON object, got {type(values).__name__}")
        fields = dataclasses.fields(cls)
        missing = [f.name for f in fields if f.name not in values and f.default is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"config is missing {', '.join(missing)}")
        # Google configs of other models carry extra keys (directionality, pooler_*): not used by BERT itself.
        return cls(**{f.name: values[f.name] for f in fields if f.name in values})

    @classmethod
    def from_json_file(cls, path):
        try:
            values = errors.read_json(path, errors.MODEL_JSON_BYTES)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except errors.InputError as error:
            raise ConfigError(str(error)) from None
        try:
            return cls.from_dict(values)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None

    def check_sequence_length(self, max_sequence_length):
        """Raises ConfigError if sentences of `max_sequence_length` tokens have no position embeddings."""
        if max_sequence_length > self.max_position_embeddings:
            raise ConfigError(
                f"max_sequence_length {max_sequence_length} is more than the config's max_position_embeddings "
                f"{self.max_position_embeddings}"
            )

    def to_dict(self):
        """Google's keys; `layer_norm_eps` only where it differs from Google's, so Google's format stays as it is."""
        values = dataclasses.asdict(self)
        if values["layer_norm_eps"] == LAYER_NORM_EPSILON:
            del values["layer_norm_eps"]
        return values

    def to_json_file(self, path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")


def checkpoint_shapes(config):
    """{Google checkpoint name: shape} of every weight `BertEncoder(config)` has (its `checkpoint_variables()`),
    known before anything is built: files are checked against it first."""
    h, i = config.hidden_size, config.intermediate_size
    shapes = {
        "bert/embeddings/word_embeddings": (config.vocab_size, h),
        "bert/embeddings/token_type_embeddings": (config.type_vocab_size, h),
        "bert/embeddings/position_embeddings": (config.max_position_embeddings, h),
        "bert/embeddings/LayerNorm/gamma": (h,),
        "bert/embeddings/LayerNorm/beta": (h,),
    }
    for index in range(config.num_hidden_layers):
        prefix = f"bert/encoder/layer_{index}"
        for name, kernel in {
            "attention/self/query": (h, h),
            "attention/self/key": (h, h),
            "attention/self/value": (h, h),
            "attention/output/dense": (h, h),
            "intermediate/dense": (h, i),
            "output/dense": (i, h),
        }.items():
            shapes[f"{prefix}/{name}/kernel"] = kernel
            shapes[f"{prefix}/{name}/bias"] = kernel[1:]
        for name in ("attention/output/LayerNorm", "output/LayerNorm"):
            shapes[f"{prefix}/{name}/gamma"] = (h,)
            shapes[f"{prefix}/{name}/beta"] = (h,)
    shapes["bert/pooler/dense/kernel"] = (h, h)
    shapes["bert/pooler/dense/bias"] = (h,)
    return shapes


def _initializer(config):
    # google-research/bert modeling.py `create_initializer`: truncated normal, stddev initializer_range.
    return keras.initializers.TruncatedNormal(stddev=config.initializer_range)


# === Layers ===


class ReplicaDropout(keras.layers.Dropout):
    """Keras' Dropout, with the replica folded into its seed: independent masks on every replica.

    Keras draws dropout seeds from a SeedGenerator whose state is one variable; under a tf.distribute strategy
    that variable is mirrored, so every replica would draw the same masks for the same input. Dropout is
    unsupervised SimCSE's data augmentation, so each replica offsets the drawn seed by its replica id. On one
    device (replica 0) the masks are exactly Keras' Dropout's.
    """

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        seed = self.seed_generator.next()  # int [2], the same on every replica
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            replica_id = tf.cast(replica.replica_id_in_sync_group, seed.dtype)
            seed = seed + tf.stack([tf.zeros_like(replica_id), replica_id])
        # int32, as Keras' own TensorFlow dropout casts it (the stateless ops take int32 seeds under XLA).
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
        return tf.nn.experimental.stateless_dropout(inputs, rate=self.rate, seed=seed, noise_shape=self.noise_shape)


class BertEmbeddings(keras.layers.Layer):
    """Word + position + token-type embeddings, LayerNorm, dropout (modeling.py `embedding_postprocessor`)."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=config.layer_norm_eps, dtype=self.dtype_policy, name="LayerNorm"
        )
        self.dropout = ReplicaDropout(config.hidden_dropout_prob, dtype=self.dtype_policy)

    def build(self, input_shape):
        config = self.config
        self.word_embeddings = self.add_weight(
            name="word_embeddings",
            shape=(config.vocab_size, config.hidden_size),
            initializer=_initializer(config),
        )
        self.token_type_embeddings = self.add_weight(
            name="token_type_embeddings",
            shape=(config.type_vocab_size, config.hidden_size),
            initializer=_initializer(config),
        )
        self.position_embeddings = self.add_weight(
            name="position_embeddings",
            shape=(config.max_position_embeddings, config.hidden_size),
            initializer=_initializer(config),
        )
        self.layer_norm.build((None, None, config.hidden_size))

    def call(self, input_word_ids, input_type_ids, training=None):
        sequence_length = tf.shape(input_word_ids)[1]
        words = keras.ops.take(self.word_embeddings, input_word_ids, axis=0)  # [batch, seq, hidden]
        token_types = keras.ops.take(self.token_type_embeddings, input_type_ids, axis=0)  # [batch, seq, hidden]
        positions = self.position_embeddings[:sequence_length][tf.newaxis]  # [1, seq, hidden]
        embeddings = self.layer_norm(words + token_types + positions)  # [batch, seq, hidden]
        return self.dropout(embeddings, training=training)

    def checkpoint_variables(self, prefix):
        return {
            f"{prefix}/word_embeddings": self.word_embeddings,
            f"{prefix}/token_type_embeddings": self.token_type_embeddings,
            f"{prefix}/position_embeddings": self.position_embeddings,
            f"{prefix}/LayerNorm/gamma": self.layer_norm.gamma,
            f"{prefix}/LayerNorm/beta": self.layer_norm.beta,
        }


class TransformerLayer(keras.layers.Layer):
    """One post-LayerNorm transformer layer (modeling.py `transformer_model`, one iteration)."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads

        def dense(units, name, activation=None):
            return keras.layers.Dense(
                units,
                activation=activation,
                kernel_initializer=_initializer(config),
                dtype=self.dtype_policy,
                name=name,
            )

        def layer_norm(name):
            return keras.layers.LayerNormalization(epsilon=config.layer_norm_eps, dtype=self.dtype_policy, name=name)

        self.query = dense(config.hidden_size, "query")
        self.key = dense(config.hidden_size, "key")
        self.value = dense(config.hidden_size, "value")
        self.attention_dropout = ReplicaDropout(config.attention_probs_dropout_prob, dtype=self.dtype_policy)
        self.attention_output = dense(config.hidden_size, "attention_output")
        self.attention_output_dropout = ReplicaDropout(config.hidden_dropout_prob, dtype=self.dtype_policy)
        self.attention_layer_norm = layer_norm("attention_layer_norm")
        self.intermediate = dense(config.intermediate_size, "intermediate", ACTIVATIONS[config.hidden_act])
        self.output_dense = dense(config.hidden_size, "output")
        self.output_dropout = ReplicaDropout(config.hidden_dropout_prob, dtype=self.dtype_policy)
        self.output_layer_norm = layer_norm("output_layer_norm")

    def build(self, input_shape):
        hidden_shape = (None, None, self.config.hidden_size)
        for layer in (self.query, self.key, self.value, self.attention_output, self.intermediate):
            layer.build(hidden_shape)
        self.output_dense.build((None, None, self.config.intermediate_size))
        self.attention_layer_norm.build(hidden_shape)
        self.output_layer_norm.build(hidden_shape)

    def _split_heads(self, x, batch_size, sequence_length):
        x = tf.reshape(x, [batch_size, sequence_length, self.num_heads, self.head_size])  # [b, s, heads, d]
        return tf.transpose(x, [0, 2, 1, 3])  # [batch, heads, seq, head_size]

    def call(self, hidden, input_mask, training=None):
        # hidden: [batch, seq, hidden]; input_mask: [batch, seq], 1 for tokens and 0 for padding.
        batch_size, sequence_length = tf.shape(hidden)[0], tf.shape(hidden)[1]
        # The dense layers see a [batch * seq, hidden] matrix, as google-research/bert keeps it: one plain MatMul
        # each. On a 3-D input whose length is not static (batches trimmed to their longest sentence), TensorFlow
        # runs a broadcast batched matmul, measured 1.8x slower on CPU when encoding.
        rows = tf.reshape(hidden, [-1, self.config.hidden_size])  # [batch * seq, hidden]
        query = self._split_heads(self.query(rows), batch_size, sequence_length)  # [batch, heads, seq, head_size]
        key = self._split_heads(self.key(rows), batch_size, sequence_length)  # [batch, heads, seq, head_size]
        value = self._split_heads(self.value(rows), batch_size, sequence_length)  # [batch, heads, seq, head_size]
        # Batched matmuls, not einsum: einsum has no fast bfloat16 kernel on CPU (6x slower, measured).
        scores = tf.matmul(query, key, transpose_b=True)  # [batch, heads, seq_q, seq_k]
        # [batch, 1, 1, seq_k]: 0 for tokens, -10000 for padding, broadcast over heads and queries.
        adder = (1.0 - tf.cast(input_mask[:, tf.newaxis, tf.newaxis, :], tf.float32)) * ATTENTION_MASK_ADDER
        # Softmax in float32 under mixed precision too: bfloat16 keeps 8 bits of mantissa.
        scores = tf.cast(scores, tf.float32) * (1.0 / math.sqrt(self.head_size)) + adder
        probabilities = tf.cast(tf.nn.softmax(scores, axis=-1), hidden.dtype)  # [batch, heads, seq_q, seq_k]
        probabilities = self.attention_dropout(probabilities, training=training)
        context = tf.matmul(probabilities, value)  # [batch, heads, seq, head_size]
        context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), tf.shape(rows))  # [batch * seq, hidden]
        attended = self.attention_output_dropout(self.attention_output(context), training=training)
        attended = self.attention_layer_norm(attended + rows)  # [batch * seq, hidden]
        intermediate = self.intermediate(attended)  # [batch * seq, intermediate]
        output = self.output_dropout(self.output_dense(intermediate), training=training)  # [batch * seq, hidden]
        return tf.reshape(self.output_layer_norm(output + attended), tf.shape(hidden))  # [batch, seq, hidden]

    def checkpoint_variables(self, prefix):
        names = {
            "attention/self/query": self.query,
            "attention/self/key": self.key,
            "attention/self/value": self.value,
            "attention/output/dense": self.attention_output,
            "intermediate/dense": self.intermediate,
            "output/dense": self.output_dense,
        }
        variables = {}
        for name, dense in names.items():
            variables[f"{prefix}/{name}/kernel"] = dense.kernel
            variables[f"{prefix}/{name}/bias"] = dense.bias
        for name, layer_norm in {
            "attention/output/LayerNorm": self.attention_layer_norm,
            "output/LayerNorm": self.output_layer_norm,
        }.items():
            variables[f"{prefix}/{name}/gamma"] = layer_norm.gamma
            variables[f"{prefix}/{name}/beta"] = layer_norm.beta
        return variables


# === Model ===


class BertEncoder(keras.Model):
    """Google's BERT as a functional Keras model.

    Inputs: a dict of int32 `input_word_ids`, `input_mask`, `input_type_ids`, each [batch, seq].
    Outputs: a dict of `sequence_output` [batch, seq, hidden] and `pooled_output` [batch, hidden].

    Args:
        config: a `BertConfig`.
        dtype: a Keras dtype policy name ("float32", "mixed_bfloat16", ...); None follows the global policy.

    Example:
        >>> config = BertConfig.from_json_file("../shared/data/checkpoints/tiny-char-mlm/bert_config.json")
        >>> encoder = BertEncoder(config)
        >>> load_checkpoint(encoder, "../shared/data/checkpoints/tiny-char-mlm/model.ckpt")
        '../shared/data/checkpoints/tiny-char-mlm/model.ckpt'
        >>> ids = tf.constant([[2, 7, 3, 0]])
        >>> outputs = encoder({"input_word_ids": ids, "input_mask": tf.cast(ids > 0, tf.int32),
        ...                    "input_type_ids": tf.zeros_like(ids)})
        >>> outputs["pooled_output"].shape
        TensorShape([1, 256])
    """

    def __init__(self, config, dtype=None, **kwargs):
        # === Layers ===
        self.embeddings = BertEmbeddings(config, dtype=dtype, name="embeddings")
        self.transformer_layers = [
            TransformerLayer(config, dtype=dtype, name=f"layer_{index}") for index in range(config.num_hidden_layers)
        ]
        self.pooler = keras.layers.Dense(
            config.hidden_size,
            activation="tanh",
            kernel_initializer=_initializer(config),
            dtype=dtype,
            name="pooler",
        )

        # === Forward ===
        inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in INPUT_NAMES}
        hidden = self.embeddings(inputs["input_word_ids"], inputs["input_type_ids"])  # [batch, seq, hidden]
        for layer in self.transformer_layers:
            hidden = layer(hidden, inputs["input_mask"])  # [batch, seq, hidden]
        pooled = self.pooler(hidden[:, 0])  # [batch, hidden]
        super().__init__(
            inputs=inputs,
            outputs={"sequence_output": hidden, "pooled_output": pooled},
            dtype=dtype,
            **kwargs,
        )

        # === Config ===
        self.config = config

    def get_config(self):
        return {
            "config": self.config.to_dict(),
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(BertConfig.from_dict(config.pop("config")), **config)

    def dropout_seed_states(self):
        """The seed state of every dropout layer: set back to saved values, the next passes draw the same masks
        again (gradient caching replays them). Each pass through a layer advances its state by one draw."""
        dropouts = [self.embeddings.dropout]
        for layer in self.transformer_layers:
            dropouts += [layer.attention_dropout, layer.attention_output_dropout, layer.output_dropout]
        return [dropout.seed_generator.state for dropout in dropouts if dropout.rate > 0]

    def checkpoint_variables(self):
        """Every weight by its google-research/bert checkpoint name."""
        variables = self.embeddings.checkpoint_variables("bert/embeddings")
        for index, layer in enumerate(self.transformer_layers):
            variables.update(layer.checkpoint_variables(f"bert/encoder/layer_{index}"))
        variables["bert/pooler/dense/kernel"] = self.pooler.kernel
        variables["bert/pooler/dense/bias"] = self.pooler.bias
        return variables


def pool(outputs, input_mask, pooling):
    """One sentence embedding per row: [CLS] of the sequence output, the pooler output, or the masked mean."""
    if pooling == "cls":
        return outputs["sequence_output"][:, 0]  # [batch, hidden]
    if pooling == "pooled":
        return outputs["pooled_output"]  # [batch, hidden]
    if pooling == "mean":
        mask = keras.ops.cast(input_mask, outputs["sequence_output"].dtype)[:, :, None]  # [batch, seq, 1]
        total = keras.ops.sum(outputs["sequence_output"] * mask, axis=1)  # [batch, hidden]
        return total / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)  # [batch, hidden]
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def sentence_embedder(encoder, pooling):
    """A Keras model from the encoder's input dict to one embedding per sentence, [batch, hidden]."""
    inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in INPUT_NAMES}
    embeddings = pool(encoder(inputs), inputs["input_mask"], pooling)
    return keras.Model(inputs=inputs, outputs=embeddings, name=f"{pooling}_embedder")


# === SimCSE ===


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


def contrastive_loss(logits, first_target=0):
    """Cross-entropy of logits [batch, candidates] whose target for row i is candidate first_target + i,
    averaged over the rows."""
    targets = first_target + tf.range(tf.shape(logits)[0])  # [batch]
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True))


def _gather_from_replicas(embeddings):
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
        encoder: a `BertEncoder`.
        temperature: softmax temperature of the cosine similarities.
        pooling: sentence embedding for the loss; the original recipe trains on the pooler output.
        mini_batch_size: if set, a training step caches gradients (`cached_loss_and_gradients`): the batch is
            encoded this many sentences at a time, so activations are held for one chunk, not the batch. It must
            divide every replica's batch (`training.train` checks it), so chunks have one static shape (XLA).

    Example:
        >>> config = BertConfig.from_json_file("../shared/data/checkpoints/tiny-char-mlm/bert_config.json")
        >>> simcse = SimCSE(BertEncoder(config), temperature=0.05)
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
        return tf.cast(pool(self.encoder(view, training=training), view["input_mask"], self.pooling), tf.float32)

    def logits(self, embeddings):
        """Embeddings of each view, each [batch, hidden] -> logits [batch, global batch * (views - 1)]."""
        unit = [tf.math.l2_normalize(e, axis=1) for e in embeddings]  # each [batch, hidden]
        candidates = tf.concat([_gather_from_replicas(e) for e in unit[1:]], axis=0)  # [global * (v - 1), h]
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
            return self.cached_loss_and_gradients(inputs)
        with tf.GradientTape() as tape:
            loss, scaled_loss = self.replica_loss(self(inputs, training=True))
        return loss, tape.gradient(scaled_loss, self.trainable_weights)

    def cached_loss_and_gradients(self, inputs):
        """`loss_and_gradients` by gradient caching (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch
        Size under Memory Limited Setup"), for batches whose activations do not fit.

        1. Every view is embedded `mini_batch_size` sentences at a time, without a gradient tape: no activation
           outlives its chunk.
        2. The loss of the whole batch (negatives gathered from every replica, as in `call`) and its gradient with
           respect to the embeddings, [batch, hidden] per view: the cache.
        3. Every chunk is encoded again, each dropout layer's seed state set back so that it draws the masks of
           step 1, and the cached gradient is back-propagated through it; parameter gradients are summed.

        The result is the gradient of the full-batch loss (tested against one tape over the same masks), for about
        one extra forward pass. Chunks run one after another (tf.while_loop), so their activations never coexist.
        """
        views = self.views(inputs)
        seed_states = self.encoder.dropout_seed_states()
        saved_seeds = [tf.identity(state.value) for state in seed_states]
        embeddings = [tf.stop_gradient(self.embed_in_chunks(view)) for view in views]  # each [batch, hidden]
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            loss, scaled_loss = self.replica_loss(self.logits(embeddings))
        embedding_gradients = tape.gradient(scaled_loss, embeddings)  # each [batch, hidden]
        for state, saved in zip(seed_states, saved_seeds, strict=True):
            state.assign(saved)
        gradients = [tf.zeros_like(weight) for weight in self.trainable_weights]
        for view, embedding_gradient in zip(views, embedding_gradients, strict=True):
            gradients = self.backpropagate_in_chunks(view, embedding_gradient, gradients)
        return loss, gradients

    def rows(self, tensor, index):
        """Rows [index * mini_batch_size, (index + 1) * mini_batch_size) of a [batch, columns] tensor: a slice of
        static size, which XLA compiles (a strided slice of computed bounds it does not)."""
        return tf.slice(tensor, [index * self.mini_batch_size, 0], [self.mini_batch_size, -1])

    def chunk(self, view, index):
        """Chunk `index` of a feature dict, each [mini_batch_size, seq]."""
        return {name: self.rows(features, index) for name, features in view.items()}

    def chunk_count(self, view):
        """The chunks of a feature dict (mini_batch_size divides its batch: training.train checks it)."""
        return tf.shape(view["input_mask"])[0] // self.mini_batch_size

    def over_chunks(self, view, step, state):
        """`state = step(index, state)` for every chunk index of a feature dict, one chunk after the other
        (tf.while_loop, parallel_iterations=1)."""
        count = self.chunk_count(view)
        _, state = tf.while_loop(
            lambda index, _: index < count,
            lambda index, state: (index + 1, step(index, state)),
            (0, state),
            parallel_iterations=1,
        )
        return state

    def embed_in_chunks(self, view):
        """`embed(view, training=True)`, chunk after chunk: float32 [batch, hidden]."""

        def step(index, embeddings):
            return embeddings.write(index, self.embed(self.chunk(view, index), training=True))

        embeddings = tf.TensorArray(tf.float32, size=self.chunk_count(view))
        return self.over_chunks(view, step, embeddings).concat()  # [batch, hidden]

    def backpropagate_in_chunks(self, view, embedding_gradient, gradients):
        """`gradients` plus the parameter gradients of sum(embed(view) * embedding_gradient), chunk after chunk."""

        def step(index, gradients):
            with tf.GradientTape() as tape:
                embeddings = self.embed(self.chunk(view, index), training=True)  # [chunk, hidden]
                cached = self.rows(embedding_gradient, index)  # [chunk, hidden]
                surrogate = tf.reduce_sum(embeddings * cached)  # its gradient: the cached one, carried back
            chunk_gradients = tape.gradient(surrogate, self.trainable_weights)
            return [
                total if chunk_gradient is None else total + tf.convert_to_tensor(chunk_gradient)
                for total, chunk_gradient in zip(gradients, chunk_gradients, strict=True)
            ]

        return self.over_chunks(view, step, gradients)

    def train_step(self, inputs):
        learning_rate = self.optimizer.learning_rate
        loss, gradients = self.loss_and_gradients(inputs)
        self.optimizer.apply(gradients, self.trainable_weights)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result(), "learning_rate": learning_rate}

    @property
    def metrics(self):
        return [self.loss_tracker]


# === Checkpoints ===


def resolve_checkpoint(path):
    """The checkpoint prefix for `path`: a prefix itself, or a directory with a `checkpoint` state file."""
    if os.path.isdir(path):
        prefix = tf.train.latest_checkpoint(path)
        if prefix is None:
            raise CheckpointError(f"{path} is a directory with no TensorFlow checkpoint in it")
        return prefix
    if not tf.io.gfile.exists(f"{path}.index"):
        raise CheckpointError(f"checkpoint not found: {path} (expected {path}.index and its data files)")
    return path


def open_checkpoint(path, config):
    """(prefix, reader) of the Google-format checkpoint at `path`, checked to hold every weight `config` makes
    (`checkpoint_shapes`) in its shape, before a model is built; `CheckpointError` names the first missing variable
    or shape mismatch."""
    prefix = resolve_checkpoint(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as error:
        message = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{prefix} is not a readable TensorFlow checkpoint: {message}") from None
    shapes = reader.get_variable_to_shape_map()
    for name, shape in checkpoint_shapes(config).items():
        if name not in shapes:
            raise CheckpointError(f"checkpoint {prefix} has no variable {name}")
        if tuple(shapes[name]) != shape:
            raise CheckpointError(
                f"checkpoint {prefix} has {name} of shape {list(shapes[name])}, the config makes it {list(shape)}"
            )
    return prefix, reader


def load_checkpoint(encoder, path):
    """Loads a Google-format BERT checkpoint (KR-BERT's release or one of ours) into `encoder`.

    Only the encoder's own variables are read, so optimizer slots (adam_m, adam_v), global_step and the
    `cls/` pretraining heads are skipped; what is missing or of another shape is named (`open_checkpoint`).
    """
    prefix, reader = open_checkpoint(path, encoder.config)
    for name, variable in encoder.checkpoint_variables().items():
        try:
            tensor = reader.get_tensor(name)
        except (tf.errors.OpError, IndexError, ValueError) as error:  # IndexError: a data file cut short
            message = str(error).strip().splitlines()[0]
            raise CheckpointError(f"checkpoint {prefix} cannot be read at {name}: {message}") from None
        variable.assign(tensor)
    return prefix


def save_checkpoint(encoder, prefix):
    """Writes the encoder as a Google-format checkpoint at `prefix` (`prefix.index`, `prefix.data-*`).

    It is written under a temporary prefix and renamed into place, index last, so an interrupted save
    never leaves a half-written checkpoint under `prefix`.
    """
    variables = encoder.checkpoint_variables()
    names = sorted(variables)
    temporary = f"{prefix}.tmp-{os.getpid()}"
    tf.raw_ops.SaveV2(
        prefix=temporary,
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.convert_to_tensor(variables[name]) for name in names],
    )
    data_files = tf.io.gfile.glob(f"{temporary}.data-*")
    for source in data_files + [f"{temporary}.index"]:
        tf.io.gfile.rename(source, prefix + source[len(temporary) :], overwrite=True)
    return prefix


# === SavedModel ===


class SentenceEmbedder(tf.Module):
    """Tokenizer and embedder in one graph: strings [batch] -> {"embeddings": float32 [batch, hidden]},
    L2-normalised. `tokenizer` is a `data.KrBertTokenizer`; its vocab becomes an asset of the SavedModel."""

    def __init__(self, tokenizer, embedder):
        super().__init__()
        self.tokenizer = tokenizer
        self.embedder = embedder

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])
    def serve(self, sentences):
        embeddings = self.embedder(self.tokenizer.trimmed(sentences), training=False)  # [batch, hidden]
        return {"embeddings": tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=1)}


def save_embedder(embedder, tokenizer, path):
    """Writes `tokenizer` and `embedder` (`sentence_embedder`) as a SavedModel at `path`, which must not exist:
    under a temporary name, renamed into place, so nothing half-written is ever at `path`."""
    if os.path.exists(path):
        raise CheckpointError(f"{path} exists already: choose a new directory")
    module = SentenceEmbedder(tokenizer, embedder)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        tf.saved_model.save(module, temporary, signatures={"serving_default": module.serve})
        os.rename(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def saved_model_fingerprint(path):
    """A hash of a SavedModel's graph, signatures and weights, read from the fingerprint.pb TensorFlow wrote with
    it (the weights enter through the checksums in the variables index), so nothing as large as the weights is
    read: equal for the same model, different for another."""
    try:
        return tf.saved_model.experimental.read_fingerprint(path).singleprint()
    except (tf.errors.OpError, ValueError) as error:
        raise CheckpointError(f"no fingerprint of the SavedModel {path}: {errors.one_line(error)}") from None


def load_saved_embedder(path):
    """The `serving_default` function of a SavedModel written by export.py: strings [batch] -> embeddings."""
    import tensorflow_text  # noqa: F401  (registers the ops of the SavedModel's in-graph tokenizer)

    if not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        raise CheckpointError(f"no SavedModel at {path} (expected {os.path.join(path, 'saved_model.pb')})")
    try:
        loaded = tf.saved_model.load(path)
    except (tf.errors.OpError, ValueError, OSError) as error:
        raise CheckpointError(f"{path} is not a loadable SavedModel: {str(error).strip().splitlines()[0]}") from None
    if "serving_default" not in loaded.signatures:
        raise CheckpointError(f"SavedModel {path} has no serving_default signature")
    serve = loaded.signatures["serving_default"]

    def embed(sentences):
        return serve(sentences=sentences)["embeddings"]  # float32 [batch, hidden], L2-normalised

    embed.saved_model = loaded  # keeps the loaded objects alive as long as the function
    return embed
