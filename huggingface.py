"""Hugging Face BERT directories: read as a model to start from or to evaluate, written as a model that
transformers and sentence-transformers load as it is.

A Hugging Face BERT directory holds `config.json` (model_type "bert"), `model.safetensors`, `vocab.txt` and
`tokenizer_config.json`, as transformers' `save_pretrained` writes them. Weights go through the safetensors
package's numpy API, or, for older models with `pytorch_model.bin` only, `torch_state_dict`: no PyTorch. Every
weight's Hugging Face name follows from its Google name (`huggingface_name`); kernels are stored transposed there
([out, in], PyTorch's Linear).

    python evaluate.py --checkpoint=klue-bert-base      # its config, vocab and lower-casing come with it
    python export.py --checkpoint=models/RUN/best --format=huggingface --output=exported/krbert-simcse
"""

import contextlib
import json
import os
import re

import huggingface_hub
import numpy as np
import safetensors
import safetensors.numpy
from absl import logging

import errors
import files
import google_checkpoint
import model
import torch_state_dict

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# What older models have instead (torch.save's format), read where there is no WEIGHTS_FILE.
PYTORCH_WEIGHTS_FILE = "pytorch_model.bin"
VOCAB_FILE = "vocab.txt"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
# Our hidden_act (google-research/bert's names, whose "gelu" is the tanh form) -> Hugging Face's ("gelu" there
# is the erf form).
HIDDEN_ACTS = {"gelu": "gelu_new", "gelu_exact": "gelu", "relu": "relu", "tanh": "tanh", "linear": "linear"}
# Hugging Face's names read as ours: the inverse, and PyTorch's name of the tanh form.
HIDDEN_ACTS_READ = {**{theirs: ours for ours, theirs in HIDDEN_ACTS.items()}, "gelu_pytorch_tanh": "gelu"}
# transformers' BertConfig defaults, for the keys a config.json leaves out (transformers reads it so).
CONFIG_DEFAULTS = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
}
# The types of the tokenizer_config.json settings read here: a "false" string would be taken for true.
TOKENIZER_SETTING_TYPES = {
    "tokenizer_class": (str, type(None)),
    "do_lower_case": (bool,),
    "strip_accents": (bool, type(None)),
    "tokenize_chinese_chars": (bool,),
}
# The tokenizer classes of BERT's WordPiece tokenization, the one tokenization.KrBertTokenizer runs.
BERT_TOKENIZERS = ("BertTokenizer", "BertTokenizerFast")
# The pooling the encoder was trained with -> sentence-transformers' Pooling mode; "pooled" adds the pooler as a
# Dense module after [CLS] pooling.
POOLING_MODES = {"cls": "cls_token", "pooled": "cls_token", "mean": "mean_tokens"}
SPECIAL_TOKENS = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}


def is_huggingface_directory(path):
    return bool(path) and files.isdir(path) and files.exists(os.path.join(path, CONFIG_FILE))


# === Names ===


def huggingface_name(google_name):
    """A weight's Hugging Face name and whether it is stored transposed, from its Google name.

    Example:
        >>> huggingface_name("bert/encoder/layer_0/attention/self/query/kernel")
        ('encoder.layer.0.attention.self.query.weight', True)
        >>> huggingface_name("bert/embeddings/LayerNorm/gamma")
        ('embeddings.LayerNorm.weight', False)
    """
    *path, last = google_name.split("/")[1:]  # without the "bert" scope
    path = [re.sub(r"^layer_(\d+)$", r"layer.\1", part) for part in path]
    suffix = {"kernel": "weight", "gamma": "weight", "beta": "bias", "bias": "bias"}.get(last)
    if suffix is None:  # an embedding table: its own name, then PyTorch's Embedding weight
        return ".".join([*path, last, "weight"]), False
    return ".".join([*path, suffix]), last == "kernel"


# === Reading ===


def read_config(directory):
    """model.BertConfig of a Hugging Face config.json, with transformers' defaults for the keys it leaves out."""
    path = os.path.join(directory, CONFIG_FILE)
    values = files.read_json(path, files.MODEL_JSON_BYTES)
    if not isinstance(values, dict) or values.get("model_type") != "bert":
        found = values.get("model_type") if isinstance(values, dict) else None
        raise errors.ConfigError(f"{path} is not a BERT config (model_type {found!r}, not 'bert')")
    if values.get("position_embedding_type", "absolute") != "absolute":
        raise errors.ConfigError(
            f"{path} has position_embedding_type {values['position_embedding_type']!r}: only BERT's absolute "
            "position embeddings are supported"
        )
    values = {**CONFIG_DEFAULTS, **values}
    if not isinstance(values["hidden_act"], str) or values["hidden_act"] not in HIDDEN_ACTS_READ:
        raise errors.ConfigError(
            f"{path} has hidden_act {values['hidden_act']!r}, not one of {', '.join(sorted(HIDDEN_ACTS_READ))}"
        )
    values["hidden_act"] = HIDDEN_ACTS_READ[values["hidden_act"]]
    try:
        return model.BertConfig.from_dict({name: values[name] for name in CONFIG_DEFAULTS})
    except errors.ConfigError as error:
        raise errors.ConfigError(f"{path}: {error}") from None


def read_lower_case(directory):
    """do_lower_case of the directory's tokenizer_config.json; a setting BERT's tokenization here cannot follow
    is refused."""
    path = os.path.join(directory, TOKENIZER_CONFIG_FILE)
    if not files.exists(path):
        raise errors.ConfigError(f"no {TOKENIZER_CONFIG_FILE} in {directory}: it says whether to lower-case")
    settings = files.read_json(path, files.MODEL_JSON_BYTES)
    if not isinstance(settings, dict):
        raise errors.ConfigError(f"{path} is not a JSON object of tokenizer settings")
    for key, kinds in TOKENIZER_SETTING_TYPES.items():
        if key in settings and not isinstance(settings[key], kinds):
            names = " or ".join("null" if kind is type(None) else kind.__name__ for kind in kinds)
            raise errors.ConfigError(f"{path}: {key} must be {names}, not {type(settings[key]).__name__}")
    tokenizer_class = settings.get("tokenizer_class")
    if tokenizer_class not in (None, *BERT_TOKENIZERS):
        raise errors.ConfigError(
            f"{path} names tokenizer_class {tokenizer_class}: only BERT's WordPiece tokenizer "
            f"({', '.join(BERT_TOKENIZERS)}) is supported"
        )
    lower_case = settings.get("do_lower_case", True)  # BertTokenizer's default
    if settings.get("strip_accents") not in (None, lower_case):
        raise errors.ConfigError(
            f"{path} sets strip_accents {settings['strip_accents']} with do_lower_case {lower_case}: only BERT's "
            "accent stripping with lower-casing is supported"
        )
    if settings.get("tokenize_chinese_chars", True) is not True:
        raise errors.ConfigError(f"{path} sets tokenize_chinese_chars false: BERT splits CJK ideographs, always here")
    return lower_case


def weights_path(directory):
    """The directory's model.safetensors, else its pytorch_model.bin."""
    for name in (WEIGHTS_FILE, PYTORCH_WEIGHTS_FILE):
        if files.exists(os.path.join(directory, name)):
            return os.path.join(directory, name)
    raise errors.CheckpointError(f"no {WEIGHTS_FILE} or {PYTORCH_WEIGHTS_FILE} in {directory}")


def weight_bytes(config):
    """The most bytes one tensor of a weights file for `config` may take, with what it reads of its storage: all the
    model's weights in float64, twice (a pre-training head's tensors can share a storage with them)."""
    return 2 * 8 * config.parameter_count()


@contextlib.contextmanager
def open_weights(path, byte_limit):
    """(shapes {name: shape}, array(name)) of a model.safetensors or pytorch_model.bin: the shapes from its header
    or pickle, each array read when asked for (floating point, at most `byte_limit` bytes). A file that cannot be
    read is a CheckpointError naming it. A file on another file system than the local one is read from a local copy
    (`files.local_copy`: both readers map or seek in local files)."""
    with files.local_copy(path, byte_limit) as local:
        if path.endswith(PYTORCH_WEIGHTS_FILE):
            try:
                with torch_state_dict.StateDict(local, byte_limit) as state_dict:
                    yield {name: view.shape for name, view in state_dict.tensors.items()}, state_dict.array
            except torch_state_dict.TorchFormatError as error:
                raise errors.CheckpointError(f"{path} is not a PyTorch state dict of tensors: {error}") from None
            return
        try:
            with safetensors.safe_open(local, framework="numpy") as weights:

                def array(name):
                    dtype = weights.get_slice(name).get_dtype()
                    if dtype not in ("F32", "F16", "F64"):
                        raise errors.CheckpointError(
                            f"{path} holds {name} as {dtype}, which numpy cannot read: save the model in float32"
                        )
                    return weights.get_tensor(name)

                names = weights.keys()
                yield {name: tuple(weights.get_slice(name).get_shape()) for name in names}, array
        except safetensors.SafetensorError as error:
            raise errors.CheckpointError(
                f"{path} is not a readable safetensors file: {errors.one_line(error)}"
            ) from None


def tensor_names(path, shapes, config):
    """{Google name: the name of its tensor in the weights file at `path`} for every weight `config` makes, each
    checked against `shapes` (the file's) before anything is read; None for a pooler the file has not. The
    `bert.` prefix of pre-training models' checkpoints is taken off (their heads are left out)."""
    prefix = "bert." if any(name.startswith("bert.") for name in shapes) else ""
    names = {}
    for google_name, shape in google_checkpoint.checkpoint_shapes(config).items():
        name, transposed = huggingface_name(google_name)
        # Checkpoints converted by old transformers versions name LayerNorm weights gamma and beta.
        legacy = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        found = next((prefix + n for n in (name, legacy) if prefix + n in shapes), None)
        if found is None and not name.startswith("pooler."):
            raise errors.CheckpointError(f"{path} has no tensor {name}")
        stored = tuple(reversed(shape)) if transposed else shape
        if found is not None and shapes[found] != stored:
            raise errors.CheckpointError(
                f"{path} has {name} of shape {list(shapes[found])}, the config makes it {list(stored)}"
            )
        names[google_name] = found
    return names


def load_weights(encoder, directory):
    """Loads a Hugging Face BERT directory's weights into `encoder`; a missing pooler is left as initialised, as
    transformers leaves it (masked-LM checkpoints have none)."""
    path = weights_path(directory)
    with open_weights(path, weight_bytes(encoder.config)) as (shapes, array):
        names = tensor_names(path, shapes, encoder.config)
        for google_name, variable in encoder.checkpoint_variables().items():
            name, (expected_name, transposed) = names[google_name], huggingface_name(google_name)
            if name is None:
                logging.warning("%s has no %s: the pooler starts from random initialisation", directory, expected_name)
                continue
            tensor = array(name)
            if not np.issubdtype(tensor.dtype, np.floating):
                raise errors.CheckpointError(f"{path} holds {name} as {tensor.dtype}, not as floating point numbers")
            tensor = tensor.astype(np.float32)
            variable.assign(tensor.T if transposed else tensor)
    return directory


# === Writing ===


def huggingface_config(config, pad_token_id):
    """config.json of `config` for transformers' BertModel."""
    values = {name: getattr(config, name) for name in CONFIG_DEFAULTS}
    values["hidden_act"] = HIDDEN_ACTS[config.hidden_act]
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        **values,
        "pad_token_id": pad_token_id,
        "position_embedding_type": "absolute",
    }


def tokenizer_config(lower_case, max_sequence_length=None, vocab_tokens=()):
    """tokenizer_config.json: BERT's tokenizer, its lower-casing, and its special tokens that are in the vocab."""
    values = {"tokenizer_class": "BertTokenizer", "do_lower_case": lower_case, "tokenize_chinese_chars": True}
    if max_sequence_length:
        values["model_max_length"] = max_sequence_length
    return {**values, **{key: token for key, token in SPECIAL_TOKENS.items() if token in vocab_tokens}}


def huggingface_weights(encoder):
    """{Hugging Face name: float32 array} of the encoder's weights, kernels transposed."""
    weights = {}
    for google_name, variable in encoder.checkpoint_variables().items():
        name, transposed = huggingface_name(google_name)
        value = variable.numpy().astype(np.float32)
        weights[name] = np.ascontiguousarray(value.T if transposed else value)
    return weights


def sentence_transformers_files(weights, hidden_size, pooling, max_sequence_length):
    """{relative path: JSON value or weights dict} of the sentence-transformers modules after BERT: [CLS] or mean
    pooling, and for "pooled" the pooler (of `weights`, `huggingface_weights`) as a tanh Dense module."""
    mode = POOLING_MODES[pooling]
    modes = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    module_files = {
        "sentence_bert_config.json": {"max_seq_length": max_sequence_length, "do_lower_case": False},
        "config_sentence_transformers.json": {"similarity_fn_name": "cosine"},
        "1_Pooling/config.json": {
            "word_embedding_dimension": hidden_size,
            **{f"pooling_mode_{name}": name == mode for name in modes},
            "include_prompt": True,
        },
    }
    if pooling == "pooled":
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
        module_files["2_Dense/config.json"] = {
            "in_features": hidden_size,
            "out_features": hidden_size,
            "bias": True,
            "activation_function": "torch.nn.modules.activation.Tanh",
        }
        module_files["2_Dense/model.safetensors"] = {
            "linear.weight": weights["pooler.dense.weight"],  # [out, in]
            "linear.bias": weights["pooler.dense.bias"],
        }
    return {"modules.json": modules, **module_files}


POOLING_DESCRIPTIONS = {
    "cls": "the [CLS] token's output",
    "pooled": "BERT's pooler (tanh dense layer) over the [CLS] token's output",
    "mean": "the mean of the token outputs",
}


def model_card(source, pooling, max_sequence_length, run_config=None, record=None, results=None):
    """README.md of an exported model: what it is, how to load it, its training recipe (`run_config`, from
    run_config.json) and its scores (`record`, a line of eval_history.jsonl; `results`, evaluate.py's JSON)."""
    kind = f"{run_config['kind']} " if run_config else ""
    lines = [
        f"# Korean {kind}SimCSE sentence encoder",
        "",
        f"BERT trained with {kind}SimCSE (Gao et al., 2021), exported from `{source}`. A sentence's embedding is "
        f"{POOLING_DESCRIPTIONS[pooling]}, at most {max_sequence_length} tokens; compare sentences by cosine "
        "similarity.",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        'encoder = SentenceTransformer("path/to/this/directory")',
        'embeddings = encoder.encode(["한국어 문장 임베딩", "문장을 벡터로 바꾼다"])',
        "```",
    ]
    if run_config:
        lines += ["", "## Training", "", "| setting | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in run_config.items() if name != "bert_config"]
    scores = []  # (set, metric, value, measured by)
    if record:
        for name, metric, key in (
            ("korsts:dev", "Spearman", "korsts_spearman"),
            ("klue_sts:dev", "Pearson", "klue_sts_pearson"),
        ):
            if record.get(key) is not None:
                scores.append((name, metric, record[key], f"training, step {record['step']}"))
    for name, values in (results or {}).items():
        for metric in ("spearman", "pearson"):
            if values.get(metric) is not None:
                scores.append((f"{name} ({values['n']} pairs)", metric.title(), values[metric], "evaluate.py"))
    if scores:
        lines += ["", "## Scores (x100)", "", "| set | metric | score | measured by |", "|---|---|--:|---|"]
        lines += [f"| {name} | {metric} | {value * 100:.2f} | {by} |" for name, metric, value, by in scores]
    metadata = huggingface_hub.ModelCardData(
        language="ko",
        library_name="sentence-transformers",
        pipeline_tag="sentence-similarity",
        tags=["sentence-transformers", "sentence-similarity", "simcse", "bert"],
    )
    return str(huggingface_hub.ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"))


def write_directory(encoder, vocab_path, lower_case, max_sequence_length, pooling, output, model_card):
    """Writes `encoder` as a Hugging Face BERT directory at `output` (which must not exist) that transformers'
    BertModel and sentence-transformers' SentenceTransformer load: config, safetensors weights, vocab and
    tokenizer files, the sentence-transformers modules of `pooling`, and `model_card` as README.md. Written
    under a temporary name and renamed, so nothing half-written is ever at `output`."""
    files.check_new_directory(output)
    vocab_tokens = [line.rstrip("\n") for line in files.read_lines(vocab_path)]
    weights = huggingface_weights(encoder)
    directory_files = {
        CONFIG_FILE: huggingface_config(encoder.config, vocab_tokens.index("[PAD]")),
        WEIGHTS_FILE: weights,
        TOKENIZER_CONFIG_FILE: tokenizer_config(lower_case, max_sequence_length, vocab_tokens),
        **sentence_transformers_files(weights, encoder.config.hidden_size, pooling, max_sequence_length),
    }
    with files.renamed_into_place(output) as temporary:
        for name, value in directory_files.items():
            path = os.path.join(temporary, name)
            files.makedirs(os.path.dirname(path))
            if name.endswith(".safetensors"):
                # transformers loads only safetensors files that say they hold PyTorch tensors.
                files.write_file(path, safetensors.numpy.save(value, metadata={"format": "pt"}))
            else:
                files.write_file(path, json.dumps(value, indent=2))
        files.copy(vocab_path, os.path.join(temporary, VOCAB_FILE))
        files.write_file(os.path.join(temporary, "README.md"), model_card)
    return output
