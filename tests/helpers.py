"""Test helpers and constants, imported by the test modules (conftest.py keeps the fixtures and the process-wide
set-up): where the shared sample data is, the test model configs, a writer of Google-format (TF1) BERT
checkpoints, script runners and what their failures look like, the datasets' stand-in downloads."""

import hashlib
import json
import os
import pathlib
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf

import data
import model
import sts

REPO = pathlib.Path(__file__).resolve().parent.parent

# The sample data the learning and end-to-end tests read (not part of the repository): SIMCSE_SHARED_DATA, by
# default ../shared/data beside the clone. Tests that need it skip without it.
SHARED_DATA = pathlib.Path(os.environ.get("SIMCSE_SHARED_DATA", REPO.parent / "shared" / "data"))

VOCAB = SHARED_DATA / "vocabs" / "vocab_char_16424.txt"

TINY_CHECKPOINT_DIR = SHARED_DATA / "checkpoints" / "tiny-char-mlm"

TINY = {
    "config": TINY_CHECKPOINT_DIR / "bert_config.json",
    "pretrained_weight": TINY_CHECKPOINT_DIR / "model.ckpt",
    "vocab_path": VOCAB,
}

SHARED_DATA_ABSENT = f"shared data not found at {SHARED_DATA} (SIMCSE_SHARED_DATA)"

needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=SHARED_DATA_ABSENT)


def require_shared():
    """Skips the calling test or fixture, with the one reason, without the shared data."""
    if not SHARED_DATA.is_dir():
        pytest.skip(SHARED_DATA_ABSENT)


# loopback.HttpsMirror makes its certificate with the openssl command.
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not found (HttpsMirror uses it)")


def google_bert_weights(config, seed=0):
    """Random weights for every variable of google-research/bert, by checkpoint name, float32."""
    rng = np.random.default_rng(seed)
    h, i = config["hidden_size"], config["intermediate_size"]

    def normal(*shape):
        return rng.normal(0.0, 0.2, shape).astype(np.float32)

    weights = {
        "bert/embeddings/word_embeddings": normal(config["vocab_size"], h),
        "bert/embeddings/token_type_embeddings": normal(config["type_vocab_size"], h),
        "bert/embeddings/position_embeddings": normal(config["max_position_embeddings"], h),
        "bert/embeddings/LayerNorm/gamma": 1.0 + normal(h),
        "bert/embeddings/LayerNorm/beta": normal(h),
        "bert/pooler/dense/kernel": normal(h, h),
        "bert/pooler/dense/bias": normal(h),
    }
    for layer in range(config["num_hidden_layers"]):
        p = f"bert/encoder/layer_{layer}/"
        for name, shape in {
            "attention/self/query": (h, h),
            "attention/self/key": (h, h),
            "attention/self/value": (h, h),
            "attention/output/dense": (h, h),
            "intermediate/dense": (h, i),
            "output/dense": (i, h),
        }.items():
            weights[p + name + "/kernel"] = normal(*shape)
            weights[p + name + "/bias"] = normal(shape[1])
        for name in ("attention/output/LayerNorm", "output/LayerNorm"):
            weights[p + name + "/gamma"] = 1.0 + normal(h)
            weights[p + name + "/beta"] = normal(h)
    return weights


def write_tf1_checkpoint(prefix, weights, pretraining_extras=True):
    """Writes `weights` with a TF1 graph-mode Saver, as google-research/bert does, plus what pretraining
    checkpoints also hold: Adam slots, global_step and a `cls/` head."""
    variables = dict(weights)
    if pretraining_extras:
        for name, value in weights.items():
            variables[name + "/adam_m"] = np.zeros_like(value)
            variables[name + "/adam_v"] = np.ones_like(value)
        variables["global_step"] = np.int64(2000000)
        variables["cls/predictions/output_bias"] = np.zeros([7], np.float32)
    graph = tf.Graph()
    with graph.as_default():
        tf_variables = [tf.compat.v1.Variable(value, name=name) for name, value in variables.items()]
        saver = tf.compat.v1.train.Saver(tf_variables)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return saver.save(session, str(prefix), write_meta_graph=False)


def run_script(*args, timeout=900, stdin=None):
    """Runs a repository script in a subprocess, as a user would."""
    import subprocess

    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def last_stderr_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def eval_history(run_dir):
    return [json.loads(line) for line in (run_dir / "eval_history.jsonl").read_text().splitlines()]


def assert_failed_cleanly(result, message):
    """Bad input: a non-zero exit and one clear line on stderr starting with `message`, no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert last_stderr_line(result).startswith(message), result.stderr[-2000:]


def command_line(script, options):
    """[script, --flag=value ...] from a dict; True is a bare boolean flag."""
    args = [script]
    for name, value in options.items():
        if value is True:
            args.append(f"--{name}")
        else:
            args.append(f"--{name}={value}")
    return args


# The tiny checkpoint's vocab and positions with one narrow layer, trained from random initialisation: for tests
# of the machinery (command line, resuming, failures), where tracing and running the model should cost little.
MICRO = {
    "vocab_size": 16424,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
}


def tiny_embedder(pooling="cls", checkpoint=None):
    """A float32 embedder of the tiny checkpoint (or of `checkpoint`, of the same config)."""
    encoder = model.BertEncoder(model.BertConfig.from_json_file(TINY["config"]), dtype="float32")
    model.load_checkpoint(encoder, str(checkpoint or TINY["pretrained_weight"]))
    return model.sentence_embedder(encoder, pooling)


def sts_scores(data_dir, embedder, max_sequence_length, sets=("korsts:dev", "klue_sts:dev")):
    """What evaluate.py computes for `embedder`: {set: {n, pearson, spearman, alignment, uniformity}}."""
    tokenizer = data.KrBertTokenizer(str(VOCAB), max_sequence_length)
    pairs = {key: data.sts_pairs(*key.split(":"), data_dir) for key in sets}
    return sts.StsEvaluator(pairs, tokenizer.trimmed, embedder, batch_size=64)()


# KorSTS test, KLUE STS train and KorNLI's train and test files are not in the shared data: rows of the dev files
# stand in for them, this many, a window of their own for each (tfds names a download by its checksum).
STAND_IN_ROWS = 200


def stand_in(relative, window):
    """Rows `window * STAND_IN_ROWS` on of the shared file `relative`, in its format."""
    rows = slice(window * STAND_IN_ROWS, (window + 1) * STAND_IN_ROWS)
    content = (SHARED_DATA / relative).read_bytes()
    if relative.endswith(".json"):
        return json.dumps(json.loads(content)[rows], ensure_ascii=False).encode("utf-8")
    header, *lines = content.splitlines(keepends=True)
    return header + b"".join(lines[rows])


def tfds_korean_downloads(directory):
    """What the tfds-korean builders download, made from ../shared/data: {url: bytes}; and in `directory`, for each
    dataset, `<dataset>.tsv` in tfds' checksums format, to register in place of the builder's own.

    Upstream files the shared data holds are served as they are: their checksums are the registered ones. Absent
    files get stand-ins, and corpus.zip is the shared sample, not the release: those have checksums of their own.
    """
    stand_ins = {
        "korsts/sts-test.tsv": ("korsts/sts-dev.tsv", 0),
        "klue_sts/klue-sts-v1.1_train.json": ("klue_sts/klue-sts-v1.1_dev.json", 0),
        "kornli/multinli.train.ko.tsv": ("kornli/xnli.dev.ko.tsv", 0),
        "kornli/snli_1.0_train.ko.tsv": ("kornli/xnli.dev.ko.tsv", 1),
        "kornli/xnli.test.ko.tsv": ("kornli/xnli.dev.ko.tsv", 2),
    }
    files = {}
    for name, sources in data.SOURCE_FILES.items():
        checksums = []
        for url in data.upstream_urls(name):
            (relative,) = [path for path in sources.values() if url.endswith("/" + path.rsplit("/", 1)[-1])]
            window = stand_ins.get(relative)
            content = stand_in(*window) if window else (SHARED_DATA / relative).read_bytes()
            files[url] = content
            checksums.append(f"{url}\t{len(content)}\t{hashlib.sha256(content).hexdigest()}\t{url.rsplit('/', 1)[-1]}")
        (directory / f"{name}.tsv").write_text("\n".join(checksums) + "\n")
    return files


# === Test model configs ===

# Two narrow layers of a 60-token vocab: the encoder against the numpy reference, checkpoints, pooling.
SMALL = {
    "vocab_size": 60,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 48,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 16,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
}
# Hidden size 8: the benchmark's arithmetic on shapes small enough to time in milliseconds.
BENCHMARK_TINY = {**SMALL, "vocab_size": 40, "hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 12}
