"""An independent numpy BERT, written from google-research/bert modeling.py, reading weights by checkpoint name."""

import math

import numpy as np


def layer_norm(x, gamma, beta, epsilon=1e-12):
    mean = x.mean(axis=-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def gelu(x):
    # modeling.py: 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * (x * x * x))))  # x * x * x: fast


def softmax(x):
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def bert(weights, num_layers, num_heads, word_ids, mask, type_ids, dtype=np.float64):
    """Returns (sequence_output [batch, seq, hidden], pooled_output [batch, hidden]) in `dtype` (float64 unless a
    caller trades precision for time)."""
    w = {name: np.asarray(value, dtype) for name, value in weights.items()}
    batch, seq = word_ids.shape
    x = (
        w["bert/embeddings/word_embeddings"][word_ids]
        + w["bert/embeddings/token_type_embeddings"][type_ids]
        + w["bert/embeddings/position_embeddings"][:seq][None]
    )
    x = layer_norm(x, w["bert/embeddings/LayerNorm/gamma"], w["bert/embeddings/LayerNorm/beta"])
    hidden = x.shape[-1]
    head = hidden // num_heads
    adder = (1.0 - mask[:, None, None, :].astype(dtype)) * -10000.0
    for i in range(num_layers):
        p = f"bert/encoder/layer_{i}/"

        def dense(inputs, name, p=p):
            return inputs @ w[p + name + "/kernel"] + w[p + name + "/bias"]

        def heads(t):
            return t.reshape(batch, seq, num_heads, head).transpose(0, 2, 1, 3)

        q, k, v = (heads(dense(x, f"attention/self/{n}")) for n in ("query", "key", "value"))
        probs = softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(head) + adder)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
        attention = layer_norm(
            dense(context, "attention/output/dense") + x,
            w[p + "attention/output/LayerNorm/gamma"],
            w[p + "attention/output/LayerNorm/beta"],
        )
        intermediate = gelu(dense(attention, "intermediate/dense"))
        x = layer_norm(
            dense(intermediate, "output/dense") + attention,
            w[p + "output/LayerNorm/gamma"],
            w[p + "output/LayerNorm/beta"],
        )
    pooled = np.tanh(x[:, 0] @ w["bert/pooler/dense/kernel"] + w["bert/pooler/dense/bias"])
    return x, pooled
