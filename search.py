"""Semantic search with an exported model: embeds a corpus (one sentence per line) and prints, for each query,
the top-k corpus sentences by cosine similarity.

    python search.py --model=exported/krbert-simcse --corpus=sentences.txt --query="오늘 날씨 어때?"
    python search.py --model=exported/krbert-simcse --corpus=sentences.txt < queries.txt

The corpus embeddings are cached next to the corpus (`<corpus>.<key>.npy`, the key a hash of the model, from its
fingerprint.pb, and of the corpus), so a second search over the same corpus only embeds the queries. Search is
exhaustive, up to 1,000,000 corpus sentences; past that, use an approximate nearest-neighbour index.
"""

import contextlib
import hashlib
import os
import sys

import keras
import numpy as np
import tensorflow as tf
from absl import flags, logging

import errors
import model

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "A SavedModel written by export.py.")
flags.DEFINE_string("corpus", None, "Text file, one sentence per line.")
flags.DEFINE_integer("top_k", 5, "Sentences to print per query.", lower_bound=1)
flags.DEFINE_string("query", None, "One query; without it, one query per line of standard input.")
flags.DEFINE_integer("batch_size", 256, "Sentences embedded per batch.", lower_bound=1)
for name in ("model", "corpus"):
    flags.mark_flag_as_required(name)


# Exhaustive search holds every corpus embedding in memory (a base model's 768 floats: 3 GB per million sentences).
MAX_CORPUS_SENTENCES = 1_000_000


def read_corpus(path):
    if not os.path.isfile(path):
        raise errors.InputError(f"corpus {path} is not a file")
    sentences = [line.rstrip("\n") for line in errors.read_lines(path) if line.strip()]
    if not sentences:
        raise errors.InputError(f"corpus {path} has no sentences")
    if len(sentences) > MAX_CORPUS_SENTENCES:
        raise errors.InputError(
            f"corpus {path} has {len(sentences):,} sentences, more than exhaustive search holds in memory "
            f"({MAX_CORPUS_SENTENCES:,}): embed it in parts with the exported model and search an approximate "
            "nearest-neighbour index (faiss, ScaNN)"
        )
    return sentences


def cache_path(model_dir, corpus_path):
    """`<corpus>.<hash of the model's graph and weights and of the corpus>.npy`."""
    digest = hashlib.sha256(model.saved_model_fingerprint(model_dir).encode())
    with open(corpus_path, "rb") as f:
        digest.update(f.read())
    return f"{corpus_path}.{digest.hexdigest()[:16]}.npy"


def embed(embedder, sentences, verbose):
    """[sentences, hidden] L2-normalised embeddings, in the order given; embedded shortest first, so that a batch
    holds sentences of about one length and carries little padding."""
    progress = keras.utils.Progbar(len(sentences), verbose=int(verbose), unit_name="sentence")
    order = np.argsort([len(sentence) for sentence in sentences], kind="stable")
    batches = []
    for start in range(0, len(sentences), FLAGS.batch_size):
        batches.append(embedder(tf.constant([sentences[row] for row in order[start : start + FLAGS.batch_size]])))
        progress.add(len(batches[-1]))
    shortest_first = np.concatenate(batches)  # [sentences, hidden]
    embeddings = np.empty_like(shortest_first)
    embeddings[order] = shortest_first
    return embeddings


def corpus_embeddings(embedder, sentences):
    path = cache_path(FLAGS.model, FLAGS.corpus)
    if os.path.exists(path):
        return np.load(path)
    with contextlib.redirect_stdout(sys.stderr):  # the progress bar; stdout is for results
        embeddings = embed(embedder, sentences, verbose=True)
    temporary = f"{path}.tmp-{os.getpid()}.npy"
    try:
        np.save(temporary, embeddings)
        os.replace(temporary, path)
    except OSError as error:  # a cache is an optimisation: searching goes on without it
        logging.warning("corpus embeddings not cached: %s", errors.one_line(error))
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return embeddings


def search():
    sentences = read_corpus(FLAGS.corpus)
    embedder = model.load_saved_embedder(FLAGS.model)
    corpus = corpus_embeddings(embedder, sentences)  # [corpus, hidden]
    if FLAGS.query is not None:
        queries = [FLAGS.query]
    else:
        queries = [line.strip() for line in errors.decode_lines(sys.stdin.buffer, "standard input") if line.strip()]
    if not queries:
        raise errors.InputError("no query: give --query or queries on standard input")
    top_k = min(FLAGS.top_k, len(sentences))
    for query, embedding in zip(queries, embed(embedder, queries, verbose=False), strict=True):
        scores = corpus @ embedding  # cosine similarities, [corpus]
        best = np.argpartition(-scores, top_k - 1)[:top_k]  # the top k, unordered: linear in the corpus
        print(f"query: {query}")
        for rank, index in enumerate(best[np.argsort(-scores[best], kind="stable")], start=1):
            print(f"{rank:>3}. {scores[index]:.4f}  {sentences[index]}")
        print()


def main(argv):
    if len(argv) > 1:
        raise errors.InputError(f"unexpected arguments: {' '.join(argv[1:])}")
    search()


if __name__ == "__main__":
    errors.run(main)
