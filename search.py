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
import sys

import numpy as np
import tensorflow as tf
from absl import flags, logging

import errors
import files
import model_flags
import saved_model
import sts

FLAGS = flags.FLAGS
# Exhaustive search holds every corpus embedding in memory (a base model's 768 floats: 3 GB per million sentences).
MAX_CORPUS_SENTENCES = 1_000_000


class Searcher:
    """Exhaustive cosine-similarity search over a corpus with an exported model.

    Args:
        model_dir: a SavedModel written by export.py.
        corpus_path: a text file, one sentence per line; its embeddings are cached next to it.
        batch_size: sentences embedded per batch.
    """

    def __init__(self, model_dir, corpus_path, batch_size=256):
        self.sentences = read_corpus(corpus_path)
        self.embedder = saved_model.load_saved_embedder(model_dir)
        self.batch_size = batch_size
        self.corpus = corpus_embeddings(self.embed, self.sentences, cache_path(model_dir, corpus_path))  # [corpus, h]

    def embed(self, sentences, verbose=False):
        """[sentences, hidden] L2-normalised embeddings, in the order given (`sts.embed_in_order`)."""
        return sts.embed_in_order(sentences, self.embedder, self.batch_size, verbose)

    def search(self, queries, top_k=5):
        """[(query, [(cosine similarity, corpus sentence), ...best first, at most top_k]), ...]."""
        top_k = min(top_k, len(self.sentences))
        results = []
        for query, embedding in zip(queries, self.embed(queries), strict=True):
            scores = self.corpus @ embedding  # cosine similarities, [corpus]
            best = np.argpartition(-scores, top_k - 1)[:top_k]  # the top k, unordered: linear in the corpus
            ranked = best[np.argsort(-scores[best], kind="stable")]
            results.append((query, [(float(scores[index]), self.sentences[index]) for index in ranked]))
        return results


def read_corpus(path):
    if not files.exists(path) or files.isdir(path):
        raise errors.FileError(f"corpus {path} is not a file")
    sentences = [line.rstrip("\n") for line in files.read_lines(path) if line.strip()]
    if not sentences:
        raise errors.DataError(f"corpus {path} has no sentences")
    if len(sentences) > MAX_CORPUS_SENTENCES:
        raise errors.DataError(
            f"corpus {path} has {len(sentences):,} sentences, more than exhaustive search holds in memory "
            f"({MAX_CORPUS_SENTENCES:,}): embed it in parts with the exported model and search an approximate "
            "nearest-neighbour index (faiss, ScaNN)"
        )
    return sentences


def cache_path(model_dir, corpus_path):
    """`<corpus>.<hash of the model's graph and weights and of the corpus>.npy`."""
    digest = hashlib.sha256(saved_model.saved_model_fingerprint(model_dir).encode())
    digest.update(files.read_bytes(corpus_path))
    return f"{corpus_path}.{digest.hexdigest()[:16]}.npy"


def corpus_embeddings(embed, sentences, path):
    """The embeddings of `sentences` (`embed(sentences, verbose)`), read from the cache at `path` or written there."""
    if files.exists(path):
        with files.open_file(path, "rb") as f:
            return np.load(f)
    with contextlib.redirect_stdout(sys.stderr):  # the progress bar; stdout is for results
        embeddings = embed(sentences, verbose=True)
    try:
        with files.renamed_into_place(path) as temporary, files.open_file(temporary, "wb") as f:
            np.save(f, embeddings)
    except (OSError, tf.errors.OpError) as error:  # a cache is an optimisation: searching goes on without it
        logging.warning("corpus embeddings not cached: %s", errors.one_line(error))
    return embeddings


def define_flags():
    """The flags of the script, defined when it runs (so that its functions import with any other script's)."""
    flags.DEFINE_string("model", None, "A SavedModel written by export.py.")
    flags.DEFINE_string("corpus", None, "Text file, one sentence per line.")
    flags.DEFINE_integer("top_k", 5, "Sentences to print per query.", lower_bound=1)
    flags.DEFINE_string("query", None, "One query; without it, one query per line of standard input.")
    model_flags.define_batch_size(256)
    for name in ("model", "corpus"):
        flags.mark_flag_as_required(name)


def main():
    searcher = Searcher(FLAGS.model, FLAGS.corpus, FLAGS.batch_size)
    if FLAGS.query is not None:
        queries = [FLAGS.query]
    else:
        queries = [line.strip() for line in files.decode_lines(sys.stdin.buffer, "standard input") if line.strip()]
    if not queries:
        raise errors.InputError("no query: give --query or queries on standard input")
    for query, ranked in searcher.search(queries, FLAGS.top_k):
        print(f"query: {query}")
        for rank, (score, sentence) in enumerate(ranked, start=1):
            print(f"{rank:>3}. {score:.4f}  {sentence}")
        print()


if __name__ == "__main__":
    define_flags()
    errors.run(main)
