"""The SavedModel export.py writes and search.py and evaluate.py read: tokenizer and sentence embedder in one
graph, raw sentences in, L2-normalised embeddings out, with the vocab as an asset.
"""

import os

import tensorflow as tf

import errors
import files


class SentenceEmbedder(tf.Module):
    """Tokenizer and embedder in one graph: strings [batch] -> {"embeddings": float32 [batch, hidden]},
    L2-normalised. `tokenizer` is a `tokenization.KrBertTokenizer`; its vocab becomes an asset of the SavedModel, its
    length the SavedModel's `max_sequence_length` and the embedder's `precision` its `precision` (variables, read
    back by `load_saved_embedder`)."""

    def __init__(self, tokenizer, embedder, precision):
        super().__init__()
        self.tokenizer = tokenizer
        self.embedder = embedder
        self.max_sequence_length = tf.Variable(tokenizer.max_sequence_length, trainable=False, dtype=tf.int32)
        self.precision = tf.Variable(precision, trainable=False, dtype=tf.string)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])
    def serve(self, sentences):
        embeddings = self.embedder(self.tokenizer.trimmed(sentences), training=False)  # float32 [batch, hidden]
        return {"embeddings": tf.math.l2_normalize(embeddings, axis=1)}


def save_embedder(embedder, tokenizer, path, precision="float32"):
    """Writes `tokenizer` and `embedder` (`model.sentence_embedder`, computing in `precision`) as a SavedModel at
    `path`, which must not exist: under a temporary name, renamed into place, so nothing half-written is ever at
    `path`."""
    files.check_new_directory(path)
    module = SentenceEmbedder(tokenizer, embedder, precision)
    with files.renamed_into_place(path) as temporary:
        tf.saved_model.save(module, temporary, signatures={"serving_default": module.serve})


def saved_model_fingerprint(path):
    """A hash of a SavedModel's graph, signatures and weights, read from the fingerprint.pb TensorFlow wrote with
    it (the weights enter through the checksums in the variables index), so nothing as large as the weights is
    read: equal for the same model, different for another."""
    try:
        return tf.saved_model.experimental.read_fingerprint(path).singleprint()
    except (tf.errors.OpError, ValueError) as error:
        raise errors.CheckpointError(f"no fingerprint of the SavedModel {path}: {errors.one_line(error)}") from None


def load_saved_embedder(path):
    """The `serving_default` function of a SavedModel written by export.py: strings [batch] -> embeddings; its
    `max_sequence_length` is the export's (None for an export made before it was recorded), its `precision` the
    export's (float32 for one made before it was recorded: they all computed in float32)."""
    import tensorflow_text  # noqa: F401  (registers the ops of the SavedModel's in-graph tokenizer)

    if not files.exists(os.path.join(path, "saved_model.pb")):
        raise errors.CheckpointError(f"no SavedModel at {path} (expected {os.path.join(path, 'saved_model.pb')})")
    try:
        loaded = tf.saved_model.load(path)
    except (tf.errors.OpError, ValueError, OSError) as error:
        raise errors.CheckpointError(f"{path} is not a loadable SavedModel: {errors.one_line(error)}") from None
    if "serving_default" not in loaded.signatures:
        raise errors.CheckpointError(f"SavedModel {path} has no serving_default signature")
    serve = loaded.signatures["serving_default"]

    def embed(sentences):
        return serve(sentences=sentences)["embeddings"]  # float32 [batch, hidden], L2-normalised

    embed.saved_model = loaded  # keeps the loaded objects alive as long as the function
    recorded = getattr(loaded, "max_sequence_length", None)
    embed.max_sequence_length = None if recorded is None else int(recorded.numpy())
    recorded = getattr(loaded, "precision", None)
    embed.precision = "float32" if recorded is None else recorded.numpy().decode()
    return embed
