"""Hugging Face BERT directories: weights and config round-trip, what is refused and how, export.py end to end
(evaluate.py reads one in test_evaluate.py); and, where benchmarks/requirements.txt is installed, transformers
and sentence-transformers against our embeddings."""

import collections
import importlib.util
import io
import json
import os
import pickle
import re
import shutil
import sys
import types
import zipfile

import loopback
import numpy as np
import pytest
import safetensors.numpy
import scipy.stats
import tensorflow as tf
from helpers import (
    HUGGINGFACE_NUMERICS,
    MICRO,
    REPO,
    SHARED_DATA,
    TINY,
    command_line,
    require_shared,
)

import errors
import hub
import huggingface
import model
import model_files
import model_flags
import run_directory
import sts
import tokenization
import torch_state_dict

needs_torch = pytest.mark.skipif(
    not all(importlib.util.find_spec(name) for name in ("transformers", "sentence_transformers")),
    reason="transformers and sentence-transformers not installed (pip install -r benchmarks/requirements.txt)",
)


def micro_vocab(path):
    """A vocab of MICRO's size with BERT's special tokens."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    path.write_text("\n".join(tokens + [f"t{i}" for i in range(MICRO["vocab_size"] - len(tokens))]) + "\n")
    return path


def random_encoder(config, seed):
    tf.random.set_seed(seed)
    return model.BertEncoder(config, dtype="float32")


def write_micro_directory(tmp_path, pooling="pooled", lower_case=False, **config):
    """A MICRO encoder of random weights written as a Hugging Face directory; (encoder, directory)."""
    encoder = random_encoder(model.BertConfig.from_dict({**MICRO, **config}), seed=1)
    directory = tmp_path / "hf"
    card = huggingface.model_card("test", pooling, 32)
    vocab = micro_vocab(tmp_path / "vocab.txt")
    huggingface.write_directory(encoder, str(vocab), lower_case, 32, pooling, str(directory), card)
    return encoder, directory


def assert_same_weights(encoder, other):
    expected = {name: variable.numpy() for name, variable in encoder.checkpoint_variables().items()}
    for name, variable in other.checkpoint_variables().items():
        np.testing.assert_array_equal(variable.numpy(), expected[name], err_msg=name)


def test_weights_and_config_round_trip(tmp_path):
    encoder, directory = write_micro_directory(tmp_path, lower_case=True, **HUGGINGFACE_NUMERICS)
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "bert" and config["hidden_act"] == "gelu" and config["layer_norm_eps"] == 1e-7
    assert huggingface.read_config(str(directory)) == encoder.config
    files = model_files.find(str(directory))
    assert files.config == encoder.config and files.lower_case is True
    assert files.vocab_path == str(directory / "vocab.txt")
    assert (directory / "vocab.txt").read_bytes() == (tmp_path / "vocab.txt").read_bytes()

    tensors = safetensors.numpy.load_file(str(directory / "model.safetensors"))
    assert len(tensors) == len(encoder.checkpoint_variables())
    kernel = encoder.checkpoint_variables()["bert/encoder/layer_0/attention/self/query/kernel"].numpy()
    np.testing.assert_array_equal(tensors["encoder.layer.0.attention.self.query.weight"], kernel.T)
    dense = safetensors.numpy.load_file(str(directory / "2_Dense" / "model.safetensors"))
    np.testing.assert_array_equal(dense["linear.weight"], encoder.pooler.kernel.numpy().T)

    loaded = random_encoder(files.config, seed=2)
    model_files.load_encoder_weights(loaded, str(directory))
    assert_same_weights(encoder, loaded)
    # Ours -> Hugging Face -> ours: the same tensors again.
    huggingface.write_directory(loaded, files.vocab_path, True, 32, "pooled", str(tmp_path / "again"), "card\n")
    again = safetensors.numpy.load_file(str(tmp_path / "again" / "model.safetensors"))
    assert again.keys() == tensors.keys()
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(again[name], tensor, err_msg=name)


def test_pretraining_checkpoints_and_old_names_load(tmp_path, caplog):
    """A BertForPreTraining-style file (`bert.` prefix, `cls.` heads, no pooler) and old LayerNorm gamma/beta."""
    encoder, directory = write_micro_directory(tmp_path)
    tensors = safetensors.numpy.load_file(str(directory / "model.safetensors"))
    renamed = {
        "bert." + name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): value
        for name, value in tensors.items()
        if not name.startswith("pooler.")
    }
    renamed["cls.predictions.bias"] = np.zeros(MICRO["vocab_size"], np.float32)
    safetensors.numpy.save_file(renamed, str(directory / "model.safetensors"), metadata={"format": "pt"})
    loaded = random_encoder(encoder.config, seed=2)
    pooler = loaded.pooler.kernel.numpy()
    model_files.load_encoder_weights(loaded, str(directory))
    np.testing.assert_array_equal(loaded.pooler.kernel.numpy(), pooler)  # left as initialised, as transformers does
    loaded.pooler.kernel.assign(encoder.pooler.kernel)
    loaded.pooler.bias.assign(encoder.pooler.bias)
    assert_same_weights(encoder, loaded)


def write_bfloat16_file(path, name):
    """The safetensors file at `path` rewritten with its tensor `name` in BF16 (numpy has no bfloat16 to write it
    with: its bytes are float32's upper halves)."""
    tensors = safetensors.numpy.load_file(str(path))
    header, data = {}, b""
    for key, tensor in tensors.items():
        dtype, raw = "F32", tensor.astype("<f4").tobytes()
        if key == name:
            dtype, raw = "BF16", (tensor.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
        header[key] = {"dtype": dtype, "shape": list(tensor.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    encoded = json.dumps(header).encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)


def edit_json(path, **values):
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


BAD_DIRECTORIES = {
    "no weights": (
        lambda d: (d / "model.safetensors").unlink(),
        "no model.safetensors or pytorch_model.bin in {d}",
    ),
    "pytorch_model.bin of another format": (
        lambda d: (d / "model.safetensors").rename(d / "pytorch_model.bin"),
        "{d}/pytorch_model.bin is not a PyTorch state dict of tensors: it is neither a zip archive nor a pickle",
    ),
    "not BERT": (
        lambda d: edit_json(d / "config.json", model_type="roberta"),
        "{d}/config.json is not a BERT config (model_type 'roberta', not 'bert')",
    ),
    "activation": (
        lambda d: edit_json(d / "config.json", hidden_act="silu"),
        "{d}/config.json has hidden_act 'silu', not one of gelu, gelu_new, gelu_pytorch_tanh, linear, relu, tanh",
    ),
    "relative positions": (
        lambda d: edit_json(d / "config.json", position_embedding_type="relative_key"),
        "{d}/config.json has position_embedding_type 'relative_key'",
    ),
    "another tokenizer": (
        lambda d: edit_json(d / "tokenizer_config.json", tokenizer_class="XLMRobertaTokenizer"),
        "{d}/tokenizer_config.json names tokenizer_class XLMRobertaTokenizer: only BERT's WordPiece tokenizer",
    ),
    "accents without lower-casing": (
        lambda d: edit_json(d / "tokenizer_config.json", strip_accents=True),
        "{d}/tokenizer_config.json sets strip_accents True with do_lower_case False",
    ),
    "no tokenizer config": (
        lambda d: (d / "tokenizer_config.json").unlink(),
        "no tokenizer_config.json in {d}: it says whether to lower-case",
    ),
    "bfloat16": (
        lambda d: write_bfloat16_file(d / "model.safetensors", "embeddings.word_embeddings.weight"),
        "{d}/model.safetensors holds embeddings.word_embeddings.weight as BF16, which numpy cannot read",
    ),
    "not safetensors": (
        lambda d: (d / "model.safetensors").write_bytes(b"not a safetensors file"),
        "{d}/model.safetensors is not a readable safetensors file",
    ),
    "missing tensor": (
        lambda d: safetensors.numpy.save_file(
            {
                name: tensor
                for name, tensor in safetensors.numpy.load_file(str(d / "model.safetensors")).items()
                if name != "encoder.layer.0.output.dense.weight"
            },
            str(d / "model.safetensors"),
        ),
        "{d}/model.safetensors has no tensor encoder.layer.0.output.dense.weight",
    ),
    "other shape": (
        lambda d: edit_json(d / "config.json", intermediate_size=48),
        "{d}/model.safetensors has encoder.layer.0.intermediate.dense.weight of shape [64, 32], the config makes "
        "it [48, 32]",
    ),
}


@pytest.mark.parametrize("case", list(BAD_DIRECTORIES))
def test_what_cannot_be_read_is_named(tmp_path, case):
    _, directory = write_micro_directory(tmp_path)
    damage, message = BAD_DIRECTORIES[case]
    damage(directory)
    with pytest.raises(errors.InputError) as raised:
        files = model_files.find(str(directory))
        model_files.resolve_weights(str(directory))
        model_files.load_encoder_weights(model.BertEncoder(files.config, dtype="float32"), str(directory))
    assert errors.one_line(raised.value).startswith(message.format(d=directory))


def test_a_run_checkpoint_and_kr_berts_release_bring_their_own_files(tmp_path, monkeypatch):
    """What training writes beside its checkpoints: bert_config.json, vocab.txt, tokenizer_config.json."""
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    model.BertConfig.from_dict({**MICRO, **HUGGINGFACE_NUMERICS}).to_json_file(run / "bert_config.json")
    micro_vocab(run / "vocab.txt")
    (run / "tokenizer_config.json").write_text(json.dumps(huggingface.tokenizer_config(True)))
    files = model_files.find(str(run / "best"))
    assert files.config.hidden_act == "gelu_exact" and files.vocab_path == str(run / "vocab.txt") and files.lower_case
    (run / "best" / "model.ckpt-5.index").write_bytes(b"")  # a checkpoint prefix that exists (never read here)
    assert not model_files.find(str(run / "best" / "model.ckpt-5"), lower_case=False).lower_case
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "model.ckpt.index").write_bytes(b"")
    message = (
        "has no bert_config.json and vocab.txt (nor KR-BERT's bert_config_char16424.json and vocab_char_16424.txt)"
    )
    with pytest.raises(errors.InputError, match=re.escape(message)):
        model_files.find(str(tmp_path / "elsewhere" / "model.ckpt"))
    # KR-BERT character's TensorFlow release, unpacked: its own names beside the checkpoint, wherever it is run from.
    release = tmp_path / "KR-BERT-char16424"
    release.mkdir()
    (release / "model.ckpt-2000000.index").write_bytes(b"")
    model.BertConfig.from_dict(MICRO).to_json_file(release / "bert_config_char16424.json")
    micro_vocab(release / "vocab_char_16424.txt")
    monkeypatch.chdir(tmp_path / "elsewhere")
    files = model_files.find(str(release / "model.ckpt-2000000"))
    assert (
        files.vocab_path == str(release / "vocab_char_16424.txt") and files.config.hidden_size == MICRO["hidden_size"]
    )
    assert not files.lower_case


@pytest.fixture(scope="module", params=["tiny checkpoint", "random BERT"])
def exported(request, run_in_fork, tmp_path_factory):
    """export.py --format=huggingface (in a fork: test_export runs it as a user does), pooler output, with
    evaluate.py's results in its card, and the KorSTS dev file to embed with it: the tiny checkpoint's and the shared
    data's, or the random BERT's and the self-made one."""
    if request.param == "tiny checkpoint":
        require_shared()
        files, korsts_dev = TINY, SHARED_DATA / "korsts" / "sts-dev.tsv"
    else:
        files = request.getfixturevalue("random_bert")
        korsts_dev = request.getfixturevalue("self_made_source_dir") / "korsts" / "sts-dev.tsv"
    directory = tmp_path_factory.mktemp("huggingface")
    results = directory / "results.json"
    results.write_text(json.dumps({"korsts:dev": {"n": 1500, "pearson": 0.5, "spearman": 0.25}}))
    options = {
        "config": files["config"],
        "checkpoint": files["pretrained_weight"],
        "vocab_path": files["vocab_path"],
        "output": directory / "model",
        "format": "huggingface",
        "pooling": "pooled",
        "results_json": results,
    }
    result = run_in_fork(*command_line("export.py", options))
    assert result.returncode == 0, result.stderr[-3000:]
    return directory / "model", korsts_dev


@pytest.mark.slow
def test_export_py_writes_what_sentence_transformers_reads(exported):
    exported_directory, _ = exported
    names = {
        path.relative_to(exported_directory).as_posix() for path in exported_directory.rglob("*") if path.is_file()
    }
    assert names == {
        "config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "README.md", "modules.json",
        "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json",
        "2_Dense/config.json", "2_Dense/model.safetensors",
    }  # fmt: skip
    assert json.loads((exported_directory / "1_Pooling" / "config.json").read_text())["pooling_mode_cls_token"]
    assert json.loads((exported_directory / "config.json").read_text())["hidden_act"] == "gelu_new"  # Google's tanh
    card = (exported_directory / "README.md").read_text()
    assert "| korsts:dev (1500 pairs) | Spearman | 25.00 | evaluate.py |" in card


def test_model_card_of_a_run_checkpoint_has_its_recipe_and_scores(tmp_path):
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "run_config.json").write_text(json.dumps({"kind": "supervised", "batch_size": 128, "bert_config": {}}))
    records = [{"step": step, "korsts_spearman": 0.3 + step / 100, "klue_sts_pearson": None} for step in (3, 6)]
    (run / "eval_history.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    run_config, record = run_directory.checkpoint_run(str(run / "best" / "model.ckpt-6"))
    assert run_config["batch_size"] == 128 and record["step"] == 6
    assert run_directory.checkpoint_run(str(run / "step-3"))[1]["step"] == 3
    assert run_directory.checkpoint_run(str(tmp_path / "elsewhere" / "model.ckpt")) == (None, None)
    card = huggingface.model_card("models/run/best", "cls", 48, run_config, record)
    assert "# Korean supervised SimCSE sentence encoder" in card and "| batch_size | 128 |" in card
    assert "| korsts:dev | Spearman | 36.00 | training, step 6 |" in card and "klue_sts" not in card  # None: left out


def korsts_dev_rows(korsts_dev):
    rows = [line.split("\t") for line in korsts_dev.read_text().splitlines()[1:]]
    return [row[5] for row in rows], [row[6] for row in rows]


def our_embeddings(directory, pooling, sentences):
    """Our float32 embeddings of `sentences` from a Hugging Face directory, as evaluate.py makes them."""
    files = model_files.find(str(directory))
    encoder = model.BertEncoder(files.config, dtype="float32")
    model_files.load_encoder_weights(encoder, str(directory))
    tokenizer = tokenization.KrBertTokenizer(files.vocab_path, 64, files.config.vocab_size, files.lower_case)
    embedder = model.sentence_embedder(encoder, pooling)
    return np.concatenate(
        [
            embedder(tokenizer.trimmed(tf.constant(sentences[i : i + 256]))).numpy()
            for i in range(0, len(sentences), 256)
        ]
    )


def korsts_dev_spearman(korsts_dev, first, second):
    """KorSTS dev Spearman of the cosine similarities of two [pairs, hidden] embeddings, as sts.StsEvaluator scores."""
    rows = [line.split("\t") for line in korsts_dev.read_text().splitlines()[1:]]
    first, second = sts.l2_normalize(first), sts.l2_normalize(second)
    return scipy.stats.spearmanr((first * second).sum(axis=1), [float(row[4]) for row in rows]).statistic


@pytest.mark.slow
@needs_torch
def test_transformers_gives_our_embeddings_for_a_huggingface_directory(exported, tmp_path):
    """A directory transformers wrote (BertForMaskedLM: `bert.` prefix, a head, no pooler), with the erf GELU and
    another LayerNorm epsilon: our [CLS] embeddings and KorSTS dev Spearman are transformers' BertModel's."""
    import torch
    import transformers

    exported_directory, korsts_dev = exported
    config = transformers.BertConfig.from_pretrained(str(exported_directory), hidden_act="gelu", layer_norm_eps=1e-7)
    masked_lm = transformers.BertForMaskedLM(config)
    source = transformers.BertModel.from_pretrained(str(exported_directory))
    masked_lm.bert.load_state_dict(source.state_dict(), strict=False)  # all but the pooler, which it has not
    masked_lm.save_pretrained(str(tmp_path / "mlm"))
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(exported_directory / name, tmp_path / "mlm" / name)

    bert = transformers.BertModel.from_pretrained(str(tmp_path / "mlm")).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "mlm"))
    first, second = korsts_dev_rows(korsts_dev)

    def their_embeddings(sentences):
        with torch.no_grad():
            inputs = tokenizer(sentences, padding=True, truncation=True, max_length=64, return_tensors="pt")
            return bert(**inputs).last_hidden_state[:, 0].numpy()

    theirs = [
        np.concatenate([their_embeddings(s[i : i + 256]) for i in range(0, len(s), 256)]) for s in (first, second)
    ]
    ours = [our_embeddings(tmp_path / "mlm", "cls", sentences) for sentences in (first, second)]
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert korsts_dev_spearman(korsts_dev, *ours) == pytest.approx(korsts_dev_spearman(korsts_dev, *theirs), abs=1e-3)


@pytest.mark.slow
@needs_torch
@pytest.mark.parametrize("pooling", ["pooled", "cls", "mean"])
def test_sentence_transformers_embeds_the_export_as_we_do(exported, tmp_path, pooling):
    import sentence_transformers

    exported_directory, korsts_dev = exported
    directory = exported_directory
    if pooling != "pooled":
        files = model_files.find(str(exported_directory))
        encoder = model.BertEncoder(files.config, dtype="float32")
        model_files.load_encoder_weights(encoder, str(exported_directory))
        directory = tmp_path / pooling
        huggingface.write_directory(encoder, files.vocab_path, False, 64, pooling, str(directory), "card\n")
    first, second = korsts_dev_rows(korsts_dev)
    encoder = sentence_transformers.SentenceTransformer(str(directory), device="cpu")
    theirs = [encoder.encode(sentences, batch_size=256) for sentences in (first, second)]
    ours = [our_embeddings(directory, pooling, sentences) for sentences in (first, second)]
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert korsts_dev_spearman(korsts_dev, *ours) == pytest.approx(korsts_dev_spearman(korsts_dev, *theirs), abs=1e-4)


# === The Hub (a loopback stand-in: HF_ENDPOINT) ===


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty huggingface_hub cache of the test's own, online (`use_hub` points it at a loopback Hub)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return tmp_path / "cache"


def use_hub(monkeypatch, hub):
    """What HF_ENDPOINT sets when huggingface_hub is imported (it is here already): its endpoint and URL template."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
    template = f"{hub.url}/{{repo_id}}/resolve/{{revision}}/{{filename}}"
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)


def test_a_hub_id_is_downloaded_once_then_read_from_the_cache_offline(tmp_path, hub_cache, monkeypatch):
    import huggingface_hub.constants

    encoder, directory = write_micro_directory(tmp_path, **HUGGINGFACE_NUMERICS)
    shutil.copytree(directory, tmp_path / "no-tokenizer-config")
    (tmp_path / "no-tokenizer-config" / "tokenizer_config.json").unlink()
    repos = {"test/micro-bert": directory, "test/no-tokenizer-config": tmp_path / "no-tokenizer-config"}
    repos["snunlp/KR-BERT-char16424"] = repos["test/no-tokenizer-config"]
    with loopback.FakeHub(repos) as hub:
        use_hub(monkeypatch, hub)
        files = model_files.find("test/micro-bert@main")
        assert ("GET", "/test/micro-bert/resolve/main/model.safetensors") in hub.requests
        # Without a tokenizer config, lower-casing must be given.
        with pytest.raises(errors.InputError, match="no tokenizer_config.json in .*: it says whether to lower-case"):
            model_files.find("test/no-tokenizer-config")
        assert model_files.find("test/no-tokenizer-config", lower_case=False).config == encoder.config
        # Unless its authors state it: KR-BERT character is cased (hub.HUB_LOWER_CASE).
        assert model_files.find("snunlp/KR-BERT-char16424@main").lower_case is False
    assert files.weights.startswith(str(hub_cache)) and files.config == encoder.config and not files.lower_case
    assert files.vocab_path == os.path.join(files.weights, "vocab.txt")
    loaded = random_encoder(files.config, seed=2)
    model_files.load_encoder_weights(loaded, files.weights)
    assert_same_weights(encoder, loaded)
    # The Hub gone and HF_HUB_OFFLINE set: the cache answers, as huggingface_hub's own offline mode does.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert model_files.find("test/micro-bert").weights == files.weights
    assert not model_files.find("test/no-tokenizer-config", lower_case=False).lower_case


def test_a_hostile_hub_model_is_refused_before_a_model_is_built(tmp_path, hub_cache, monkeypatch):
    """The scripts' way in (model_flags.find_model_files) for a Hub id whose pytorch_model.bin has a dict key nested
    300,000 deep (hashing it crashed Python's unpickler): refused, naming the downloaded file."""
    _, directory = write_micro_directory(tmp_path)
    (directory / "model.safetensors").unlink()
    with zipfile.ZipFile(directory / "pytorch_model.bin", "w") as archive:
        archive.writestr("archive/version", "3\n")
        archive.writestr("archive/data.pkl", b"\x80\x02}K\x00" + b"\x85" * 300_000 + b"K\x01s.")
    flags = types.SimpleNamespace(config=None, vocab_path=None, do_lower_case=None, max_sequence_length=8)
    with loopback.FakeHub({"test/hostile": directory}) as hub:
        use_hub(monkeypatch, hub)
        with pytest.raises(errors.CheckpointError, match=r"pytorch_model.bin is not a PyTorch state dict of tensors: "):
            model_flags.find_model_files(flags, "test/hostile")


HUB_FAILURES = {
    "no such model": ("test/other", {}, "test/other is neither a local path nor a model on the Hugging Face Hub"),
    "no such revision": ("test/micro-bert@v9", {}, "the Hugging Face Hub has no revision v9 of test/micro-bert"),
    "no weights": (
        "test/no-weights",
        {},
        "test/no-weights has no model.safetensors or pytorch_model.bin on the Hugging Face Hub",
    ),
    "dropped connection": (
        "test/micro-bert",
        {"drop": ["model.safetensors"]},
        "test/micro-bert is no local path, and as a Hub model its model.safetensors could not be downloaded: ",
    ),
}


@pytest.mark.parametrize("case", list(HUB_FAILURES))
def test_hub_failures_are_one_line_and_leave_nothing(tmp_path, hub_cache, monkeypatch, case):
    _, directory = write_micro_directory(tmp_path)
    shutil.copytree(directory, tmp_path / "no-weights")
    (tmp_path / "no-weights" / "model.safetensors").unlink()
    hub_id, options, message = HUB_FAILURES[case]
    repos = {"test/micro-bert": directory, "test/no-weights": tmp_path / "no-weights"}
    with loopback.FakeHub(repos, **options) as hub:
        use_hub(monkeypatch, hub)
        with pytest.raises(errors.InputError) as raised:
            model_files.find(hub_id)
    assert errors.one_line(raised.value).startswith(message), errors.one_line(raised.value)
    left = [path for path in hub_cache.rglob("*") if path.is_file() and "model.safetensors" in path.name + str(path)]
    assert not left and not list(hub_cache.rglob("*.incomplete"))


def test_local_paths_and_checkpoint_prefixes_are_no_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hub.is_hub_id("KR-BERT-char16424/model.ckpt-2000000") and hub.is_hub_id("klue/bert-base@main")
    (tmp_path / "KR-BERT-char16424").mkdir()
    # A local path meant, mistyped: its first component is a local directory, or it starts with ./ or ../; found
    # nowhere, it is "not found", not a Hub model to download.
    for meant_local in ("KR-BERT-char16424/model.ckpt-200000", "./kr-bert/model.ckpt", "../kr-bert/model.ckpt"):
        assert not hub.is_hub_id(meant_local)
        with pytest.raises(errors.CheckpointError, match=re.escape(f"checkpoint not found: {meant_local} (expected")):
            model_files.find(meant_local)
    (tmp_path / "KR-BERT-char16424" / "model.ckpt-2000000.index").write_bytes(b"")
    assert not hub.is_hub_id("KR-BERT-char16424/model.ckpt-2000000")  # KR-BERT's TensorFlow release
    assert not hub.is_hub_id("KR-BERT-char16424") and not hub.is_hub_id("/abs/path") and not hub.is_hub_id("")


def test_hub_unreachable_and_nothing_cached(tmp_path, hub_cache, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    message = "test/micro-bert is no local path, and as a Hub model its config.json is not in the Hugging Face cache"
    with pytest.raises(errors.InputError, match=message):
        model_files.find("test/micro-bert")


# === pytorch_model.bin, read without PyTorch ===

# A tiny BertForMaskedLM saved by transformers (model.safetensors) and by torch.save in both of its formats
# (tests/fixtures/torch_bert/make.py).
TORCH_BERT = REPO / "tests" / "fixtures" / "torch_bert"


def torch_bert_directory(tmp_path, weights_file):
    """The fixture model as a Hugging Face directory whose weights are the fixture's `weights_file`."""
    directory = tmp_path / weights_file
    directory.mkdir()
    shutil.copy(TORCH_BERT / "config.json", directory)
    name = "model.safetensors" if weights_file.endswith(".safetensors") else "pytorch_model.bin"
    shutil.copy(TORCH_BERT / weights_file, directory / name)
    (directory / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"t{i}" for i in range(26)]))
    (directory / "tokenizer_config.json").write_text(json.dumps(huggingface.tokenizer_config(False)))
    return directory


def read_state_dict(path):
    """{name: array} of every tensor of a torch.save file."""
    with torch_state_dict.StateDict(path, byte_limit=2**20) as state_dict:
        return {name: state_dict.array(name) for name in state_dict.tensors}


@pytest.mark.parametrize("weights_file", ["pytorch_model.bin", "pytorch_model_legacy.bin"])
def test_pytorch_model_bin_reads_as_its_safetensors(tmp_path, hub_cache, monkeypatch, weights_file):
    reference = torch_bert_directory(tmp_path, "model.safetensors")
    directory = torch_bert_directory(tmp_path, weights_file)
    tensors = read_state_dict(directory / "pytorch_model.bin")
    for name, tensor in safetensors.numpy.load_file(str(reference / "model.safetensors")).items():
        np.testing.assert_array_equal(tensors[name], tensor, err_msg=name)
        assert tensors[name].dtype == tensor.dtype
    config = model_files.find(str(reference)).config

    def loaded_weights(directory):  # all but the pooler, which a masked-LM model has not
        encoder = random_encoder(config, seed=1)
        model_files.load_encoder_weights(encoder, str(directory))
        return {name: v.numpy() for name, v in encoder.checkpoint_variables().items() if "pooler" not in name}

    expected = loaded_weights(reference)
    assert len(expected) == 16 + 5  # one layer's weights, the embeddings'
    for weights in (loaded_weights(directory), None):
        if weights is None:  # a Hub model with pytorch_model.bin only
            with loopback.FakeHub({"test/torch-bert": directory}) as hub:
                use_hub(monkeypatch, hub)
                files = model_files.find("test/torch-bert")
            assert os.path.basename(model_files.resolve_weights(files.weights)) == "pytorch_model.bin"
            weights = loaded_weights(files.weights)
        assert weights.keys() == expected.keys()
        for name, value in weights.items():
            np.testing.assert_array_equal(value, expected[name], err_msg=name)


class RunsCode:
    """Unpickled, it would create `marker`: what a malicious pytorch_model.bin does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pytorch_model_bin_cannot_run_code(tmp_path):
    marker = tmp_path / "created"
    legacy = tmp_path / "legacy.bin"
    legacy.write_bytes(pickle.dumps(RunsCode(marker), protocol=2))
    archive = tmp_path / "archive.bin"
    with zipfile.ZipFile(archive, "w") as zip_file:
        zip_file.writestr("archive/version", "3\n")
        zip_file.writestr("archive/data.pkl", pickle.dumps({"weight": RunsCode(marker)}, protocol=2))
    for path in (legacy, archive):
        with pytest.raises(torch_state_dict.TorchFormatError, match="it holds io.open, which is not part"):
            read_state_dict(path)
    assert not marker.exists()
    truncated = tmp_path / "truncated.bin"
    magic_number, protocol = (pickle.dumps(value, protocol=2) for value in (torch_state_dict.LEGACY_MAGIC_NUMBER, 1001))
    truncated.write_bytes(magic_number + protocol)
    with pytest.raises(torch_state_dict.TorchFormatError, match="it is damaged"):
        read_state_dict(truncated)


def test_a_tensor_reaching_outside_its_storage_is_refused(tmp_path, monkeypatch):
    """A zip-format file whose tensor claims 1,000 elements of a 4-element storage: refused, never read past the
    storage (numpy's as_strided would). Written with stand-ins for the two torch names it pickles."""
    torch, torch_utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    storage_class = type("FloatStorage", (), {"__module__": "torch"})
    torch.FloatStorage = storage_class

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only pickled here")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", torch_utils)
    storage = object()

    class Tensor:
        def __init__(self, shape):
            self.shape = shape

        def __reduce__(self):
            return (_rebuild_tensor_v2, (storage, 0, self.shape, (1,), False, collections.OrderedDict()))

    class StatePickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", storage_class, "0", "cpu", 4) if obj is storage else None

    for shape, works in (((4,), True), ((1000,), False)):
        payload = io.BytesIO()
        StatePickler(payload, protocol=2).dump({"weight": Tensor(shape)})
        path = tmp_path / f"{shape[0]}.bin"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/version", "3\n")
            archive.writestr("archive/data.pkl", payload.getvalue())
            archive.writestr("archive/data/0", np.arange(4, dtype=np.float32).tobytes())
        if works:
            np.testing.assert_array_equal(read_state_dict(path)["weight"], np.arange(4, dtype=np.float32))
        else:
            with pytest.raises(torch_state_dict.TorchFormatError, match="a tensor reaches outside its storage"):
                read_state_dict(path)


@pytest.mark.slow
@needs_torch
def test_torch_saves_of_odd_tensors_read_as_torch_reads_them(tmp_path):
    import torch

    grid = torch.arange(12.0).reshape(3, 4)
    state_dict = {
        "transposed": grid.t(),
        "row": grid[1],
        "scalar": torch.tensor(3.0),
        "half": grid.half(),
        "ids": torch.arange(4),
        "shared": grid,
    }
    for zip_format in (True, False):
        path = tmp_path / f"{zip_format}.bin"
        torch.save(state_dict, path, _use_new_zipfile_serialization=zip_format)
        read = read_state_dict(path)
        assert set(read) == set(state_dict)
        for name, tensor in state_dict.items():
            np.testing.assert_array_equal(read[name], tensor.numpy(), err_msg=name)
            assert read[name].dtype == tensor.numpy().dtype
    torch.save({"weight": grid.bfloat16()}, tmp_path / "bfloat16.bin")
    with pytest.raises(torch_state_dict.TorchFormatError, match="bfloat16 tensors, which numpy cannot read"):
        read_state_dict(tmp_path / "bfloat16.bin")
