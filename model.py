"""The BERT encoder in Keras 3, numerically Google's BERT: its config, layers, encoder and sentence pooling.

The layers mirror google-research/bert `modeling.py`: LayerNorm epsilon 1e-12, GELU in its tanh form,
attention mask adder -10000.0, a tanh pooler over [CLS]. Every weight is reachable under its Google
checkpoint name (`BertEncoder.checkpoint_variables()`), so KR-BERT's release loads directly
(google_checkpoint.py) and the checkpoints this repository writes are Google-format too.
"""

import dataclasses
import json
import math
import os

import keras
import tensorflow as tf

import errors
import files
import google_checkpoint

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
                raise errors.ConfigError(f"config key '{field.name}' must be {field.type.__name__}, got {value!r}")
        if self.hidden_act not in ACTIVATIONS:
            raise errors.ConfigError(f"config hidden_act '{self.hidden_act}' is not one of {sorted(ACTIVATIONS)}")
        for name in SIZES:
            if getattr(self, name) < 1:
                raise errors.ConfigError(f"config key '{name}' must be at least 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise errors.ConfigError(
                f"config hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0 <= getattr(self, name) < 1:
                raise errors.ConfigError(f"config key '{name}' must be in [0, 1), got {getattr(self, name)}")
        for name in ("initializer_range", "layer_norm_eps"):
            if not 0 < getattr(self, name) < math.inf:
                raise errors.ConfigError(f"config key '{name}' must be positive and finite, got {getattr(self, name)}")
        if self.num_hidden_layers > MAX_HIDDEN_LAYERS:
            raise errors.ConfigError(
                f"config num_hidden_layers {self.num_hidden_layers} is more than {MAX_HIDDEN_LAYERS}, deeper than any "
                "BERT published"
            )
        parameters, memory = self.parameter_count(), os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if 4 * parameters > memory:
            raise errors.ConfigError(
                f"config makes {parameters:,} parameters: in float32, more than this machine's "
                f"{memory / 2**30:.1f} GiB of memory"
            )

    def parameter_count(self):
        """The encoder's number of weights (`google_checkpoint.checkpoint_shapes`), computed without building it."""
        return sum(math.prod(shape) for shape in google_checkpoint.checkpoint_shapes(self).values())

    @classmethod
    def from_dict(cls, values):
        if not isinstance(values, dict):
            raise errors.ConfigError(f"a BERT config must be a JSON object, got {type(values).__name__}")
        fields = dataclasses.fields(cls)
        missing = [f.name for f in fields if f.name not in values and f.default is dataclasses.MISSING]
        if missing:
            raise errors.ConfigError(f"config is missing {', '.join(missing)}")
        # Google configs of other models carry extra keys (directionality, pooler_*): not used by BERT itself.
        return cls(**{f.name: values[f.name] for f in fields if f.name in values})

    @classmethod
    def from_json_file(cls, path):
        try:
            values = files.read_json(path, files.MODEL_JSON_BYTES)
        except FileNotFoundError:
            raise errors.ConfigError(f"config file not found: {path}") from None
        except errors.InputError as error:
            raise errors.ConfigError(str(error)) from None
        try:
            return cls.from_dict(values)
        except errors.ConfigError as error:
            raise errors.ConfigError(f"{path}: {error}") from None

    def check_sequence_length(self, max_sequence_length):
        """Raises errors.ConfigError if sentences of `max_sequence_length` tokens have no position embeddings."""
        if max_sequence_length > self.max_position_embeddings:
            raise errors.ConfigError(
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
        files.write_file(path, json.dumps(self.to_dict(), indent=2) + "\n")


def _initializer(config):
    # google-research/bert modeling.py `create_initializer`: truncated normal, stddev initializer_range.
    return keras.initializers.TruncatedNormal(stddev=config.initializer_range)


# === Layers ===


class ReplicaDropout(keras.layers.Dropout):
    """Keras' Dropout, with the replica folded into its seed: independent masks on every replica.

    Keras draws dropout seeds from a SeedGenerator whose state is one variable; under a tf.distribute strategy
    that variable is mirrored, so every replica would draw the same masks for the same input. Dropout is
    unsupervised SimCSE's data augmentation, so each replica folds its replica id into the drawn seed
    (`stateless_fold_in`, a hash): streams that never coincide, where adding the id to the seed's counter would make
    replica r's draw k replica 0's draw k + r. On one device the masks are exactly Keras' Dropout's.
    """

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        seed = self.seed_generator.next()  # int [2], the same on every replica
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            seed = tf.random.experimental.stateless_fold_in(seed, replica.replica_id_in_sync_group)  # int [2]
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
        >>> import google_checkpoint
        >>> google_checkpoint.load_checkpoint(encoder, "../shared/data/checkpoints/tiny-char-mlm/model.ckpt")
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
    """A Keras model from the encoder's input dict to one float32 embedding per sentence, [batch, hidden], whatever
    precision the encoder computes in."""
    inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in INPUT_NAMES}
    embeddings = keras.ops.cast(pool(encoder(inputs), inputs["input_mask"], pooling), "float32")  # [batch, hidden]
    return keras.Model(inputs=inputs, outputs=embeddings, name=f"{pooling}_embedder")
