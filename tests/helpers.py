"""Test helpers and constants, imported by the test modules (conftest.py keeps the fixtures and the process-wide
set-up): where the shared sample data is, the test model configs, a writer of Google-format (TF1) BERT
checkpoints, script runners and what their failures look like, the datasets' stand-in downloads, and the data the
tests make themselves where the shared data is not needed: Korean sentences, their vocab, upstream files of them."""

import hashlib
import itertools
import json
import os
import pathlib
import shutil
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf

import data
import distribution
import google_checkpoint
import model
import source_files
import sts
import tokenization
import training

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
# Encoding in bfloat16 is refused where it is not native (distribution.encoding_policy).
needs_native_bfloat16 = pytest.mark.skipif(
    distribution.bfloat16_device() is None, reason="this machine has no native bfloat16 (GPU 8.0+, AVX512_BF16, AMX)"
)


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


def float32_embedder(files, pooling="cls", checkpoint=None):
    """A float32 embedder of a model's `files` (TINY or the `random_bert` fixture's), or of `checkpoint` of the
    same config."""
    encoder = model.BertEncoder(model.BertConfig.from_json_file(files["config"]), dtype="float32")
    google_checkpoint.load_checkpoint(encoder, str(checkpoint or files["pretrained_weight"]))
    return model.sentence_embedder(encoder, pooling)


def sts_scores(data_dir, embedder, max_sequence_length, sets=("korsts:dev", "klue_sts:dev"), vocab_path=VOCAB):
    """What evaluate.py computes for `embedder`: {set: {n, pearson, spearman, alignment, uniformity}}."""
    tokenizer = tokenization.KrBertTokenizer(str(vocab_path), max_sequence_length)
    pairs = {key: data.sts_pairs(*key.split(":"), data_dir) for key in sets}
    return sts.StsEvaluator(pairs, tokenizer.trimmed, embedder, batch_size=64)()


# KorSTS test, KLUE STS train and KorNLI's train and test files are not in the shared data: rows of the dev files
# stand in for them, this many, a window of their own for each (tfds names a download by its checksum).
STAND_IN_ROWS = 200
# The self-made dev files (write_upstream_files) hold 16 to 48 rows: windows of this many.
SELF_MADE_STAND_IN_ROWS = 8


def stand_in(path, window, rows):
    """Rows `window * rows` on of the upstream file at `path`, in its format."""
    rows = slice(window * rows, (window + 1) * rows)
    content = path.read_bytes()
    if path.suffix == ".json":
        return json.dumps(json.loads(content)[rows], ensure_ascii=False).encode("utf-8")
    header, *lines = content.splitlines(keepends=True)
    return header + b"".join(lines[rows])


def tfds_korean_downloads(directory, source_dir=SHARED_DATA, stand_in_rows=STAND_IN_ROWS):
    """What the tfds-korean builders download, made from the files in `source_dir` (the shared data, or
    write_upstream_files'): {url: bytes}; and in `directory`, for each dataset, `<dataset>.tsv` in tfds' checksums
    format, to register in place of the builder's own.

    Upstream files the shared data holds are served as they are: their checksums are the registered ones. Absent
    files get stand-ins of `stand_in_rows` rows, and corpus.zip is the shared sample, not the release: those, and
    every self-made file, have checksums of their own. Datasets with a file that is neither are left out.
    """
    stand_ins = {
        "korsts/sts-test.tsv": ("korsts/sts-dev.tsv", 0),
        "klue_sts/klue-sts-v1.1_train.json": ("klue_sts/klue-sts-v1.1_dev.json", 0),
        "kornli/multinli.train.ko.tsv": ("kornli/xnli.dev.ko.tsv", 0),
        "kornli/snli_1.0_train.ko.tsv": ("kornli/xnli.dev.ko.tsv", 1),
        "kornli/xnli.test.ko.tsv": ("kornli/xnli.dev.ko.tsv", 2),
    }
    files = {}
    for name, sources in source_files.SOURCE_FILES.items():
        if not all((source_dir / path).exists() or path in stand_ins for path in sources.values()):
            continue  # a dataset with a file neither present nor stood in for is not mirrored
        checksums = []
        for url in data.upstream_urls(name):
            (relative,) = [path for path in sources.values() if url.endswith("/" + path.rsplit("/", 1)[-1])]
            window = stand_ins.get(relative)
            if window:
                content = stand_in(source_dir / window[0], window[1], stand_in_rows)
            else:
                content = (source_dir / relative).read_bytes()
            files[url] = content
            checksums.append(f"{url}\t{len(content)}\t{hashlib.sha256(content).hexdigest()}\t{url.rsplit('/', 1)[-1]}")
        (directory / f"{name}.tsv").write_text("\n".join(checksums) + "\n")
    return files


# === Text the tests make their data of ===

# Sentences of the tokenizer, evaluation and export tests: Hangul, Latin, digits, punctuation, an emoji.
KOREAN_SENTENCES = [
    "한국어 문장 임베딩을 학습한다.",
    "문장을 벡터로 바꾸면 의미가 가까운 문장끼리 가까워진다.",
    "오늘 서울의 날씨는 맑고, 기온은 영상 5도입니다!",
    "KorSTS와 KLUE STS로 평가했다 (스피어만 상관계수).",
    "그는 2021년에 SimCSE 논문을 읽었다…",
    "안전모를 가진 한 남자가 춤을 추고 있다.",
    "안녕하세요. KR-BERT 문장 임베딩 😀",
    "아주 긴 문장은 잘리고 짧은 문장은 채워진다.",
]

# The sentences of the self-made datasets: who, where and what, every combination (4 x 3 x 4 = 48).
WHO = ("한 남자가", "여자가", "아이가", "고양이가")
WHERE = ("공원에서", "집에서", "바닷가에서")
WHAT = ("춤을 춘다.", "노래를 부른다.", "책을 읽는다.", "잠을 잔다.")


def scene(who, where, what):
    """The sentence of WHO[who], WHERE[where] and WHAT[what]."""
    return f"{WHO[who]} {WHERE[where]} {WHAT[what]}"


SCENES = list(itertools.product(range(len(WHO)), range(len(WHERE)), range(len(WHAT))))

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def character_vocab(sentences):
    """BERT's special tokens, then every character of `sentences` alone and as a ##-piece, as KR-BERT character's
    vocab is made: WordPiece splits every word of `sentences` into known characters."""
    characters = sorted({char for sentence in sentences for char in sentence if not char.isspace()})
    return [*SPECIAL_TOKENS, *(piece for char in characters for piece in (char, f"##{char}"))]


CHARACTER_VOCAB = character_vocab([*KOREAN_SENTENCES, *WHO, *WHERE, *WHAT])


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
# The tiny checkpoint's vocab and positions with one narrow layer, trained from random initialisation: for tests
# of the machinery (Hugging Face directories, the scripts' command lines), where tracing and running the model
# should cost little.
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

# MICRO over CHARACTER_VOCAB: the random BERT (the `random_bert` fixture) of the tests that need no shared data:
# resuming, failures, evaluation and export.
MICRO_CHARACTER = {**MICRO, "vocab_size": len(CHARACTER_VOCAB)}
# Dropout off: the same function on every call, so gradients and losses can be compared exactly.
SMALL_NO_DROPOUT = {**SMALL, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
# Hidden size 8: the benchmark's arithmetic on shapes small enough to time in milliseconds.
BENCHMARK_TINY = {**SMALL, "vocab_size": 40, "hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 12}
# Not Google's numerics: the erf GELU (Hugging Face's "gelu") and another LayerNorm epsilon.
HUGGINGFACE_NUMERICS = {"hidden_act": "gelu_exact", "layer_norm_eps": 1e-7}
# MICRO with dropout off: test_multi_worker's runs then compute the same function of the same batches, and their
# losses must agree.
MICRO_NO_DROPOUT = {**MICRO, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def small_inputs():
    """A batch of SMALL's ids: three rows, two of them padded as the tokenizer pads, one with a second segment."""
    rng = np.random.default_rng(1)
    ids = rng.integers(5, SMALL["vocab_size"], size=(3, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0  # padded rows, as the tokenizer produces them
    mask[2, 3:] = 0
    ids = ids * mask
    type_ids = np.zeros_like(ids)
    type_ids[0, 5:] = 1
    return {"input_word_ids": ids, "input_mask": mask, "input_type_ids": type_ids}


# === Data the tests make themselves: a random BERT, upstream files ===


def write_vocab(path, tokens=CHARACTER_VOCAB):
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def write_random_bert(directory, seed=0):
    """MICRO_CHARACTER of random weights as google-research/bert leaves a checkpoint, its bert_config.json and
    vocab.txt beside it: {config, pretrained_weight, vocab_path}, as TINY."""
    (directory / "bert_config.json").write_text(json.dumps(MICRO_CHARACTER))
    return {
        "config": directory / "bert_config.json",
        "pretrained_weight": write_tf1_checkpoint(directory / "model.ckpt", google_bert_weights(MICRO_CHARACTER, seed)),
        "vocab_path": write_vocab(directory / "vocab.txt"),
    }


def scene_pairs():
    """(sentence1, sentence2, score) of every scene against the scene with one, two or all three of its parts
    changed, scored 3.333, 1.667 and 0."""
    pairs = []
    for index, parts in enumerate(SCENES):
        changes = index % 7 + 1
        changed = (changes % 2, changes // 2 % 2, changes // 4)  # of who, where, what
        other = [
            (part + change) % len(names) for part, change, names in zip(parts, changed, (WHO, WHERE, WHAT), strict=True)
        ]
        pairs.append((scene(*parts), scene(*other), round(5.0 - 5.0 * sum(changed) / 3, 3)))
    return pairs


KORSTS_HEADER = "genre\tfilename\tyear\tid\tscore\tsentence1\tsentence2"


def write_upstream_files(source_dir):
    """Upstream files of the scenes, in the upstream formats and laid out as the shared data is (the same files
    absent): KorSTS train and dev (24 pairs each), KLUE STS dev (16 pairs), KorNLI XNLI dev (16 premises, each with
    an entailment, a contradiction and a neutral hypothesis), and a corpus.zip of the scenes and KOREAN_SENTENCES."""
    pairs = scene_pairs()
    for split, rows in (("train", pairs[24:]), ("dev", pairs[:24])):
        lines = [
            f"main-captions\tMSRvid\t2012test\t{i:04d}\t{score:.3f}\t{a}\t{b}" for i, (a, b, score) in enumerate(rows)
        ]
        write_text(source_dir / "korsts" / f"sts-{split}.tsv", [KORSTS_HEADER, *lines])
    klue = [
        {
            "guid": f"klue-sts-v1_dev_{i:05d}",
            "source": "airbnb-rtt",
            "sentence1": a,
            "sentence2": b,
            "labels": {"label": score, "real-label": score, "binary-label": int(score >= 3.0)},
        }
        for i, (a, b, score) in enumerate(pairs[::3])
    ]
    (source_dir / "klue_sts").mkdir(parents=True)
    (source_dir / "klue_sts" / "klue-sts-v1.1_dev.json").write_text(json.dumps(klue, ensure_ascii=False), "utf-8")
    nli = ["sentence1\tsentence2\tgold_label"]
    for who, where, what in SCENES[::3]:
        premise = scene(who, where, what)
        nli += [
            f"{premise}\t{WHO[who]} {WHAT[what]}\tentailment",
            f"{premise}\t{scene(who, where, (what + 1) % len(WHAT))}\tcontradiction",
            f"{premise}\t{scene((who + 1) % len(WHO), where, what)}\tneutral",
        ]
    write_text(source_dir / "kornli" / "xnli.dev.ko.tsv", nli)
    documents = [
        [WHO[who], *(scene(who, *rest) for rest in itertools.product(range(len(WHERE)), range(len(WHAT))))]
        for who in range(len(WHO))
    ]
    documents.append(["문장들", *KOREAN_SENTENCES])
    (source_dir / "korean_wikipedia_corpus").mkdir(parents=True)
    with zipfile.ZipFile(source_dir / "korean_wikipedia_corpus" / "corpus.zip", "w") as corpus:
        corpus.writestr("text-preprocessed/AA/wiki_00", "".join("\n".join(lines) + "\n\n" for lines in documents))
    write_task_files(source_dir)
    return source_dir


# The self-made classes: NSMC's label by what is done (dancing and singing 1, positive), KLUE TC's topic by where.
POSITIVE_WHAT = (0, 1)
TOPICS = ("사회", "생활문화", "세계")


def write_task_files(source_dir):
    """Upstream files of the transfer tasks, of the scenes: NSMC train and test (24 reviews each), KLUE TC (YNAT)
    train and dev (24 headlines each, 3 topics), Question pair train, validation and test (16, 8 and 8 pairs: a
    scene and the scene elsewhere are the same question, is_duplicate 0; a scene and the scene doing something else
    are not, 1), and KorQuAD 1.0 dev (2 articles of 6 paragraphs, each 4 scenes of one who and where, and 2
    questions on each: who does what)."""
    for split, parts in (("train", SCENES[0::2]), ("test", SCENES[1::2])):
        rows = [f"{index}\t{scene(*p)}\t{int(p[2] in POSITIVE_WHAT)}" for index, p in enumerate(parts)]
        write_text(source_dir / "nsmc" / f"ratings_{split}.txt", ["id\tdocument\tlabel", *rows])
    for split, parts in (("train", SCENES[0::2]), ("dev", SCENES[1::2])):
        headlines = [
            {"guid": f"ynat-v1_{split}_{index:05d}", "title": scene(*p), "predefined_news_category": TOPICS[p[1]],
             "label": TOPICS[p[1]], "url": f"https://news.example/{index}", "date": "2016.06.30. 오전 10:36"}
            for index, p in enumerate(parts)
        ]  # fmt: skip
        (source_dir / "klue_tc").mkdir(exist_ok=True)
        (source_dir / "klue_tc" / f"ynat-v1.1_{split}.json").write_text(
            json.dumps(headlines, ensure_ascii=False), "utf-8"
        )
    pairs = []
    for index, (who, where, what) in enumerate(SCENES):
        if index % 2:
            pairs.append(f"{scene(who, where, what)}\t{scene(who, (where + 1) % len(WHERE), what)}\t0")
        else:
            pairs.append(f"{scene(who, where, what)}\t{scene(who, where, (what + 1) % len(WHAT))}\t1")
    for split, rows in (("train", pairs[:16]), ("validation", pairs[16:24]), ("test", pairs[24:32])):
        write_text(source_dir / "question_pair" / f"{split}.txt", ["question1\tquestion2\tis_duplicate", *rows])
    articles = []
    for article in range(2):
        paragraphs = []
        for who, where in itertools.product(range(article * 2, article * 2 + 2), range(len(WHERE))):
            qas = [
                {"id": f"{article}-{who}-{where}-{what}", "question": f"{WHO[who]} {WHAT[what]}",
                 "answers": [{"text": WHERE[where], "answer_start": len(WHO[who]) + 1}]}
                for what in (where % len(WHAT), (where + 2) % len(WHAT))
            ]  # fmt: skip
            context = " ".join(scene(who, where, what) for what in range(len(WHAT)))
            paragraphs.append({"context": context, "qas": qas})
        articles.append({"title": f"문서 {article}", "paragraphs": paragraphs})
    (source_dir / "korquad").mkdir()
    (source_dir / "korquad" / "KorQuAD_v1.0_dev.json").write_text(
        json.dumps({"version": "KorQuAD_v1.0_dev", "data": articles}, ensure_ascii=False), "utf-8"
    )


def write_text(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# === In-process training (test_training.py, test_resuming.py) ===

# Small and fast: every evaluation and save happens within seconds.
QUICK_RECIPE = {
    "kind": "unsupervised",
    "total_steps": 30,
    "batch_size": 16,
    "learning_rate": 3e-5,
    "warmup_ratio": 0.05,
    "temperature": 0.05,
    "max_sequence_length": 16,
    "evaluation_frequency": 10,
    "seed": 42,
    "precision": "float32",
}


def make_recipe(**changes):
    return training.Recipe(**{**QUICK_RECIPE, **changes})


def train(
    data_dir, tmp_path, recipe, make_batches=None, strategy=None, sets=None, files=TINY, pretrained=True, **options
):
    """training.train of a model's `files` (the tiny checkpoint by default; pretrained=False: its config from random
    initialisation) into tmp_path/runs/run, on the data directory's corpus by default."""
    if make_batches is None:
        sentences = data.corpus_sentences(data_dir)

        def make_batches(tokenizer, seed):
            return data.unsupervised_batches(sentences, tokenizer, recipe.batch_size, seed)

    return training.train(
        recipe,
        model.BertConfig.from_json_file(files["config"]),
        str(files["vocab_path"]),
        make_batches,
        sets or training.load_evaluation_sets(data_dir),
        run_dir=str(tmp_path / "runs" / "run"),
        tensorboard_dir=str(tmp_path / "logs" / "run"),
        pretrained_weight=str(files["pretrained_weight"]) if pretrained else None,
        strategy=strategy,
        **options,
    )


def saved_optimizer_variable(state_prefix, name):
    """An optimizer variable of a saved training state: "iterations" is the one the learning rate follows (the
    wrapped optimizer's under loss scaling), "dynamic_scale" the loss scale."""
    reader = tf.train.load_checkpoint(state_prefix)
    saved = reader.get_variable_to_shape_map()
    prefixes = ("optimizer/inner_optimizer/_", "optimizer/_", "optimizer/")
    return reader.get_tensor(next(key for p in prefixes if (key := f"{p}{name}/.ATTRIBUTES/VARIABLE_VALUE") in saved))


def optimizer_step(state_prefix):
    return int(saved_optimizer_variable(state_prefix, "iterations"))
