"""Hostile model directories (issue 24): each a valid directory with one file replaced, run through export.py.

Whatever the file holds, export.py ends with exit status 1 and one `error:` line on stderr naming the file: no
traceback, no signal, no code of the file's run, memory and time bounded, nothing written. The corpus is made here
from the fixture model (tests/fixtures/torch_bert) with the standard library's writers (pickle opcodes, zip
headers field by field), and each case runs in a fork of tests/fork_runner.py, which imports the scripts once.
"""

import collections
import dataclasses
import functools
import io
import itertools
import json
import math
import pickle
import pickletools
import re
import shutil
import signal
import struct
import zipfile
import zlib

import pytest
from helpers import REPO, google_bert_weights, write_tf1_checkpoint

TORCH_BERT = REPO / "tests" / "fixtures" / "torch_bert"
SAFETENSORS = "model.safetensors"
PYTORCH = "pytorch_model.bin"
LEGACY = "pytorch_model_legacy.bin"  # the fixture's name; a directory holds it as PYTORCH
GOOGLE = "google"  # a Google-format checkpoint directory: bert_config.json, vocab.txt, model.ckpt
CHECKPOINT_PREFIX = "model.ckpt"
# The fixture config's keys that a Google-format bert_config.json has.
GOOGLE_KEYS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
    "initializer_range",
)  # fmt: skip
# The fixture's vocab_size of tokens: BERT's special tokens, then Hangul syllables (가, 개, 갸, ...).
VOCAB_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [chr(0xAC00 + 28 * i) for i in range(25)]
MAX_SEQUENCE_LENGTH = 16  # the fixture's max_position_embeddings
TIMEOUT_SECONDS = 10  # a case's limit: the child is killed by SIGALRM then
MEMORY_MARGIN_KIB = 512 * 1024  # over the valid directories' peak
# What a payload tries to create, in the case's directory (the child's working directory).
MARKER = "marker"
TOUCH = f"touch {MARKER}"
DEPTH = 300_000  # tuples nested this deep overflow the C stack of a recursive hash
JSON_DEPTH = 100_000
INFLATED_SIZE = 512 << 20  # what a 0.5 MB deflated entry inflates to
MEMO_INDEX = 2**27
# A tensor memoized at MEMO_INDEX, where torch.save memoizes each (BINPUT after REDUCE): Python's unpickler grows
# its memo array to twice that, 2 GiB.
MEMO_PUT = pickle.LONG_BINPUT + struct.pack("<I", MEMO_INDEX)
HUGE_LENGTH = 2**62
# ANSI red, the bell and C1's CSI: what a file's text may try to send a terminal through an error message; the
# ASCII ones where a name must be ASCII to be read at all (a pickle's GLOBAL).
ASCII_ESCAPES = "\x1b[31m\x07"
ESCAPES = ASCII_ESCAPES + "\x9b"
# Control characters other than \t and \n, C1's included.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
ZIP_ROOT = "pytorch_model/"
WORD_EMBEDDINGS = "bert.embeddings.word_embeddings.weight"
LAST_TENSOR = "cls.predictions.transform.dense.weight"  # the last in model.safetensors' data
LEGACY_PICKLES = ("magic_number", "protocol_version", "system_info", "state_dict", "storage_keys")


# === Pickles, opcode by opcode ===


@dataclasses.dataclass(frozen=True)
class Global:
    """What a GLOBAL opcode names."""

    module: str
    name: str


FLOAT_STORAGE = Global("torch", "FloatStorage")
ORDERED_DICT = Global("collections", "OrderedDict")
OS_SYSTEM = Global("os", "system")


def encode(value):
    """Protocol-2 opcodes (torch.save's) that push `value`: None, a bool, int, str, Global, a tuple of these, or
    opcodes (bytes) as they are."""
    if isinstance(value, bytes):
        return value
    if value is None:
        return pickle.NONE
    if isinstance(value, bool):
        return pickle.NEWTRUE if value else pickle.NEWFALSE
    if isinstance(value, int):
        if 0 <= value < 2**8:
            return pickle.BININT1 + bytes([value])
        if 0 <= value < 2**16:
            return pickle.BININT2 + struct.pack("<H", value)
        if -(2**31) <= value < 2**31:
            return pickle.BININT + struct.pack("<i", value)
        data = value.to_bytes(value.bit_length() // 8 + 1, "little", signed=True)
        return pickle.LONG1 + bytes([len(data)]) + data
    if isinstance(value, str):
        data = value.encode()
        return pickle.BINUNICODE + struct.pack("<I", len(data)) + data
    if isinstance(value, Global):
        return pickle.GLOBAL + f"{value.module}\n{value.name}\n".encode()
    if isinstance(value, tuple):
        return pickle.MARK + b"".join(map(encode, value)) + pickle.TUPLE
    raise TypeError(f"no opcodes for {value!r}")


def ops(*parts):
    """The opcodes of each part (`encode`), one after another."""
    return b"".join(map(encode, parts))


def nested_tuple(depth, opcode=pickle.TUPLE):
    """A tuple nested `depth` deep: an empty one wrapped by MARK ... TUPLE pairs, or by TUPLE1s."""
    marks = pickle.MARK * depth if opcode == pickle.TUPLE else b""
    return marks + pickle.EMPTY_TUPLE + opcode * depth


def call(function, *arguments):
    """`function(*arguments)` (REDUCE), its result left on the stack."""
    return ops(function, arguments, pickle.REDUCE)


def set_attributes(**values):
    """BUILD of the object on the stack with a state dict of `values`."""
    return ops(
        pickle.EMPTY_DICT,
        *itertools.chain(*((name, value, pickle.SETITEM) for name, value in values.items())),
        pickle.BUILD,
    )


def storage_id(key, count, storage_class=FLOAT_STORAGE):
    """A zip-format persistent id of a storage: ("storage", class, key, location, number of elements)."""
    return ("storage", storage_class, key, "cpu", count)


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One `name: _rebuild_tensor_v2(storage, offset, shape, stride, ...)` item of a state dict pickle."""

    name: object
    persistent_id: object  # the storage's, given to BINPERSID
    offset: object
    shape: object
    stride: object
    storage: object = None  # the storage argument's opcodes, if not BINPERSID of the persistent id
    then: bytes = b""  # opcodes applied to the tensor once made (BUILD)


def tensor_ops(tensor):
    storage = ops(tensor.persistent_id, pickle.BINPERSID) if tensor.storage is None else tensor.storage
    hooks = call(ORDERED_DICT)
    arguments = (storage, tensor.offset, tensor.shape, tensor.stride, False, hooks)
    return ops(tensor.name, Global("torch._utils", "_rebuild_tensor_v2"), arguments, pickle.REDUCE, tensor.then)


class TensorRecorder(pickle.Unpickler):
    """Unpickles a state dict as Tensors, storage classes as Globals, persistent ids as they are."""

    def find_class(self, module, name):
        if name == "_rebuild_tensor_v2":
            return lambda persistent_id, offset, shape, stride, *_: (persistent_id, offset, shape, stride)
        return collections.OrderedDict if name == "OrderedDict" else Global(module, name)

    def persistent_load(self, pid):
        return pid


@functools.cache
def fixture_tensors(weights_file=PYTORCH):
    """The tensors of the fixture's state dict pickle (zip or legacy), as Tensors."""
    data = fixture_entries()["data.pkl"] if weights_file == PYTORCH else legacy_parts()[0]["state_dict"]
    return tuple(Tensor(name, *arguments) for name, arguments in TensorRecorder(io.BytesIO(data)).load().items())


def changed(index, weights_file=PYTORCH, **changes):
    """The fixture's tensors, the one at `index` with `changes`."""
    tensors = list(fixture_tensors(weights_file))
    tensors[index] = dataclasses.replace(tensors[index], **changes)
    return tensors


def state_dict_pickle(tensors=None, before=b"", items=b"", after=b""):
    """A state dict pickle as torch.save writes it (an OrderedDict, protocol 2) of `tensors` (the fixture's zip
    tensors by default), with opcodes `before` it, further `items` (key and value opcodes) in it and `after` it."""
    items = ops(*map(tensor_ops, fixture_tensors() if tensors is None else tensors), items)
    dictionary = call(ORDERED_DICT)
    return ops(pickle.PROTO, b"\x02", before, dictionary, pickle.MARK, items, pickle.SETITEMS, after, pickle.STOP)


# BUILD of the reader's own _rebuild_tensor_v2 with a slot state: setattr(function, "__defaults__", ()), after
# which torch.save's calls of it (six arguments of seven) fail, in this read and, unless the reader guards its
# functions, in every later one of the process.
UNDEFAULT = ops(
    Global("torch._utils", "_rebuild_tensor_v2"),
    (None, ops(pickle.EMPTY_DICT, "__defaults__", pickle.EMPTY_TUPLE, pickle.SETITEM)),
    pickle.BUILD,
    pickle.POP,
)


def setstate_runs(instance):
    """Opcodes that give `instance` (opcodes that make it) os.system as its __setstate__ (BUILD of a slot state:
    setattr), then BUILD it, which calls its __setstate__ with TOUCH."""
    setstate = ops(pickle.EMPTY_DICT, "__setstate__", OS_SYSTEM, pickle.SETITEM)
    return instance, (None, setstate), pickle.BUILD, TOUCH, pickle.BUILD


def runs(*payload):
    """A state dict pickle that runs `payload` (opcodes leaving one value, popped) before it makes the dict."""
    return state_dict_pickle(before=ops(*payload, pickle.POP))


# === Zip archives, header by header ===


@dataclasses.dataclass(frozen=True)
class Entry:
    """A zip entry as stored: its bytes (`stream`, compressed by `method`), and the CRC-32 and size of what they
    inflate to, as its headers state them."""

    stream: bytes
    crc: int
    size: int
    method: int = zipfile.ZIP_STORED
    flags: int = 0


def stored(data, **options):
    return Entry(data, zlib.crc32(data), len(data), **options)


@functools.cache
def deflated(prefix, chunk, count, suffix=b""):
    """`prefix`, `count` times `chunk`, then `suffix`, deflated a chunk at a time (never all in memory)."""
    compressor, crc, stream = zlib.compressobj(6, zlib.DEFLATED, -15), 0, []
    for part in itertools.chain([prefix], itertools.repeat(chunk, count), [suffix]):
        crc = zlib.crc32(part, crc)
        stream.append(compressor.compress(part))
    stream.append(compressor.flush())
    return Entry(b"".join(stream), crc, len(prefix) + count * len(chunk) + len(suffix), zipfile.ZIP_DEFLATED)


def write_zip(path, entries):
    """A zip archive of {name: Entry}, its headers written field by field: what zipfile would never write, too."""
    local, central = bytearray(), bytearray()
    for name, entry in entries.items():
        encoded = name.encode()
        # version needed, flags, method, time, date (1980-01-01), CRC-32, sizes, name length, extra length
        fields = (20, entry.flags, entry.method, 0, 0x21, entry.crc, len(entry.stream), entry.size, len(encoded), 0)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0, 0, len(local)) + encoded
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields) + encoded + entry.stream
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(local), 0)
    path.write_bytes(local + central + end)
    return path


@functools.cache
def fixture_entries():
    """{name under the root: bytes} of the fixture's pytorch_model.bin."""
    with zipfile.ZipFile(TORCH_BERT / PYTORCH) as archive:
        return {name.split("/", 1)[1]: archive.read(name) for name in archive.namelist()}


def write_torch_zip(directory, data_pkl=None, entries=None):
    """pytorch_model.bin in `directory`: the fixture's entries, its data.pkl as `state_dict_pickle` writes it
    unless `data_pkl` is given, then `entries` ({name under the root: bytes or Entry}) replacing or adding theirs."""
    contents = {**fixture_entries(), "data.pkl": data_pkl or state_dict_pickle(), **(entries or {})}
    named = {ZIP_ROOT + name: entry if isinstance(entry, Entry) else stored(entry) for name, entry in contents.items()}
    return write_zip(directory / PYTORCH, named)


def huge_key_bomb():
    """data.pkl whose first key is a string of INFLATED_SIZE characters, deflated: 0.5 MB in the archive."""
    start = ops(pickle.PROTO, b"\x02", call(ORDERED_DICT), pickle.MARK)
    tensors = fixture_tensors()
    value = tensor_ops(dataclasses.replace(tensors[0], name=b""))  # the key's value: no name of its own
    end = ops(value, *map(tensor_ops, tensors), pickle.SETITEMS, pickle.STOP)
    return deflated(
        start + pickle.BINUNICODE + struct.pack("<I", INFLATED_SIZE), b"a" * (1 << 20), INFLATED_SIZE >> 20, end
    )


def zero_bomb(stated_size=None):
    """A storage of INFLATED_SIZE zero bytes, deflated; its headers stating `stated_size` if given."""
    entry = deflated(b"", bytes(1 << 20), INFLATED_SIZE >> 20)
    return entry if stated_size is None else dataclasses.replace(entry, size=stated_size)


# A raw deflate block of type 3 (reserved), an LZMA stream (zipfile's: version, properties) whose range coder does not
# start with 0, a stream without bzip2's magic number.
CORRUPT_STREAMS = {
    zipfile.ZIP_DEFLATED: b"\xff" * 64,
    zipfile.ZIP_LZMA: b"\x09\x04\x05\x00\x5d\x00\x00\x01\x00" + b"\xff" * 64,
    zipfile.ZIP_BZIP2: b"\xff" * 64,
}


def corrupt(method, name):
    """An Entry of the fixture's `name` whose stream `method` cannot decompress."""
    data = fixture_entries()[name]
    return Entry(CORRUPT_STREAMS[method], zlib.crc32(data), len(data), method)


# === The legacy stream, pickle by pickle ===


@functools.cache
def legacy_parts():
    """({name: pickle} of the fixture's legacy stream's five pickles (LEGACY_PICKLES), the storages' bytes)."""
    data = (TORCH_BERT / LEGACY).read_bytes()
    stream, pickles = io.BytesIO(data), {}
    for name in LEGACY_PICKLES:
        start = stream.tell()
        for _ in pickletools.genops(stream):
            pass
        pickles[name] = data[start : stream.tell()]
    return pickles, data[stream.tell() :]


def write_legacy(directory, storages=None, **pickles):
    """pytorch_model.bin in `directory` as the fixture's legacy stream, with `pickles` (by LEGACY_PICKLES name)
    and the `storages`' bytes (each: an int64 element count, then the elements) replacing its own."""
    own_pickles, own_storages = legacy_parts()
    parts = {**own_pickles, **pickles}
    path = directory / PYTORCH
    path.write_bytes(
        b"".join(parts[name] for name in LEGACY_PICKLES) + (own_storages if storages is None else storages)
    )
    return path


def first_count(count):
    """The legacy storages' bytes, the first storage's element count `count` (8 bytes, as read)."""
    return count.to_bytes(8, "little") + legacy_parts()[1][8:]


def legacy_state_dict(tensors=None, **options):
    return state_dict_pickle(fixture_tensors(LEGACY) if tensors is None else tensors, **options)


# === safetensors ===


@functools.cache
def safetensors_parts():
    """(header, data) of the fixture's model.safetensors."""
    data = (TORCH_BERT / SAFETENSORS).read_bytes()
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def safetensors_tensors():
    """{name: (dtype, shape, bytes)} of the fixture's model.safetensors, in the order of its data."""
    header, data = safetensors_parts()
    entries = sorted((entry["data_offsets"], name, entry) for name, entry in header.items() if name != "__metadata__")
    return {name: (entry["dtype"], entry["shape"], data[start:end]) for (start, end), name, entry in entries}


def write_safetensors(directory, header=None, length=None, **tensors):
    """model.safetensors in `directory`: the fixture's tensors with `tensors` ({name: (dtype, shape, bytes)}, None
    to drop) among them; or `header` (a dict of header entries, or bytes as they are) before the fixture's data.
    `length` is the header's stated length, if not its own."""
    if header is None:
        header, data, offset = {"__metadata__": {"format": "pt"}}, [], 0
        for name, tensor in {**safetensors_tensors(), **tensors}.items():
            if tensor is not None:
                dtype, shape, content = tensor
                header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(content)]}
                data.append(content)
                offset += len(content)
        data = b"".join(data)
    else:
        data = safetensors_parts()[1]
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    path = directory / SAFETENSORS
    path.write_bytes(struct.pack("<Q", len(encoded) if length is None else length) + encoded + data)
    return path


def zero_tensor(dtype, item_size, shape=(30, 8)):
    """A (dtype, shape, bytes) of zeros: the word embeddings' shape by default."""
    return (dtype, shape, bytes(item_size * math.prod(shape)))


def beyond_file(name):
    """The fixture's safetensors header, its entry of `name` (the last tensor) a thousand times as long as the file
    has."""
    header = safetensors_parts()[0]
    entry = header[name]
    start, end = entry["data_offsets"]
    return {
        **header,
        name: {
            **entry,
            "shape": [entry["shape"][0], 1000 * entry["shape"][1]],
            "data_offsets": [start, start + 1000 * (end - start)],
        },
    }


# === Text files ===


def json_text(values, **raw):
    """A JSON object of `values`, with `raw`'s values as the JSON text given (5,000 digits, 1e9)."""
    items = {**{key: json.dumps(value) for key, value in values.items()}, **raw}
    return "{" + ", ".join(f"{json.dumps(key)}: {text}" for key, text in items.items()) + "}"


def write_file(path, content):
    """`content` (text, as UTF-8, or bytes) at `path`."""
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def nested_json(depth):
    return "[" * depth + "]" * depth


def config_path(directory):
    """The directory's config: config.json (Hugging Face) or bert_config.json (Google format)."""
    return next(path for path in (directory / "config.json", directory / "bert_config.json") if path.exists())


def config_case(text):
    """A case: the directory's config replaced by `text(its values)`."""
    return lambda directory: write_file(config_path(directory), text(json.loads(config_path(directory).read_text())))


def edited(**changes):
    return config_case(lambda values: json.dumps({**values, **changes}))


def with_raw(**raw):
    return config_case(lambda values: json_text(values, **raw))


def replaced_by(content):
    return config_case(lambda values: content)


def tokenizer_config(content):
    return lambda directory: write_file(directory / "tokenizer_config.json", content)


def vocab(lines):
    """A case: vocab.txt of `lines` (bytes)."""
    return lambda directory: write_file(directory / "vocab.txt", b"\n".join(lines) + b"\n")


VOCAB_LINES = [token.encode() for token in VOCAB_TOKENS]


# === The corpus: {base: {id: function(directory) -> path of the replaced file}} ===

CONFIG_CASES = {
    "num_attention_heads-0": edited(num_attention_heads=0),
    "hidden_size-negative": edited(hidden_size=-8),
    "intermediate_size-negative": edited(intermediate_size=-16),
    "num_hidden_layers-negative": edited(num_hidden_layers=-1),
    "type_vocab_size-negative": edited(type_vocab_size=-2),
    "max_position_embeddings-negative": edited(max_position_embeddings=-16),
    "hidden_dropout_prob-NaN": edited(hidden_dropout_prob=math.nan),
    "attention_probs_dropout_prob-2.0": edited(attention_probs_dropout_prob=2.0),
    "hidden_size-1e9-float": with_raw(hidden_size="1e9"),
    "hidden_size-1000000000": edited(hidden_size=10**9),
    "max_position_embeddings-1000000000": edited(max_position_embeddings=10**9),
    "num_hidden_layers-1000000": edited(num_hidden_layers=10**6),
    "vocab_size-5000-digits": with_raw(vocab_size="9" * 5000),
    "vocab_size-a-string": edited(vocab_size="30"),
    "layer_norm_eps-NaN": edited(layer_norm_eps=math.nan),
    "layer_norm_eps-negative": edited(layer_norm_eps=-1.0),
    "layer_norm_eps-Infinity": edited(layer_norm_eps=math.inf),
    "hidden_act-unknown": edited(hidden_act="swish2"),
    "hidden_act-a-list": edited(hidden_act=["gelu"]),
    "hidden_act-escapes": edited(hidden_act=f"{ESCAPES}gelu"),
    "nested-100000-deep": replaced_by(nested_json(JSON_DEPTH)),
    "a-JSON-list": config_case(lambda values: json.dumps([values])),
    "not-UTF-8": replaced_by(b'{"model_type": "bert\xff"}'),
}

SAFETENSORS_CASES = {
    **{f"config.json-{name}": case for name, case in CONFIG_CASES.items()},
    "config.json-model_type-escapes": edited(model_type=f"{ESCAPES}bert"),
    "tokenizer_config.json-a-list": tokenizer_config("[]"),
    "tokenizer_config.json-do_lower_case-string-false": tokenizer_config('{"do_lower_case": "false"}'),
    "tokenizer_config.json-nested-100000-deep": tokenizer_config(nested_json(JSON_DEPTH)),
    "tokenizer_config.json-not-UTF-8": tokenizer_config(b'{"do_lower_case": false, "model_max_length": "\xff"}'),
    "tokenizer_config.json-tokenizer_class-escapes": tokenizer_config(
        json.dumps({"do_lower_case": False, "tokenizer_class": f"{ESCAPES}Tokenizer"})
    ),
    "tokenizer_config.json-strip_accents-escapes": tokenizer_config(
        json.dumps({"do_lower_case": False, "strip_accents": ESCAPES})
    ),
    "vocab.txt-not-UTF-8": vocab([*VOCAB_LINES[:5], b"\xff\xfe", *VOCAB_LINES[6:]]),
    "vocab.txt-without-PAD": vocab([b"[NOT-PAD]", *VOCAB_LINES[1:]]),
    "vocab.txt-29-lines": vocab(VOCAB_LINES[:-1]),
    "model.safetensors-header-length-beyond-file": lambda d: write_safetensors(
        d, length=(TORCH_BERT / SAFETENSORS).stat().st_size
    ),
    "model.safetensors-header-length-2**63": lambda d: write_safetensors(d, length=2**63),
    "model.safetensors-header-not-JSON": lambda d: write_safetensors(d, header=b"{not JSON" + b" " * 64),
    "model.safetensors-header-nested-100000-deep": lambda d: write_safetensors(
        d, header=nested_json(JSON_DEPTH).encode()
    ),
    "model.safetensors-offsets-beyond-file": lambda d: write_safetensors(d, header=beyond_file(LAST_TENSOR)),
    "model.safetensors-dtype-I64": lambda d: write_safetensors(d, **{WORD_EMBEDDINGS: zero_tensor("I64", 8)}),
    "model.safetensors-dtype-BF16": lambda d: write_safetensors(d, **{WORD_EMBEDDINGS: zero_tensor("BF16", 2)}),
    "model.safetensors-tensor-name-escapes": lambda d: write_safetensors(
        d, **{WORD_EMBEDDINGS: None, f"{ESCAPES}{WORD_EMBEDDINGS}": zero_tensor("I64", 8)}
    ),
}

ZIP_CASES = {
    # 300,000 nested tuples: a recursive hash of them overflows the C stack, a repr the recursion limit.
    "data.pkl-key-nested-300000-deep-MARK-TUPLE": lambda d: write_torch_zip(
        d, state_dict_pickle(items=ops(nested_tuple(DEPTH), 0))
    ),
    "data.pkl-key-nested-300000-deep-TUPLE1": lambda d: write_torch_zip(
        d, state_dict_pickle(items=ops(nested_tuple(DEPTH, pickle.TUPLE1), 0))
    ),
    "data.pkl-storage-class-nested-300000-deep": lambda d: write_torch_zip(
        d, state_dict_pickle(changed(0, persistent_id=storage_id("0", 240, nested_tuple(DEPTH))))
    ),
    "data.pkl-persistent-id-nested-300000-deep": lambda d: write_torch_zip(
        d, state_dict_pickle(changed(0, persistent_id=nested_tuple(DEPTH)))
    ),
    "data.pkl-storage-key-nested-300000-deep": lambda d: write_torch_zip(
        d, state_dict_pickle(changed(0, persistent_id=storage_id(nested_tuple(DEPTH), 240)))
    ),
    # Memory blow-ups from a small file.
    "data.pkl-memo-index-2**27": lambda d: write_torch_zip(d, state_dict_pickle(changed(0, then=MEMO_PUT))),
    "data.pkl-stride-0-view-16384x16384": lambda d: write_torch_zip(
        d,
        state_dict_pickle(changed(0, persistent_id=storage_id("26", 1), shape=(16384, 16384), stride=(0, 0))),
        {"data/26": bytes(4)},
    ),
    "data.pkl-inflates-to-512MiB": lambda d: write_torch_zip(d, entries={"data.pkl": huge_key_bomb()}),
    "data-0-inflates-to-512MiB": lambda d: write_torch_zip(d, entries={"data/0": zero_bomb()}),
    "data-0-inflates-past-its-stated-size": lambda d: write_torch_zip(d, entries={"data/0": zero_bomb(960)}),
    "data.pkl-inflates-past-its-stated-size": lambda d: write_torch_zip(
        d, entries={"data.pkl": dataclasses.replace(huge_key_bomb(), size=len(state_dict_pickle()))}
    ),
    "data.pkl-BINBYTES8-length-2**62": lambda d: write_torch_zip(
        d, runs(pickle.BINBYTES8, struct.pack("<Q", HUGE_LENGTH))
    ),
    "data.pkl-BINUNICODE8-length-2**62": lambda d: write_torch_zip(
        d, runs(pickle.BINUNICODE8, struct.pack("<Q", HUGE_LENGTH))
    ),
    "data.pkl-FRAME-length-2**62": lambda d: write_torch_zip(
        d, state_dict_pickle(before=pickle.FRAME + struct.pack("<Q", HUGE_LENGTH))
    ),
    "data.pkl-storage-count-2**62": lambda d: write_torch_zip(
        d, state_dict_pickle(changed(0, persistent_id=storage_id("0", HUGE_LENGTH)))
    ),
    "data.pkl-shape-2**64": lambda d: write_torch_zip(d, state_dict_pickle(changed(3, shape=(2**64,)))),
    "data.pkl-shape-2**64-stride-0": lambda d: write_torch_zip(
        d, state_dict_pickle(changed(3, shape=(2**64,), stride=(0,)))
    ),
    "data.pkl-shape-2**30x2**30-stride-0": lambda d: write_torch_zip(
        d, state_dict_pickle(changed(3, shape=(2**30, 2**30), stride=(0, 0)))
    ),
    "data.pkl-shape-negative": lambda d: write_torch_zip(d, state_dict_pickle(changed(3, shape=(-1,)))),
    # Exception types of other readers' code.
    "data.pkl-storage-an-int": lambda d: write_torch_zip(d, state_dict_pickle(changed(0, storage=ops(7)))),
    "data.pkl-BUILD-replaces-a-tensors-storage": lambda d: write_torch_zip(
        d, state_dict_pickle(changed(0, then=set_attributes(storage=7)))
    ),
    "data.pkl-BUILD-replaces-a-storages-values": lambda d: write_torch_zip(
        d,
        state_dict_pickle(
            changed(0, storage=ops(storage_id("0", 240), pickle.BINPERSID, set_attributes(values="not an array")))
        ),
    ),
    "data-0-encrypted": lambda d: write_torch_zip(d, entries={"data/0": stored(fixture_entries()["data/0"], flags=1)}),
    "data.pkl-encrypted": lambda d: write_torch_zip(d, entries={"data.pkl": stored(state_dict_pickle(), flags=1)}),
    "data.pkl-compression-method-99": lambda d: write_torch_zip(
        d, entries={"data.pkl": stored(state_dict_pickle(), method=99)}
    ),
    "data.pkl-corrupt-deflate": lambda d: write_torch_zip(
        d, entries={"data.pkl": corrupt(zipfile.ZIP_DEFLATED, "data.pkl")}
    ),
    "data-0-corrupt-deflate": lambda d: write_torch_zip(d, entries={"data/0": corrupt(zipfile.ZIP_DEFLATED, "data/0")}),
    "data-0-corrupt-lzma": lambda d: write_torch_zip(d, entries={"data/0": corrupt(zipfile.ZIP_LZMA, "data/0")}),
    "data.pkl-corrupt-bz2": lambda d: write_torch_zip(d, entries={"data.pkl": corrupt(zipfile.ZIP_BZIP2, "data.pkl")}),
    # What the file says, which the reader must not take for something else.
    "byteorder-sideways": lambda d: write_torch_zip(d, entries={"byteorder": b"sideways"}),
    "byteorder-not-UTF-8": lambda d: write_torch_zip(d, entries={"byteorder": b"\xfflittle"}),
    "version-999": lambda d: write_torch_zip(d, entries={"version": b"999\n"}),
    # BUILD with a slot state sets attributes: the reader's own function left without its defaults.
    "data.pkl-BUILD-on-the-readers-rebuild-function": lambda d: write_torch_zip(d, state_dict_pickle(before=UNDEFAULT)),
    # Terminal escapes where a name reaches an error message.
    "data.pkl-storage-class-escapes": lambda d: write_torch_zip(
        d, state_dict_pickle(changed(0, persistent_id=storage_id("0", 240, Global("torch", f"{ASCII_ESCAPES}Storage"))))
    ),
    "data.pkl-GLOBAL-name-escapes": lambda d: write_torch_zip(d, runs(Global("os", f"system{ASCII_ESCAPES}"))),
    "data.pkl-tensor-name-escapes": lambda d: write_torch_zip(
        d, state_dict_pickle(changed(3, name=f"{ESCAPES}bert.embeddings.LayerNorm.weight", shape=(1000,)))
    ),
    # Code to run (it would create MARKER).
    "data.pkl-GLOBAL-os.system": lambda d: write_torch_zip(d, runs(call(OS_SYSTEM, TOUCH))),
    "data.pkl-GLOBAL-posix.system": lambda d: write_torch_zip(d, runs(call(Global("posix", "system"), TOUCH))),
    "data.pkl-GLOBAL-builtins.eval": lambda d: write_torch_zip(
        d, runs(call(Global("builtins", "eval"), f"__import__('os').system({TOUCH!r})"))
    ),
    "data.pkl-GLOBAL-subprocess.Popen": lambda d: write_torch_zip(
        d, runs(call(Global("subprocess", "Popen"), tuple(TOUCH.split())))
    ),
    "data.pkl-STACK_GLOBAL-os.system": lambda d: write_torch_zip(
        d, runs("os", "system", pickle.STACK_GLOBAL, (TOUCH,), pickle.REDUCE)
    ),
    "data.pkl-INST-os.system": lambda d: write_torch_zip(d, runs(pickle.MARK, TOUCH, pickle.INST, b"os\nsystem\n")),
    "data.pkl-OBJ-os.system": lambda d: write_torch_zip(d, runs(pickle.MARK, OS_SYSTEM, TOUCH, pickle.OBJ)),
    # An OrderedDict (REDUCE, NEWOBJ, NEWOBJ_EX) given os.system as its __setstate__, which BUILD then calls.
    "data.pkl-BUILD-__setstate__-os.system": lambda d: write_torch_zip(d, runs(*setstate_runs(call(ORDERED_DICT)))),
    "data.pkl-NEWOBJ-then-__setstate__-os.system": lambda d: write_torch_zip(
        d, runs(*setstate_runs(ops(ORDERED_DICT, pickle.EMPTY_TUPLE, pickle.NEWOBJ)))
    ),
    "data.pkl-NEWOBJ_EX-then-__setstate__-os.system": lambda d: write_torch_zip(
        d,
        runs(*setstate_runs(ops(ORDERED_DICT, pickle.EMPTY_TUPLE, pickle.EMPTY_DICT, pickle.NEWOBJ_EX))),
    ),
    "data.pkl-EXT1": lambda d: write_torch_zip(d, runs(pickle.EXT1, b"\x01", (TOUCH,), pickle.REDUCE)),
    "data.pkl-EXT2": lambda d: write_torch_zip(d, runs(pickle.EXT2, struct.pack("<H", 0x101), (TOUCH,), pickle.REDUCE)),
    "data.pkl-EXT4": lambda d: write_torch_zip(
        d, runs(pickle.EXT4, struct.pack("<i", 2**31 - 1), (TOUCH,), pickle.REDUCE)
    ),
    "data.pkl-PERSID-command": lambda d: write_torch_zip(d, runs(pickle.PERSID, TOUCH.encode() + b"\n")),
    "data.pkl-BINPERSID-of-os.system": lambda d: write_torch_zip(
        d, state_dict_pickle(changed(0, storage=ops(call(OS_SYSTEM, TOUCH), pickle.BINPERSID)))
    ),
}

LEGACY_CASES = {
    "state-dict-key-nested-300000-deep": lambda d: write_legacy(
        d, state_dict=legacy_state_dict(items=ops(nested_tuple(DEPTH), 0))
    ),
    "state-dict-memo-index-2**27": lambda d: write_legacy(
        d, state_dict=legacy_state_dict(changed(0, LEGACY, then=MEMO_PUT))
    ),
    "state-dict-FRAME-length-2**62": lambda d: write_legacy(
        d, state_dict=legacy_state_dict(before=pickle.FRAME + struct.pack("<Q", HUGE_LENGTH))
    ),
    "state-dict-BINUNICODE8-length-2**62": lambda d: write_legacy(
        d, state_dict=legacy_state_dict(before=ops(pickle.BINUNICODE8, struct.pack("<Q", HUGE_LENGTH), pickle.POP))
    ),
    "state-dict-BUILD-on-the-readers-rebuild-function": lambda d: write_legacy(
        d, state_dict=legacy_state_dict(before=UNDEFAULT)
    ),
    "storage-count-2**40": lambda d: write_legacy(d, first_count(2**40)),
    "storage-count-2**63": lambda d: write_legacy(d, first_count(2**63)),
    "protocol-version-999": lambda d: write_legacy(d, protocol_version=pickle.dumps(999, protocol=2)),
    "magic-number-pickle-runs-os.system": lambda d: write_legacy(
        d, magic_number=ops(pickle.PROTO, b"\x02", call(OS_SYSTEM, TOUCH), pickle.STOP)
    ),
    "storage-keys-pickle-runs-os.system": lambda d: write_legacy(
        d, storage_keys=ops(pickle.PROTO, b"\x02", call(OS_SYSTEM, TOUCH), pickle.STOP)
    ),
}


def write_checkpoint_file(suffix, content):
    """A case: the Google checkpoint's `suffix` file (model.ckpt`suffix`) replaced; the prefix names its files."""

    def replace(directory):
        write_file(directory / f"{CHECKPOINT_PREFIX}{suffix}", content(directory / f"{CHECKPOINT_PREFIX}{suffix}"))
        return directory / CHECKPOINT_PREFIX

    return replace


GOOGLE_CASES = {
    **{f"bert_config.json-{name}": case for name, case in CONFIG_CASES.items()},
    "model.ckpt.index-garbage": write_checkpoint_file(".index", lambda path: b"\xff" * path.stat().st_size),
    "model.ckpt.data-truncated": write_checkpoint_file(
        ".data-00000-of-00001", lambda path: path.read_bytes()[: path.stat().st_size // 2]
    ),
    "model.ckpt.data-garbage": write_checkpoint_file(
        ".data-00000-of-00001", lambda path: b"\xff" * path.stat().st_size
    ),
}

CASES = {
    SAFETENSORS: SAFETENSORS_CASES,
    PYTORCH: {f"{PYTORCH}-zip-{name}": case for name, case in ZIP_CASES.items()},
    LEGACY: {f"{PYTORCH}-legacy-{name}": case for name, case in LEGACY_CASES.items()},
    GOOGLE: GOOGLE_CASES,
}


# === Running them ===


def hugging_face_directory(directory, weights_file):
    """The fixture model as a Hugging Face directory at `directory`, its weights the fixture's `weights_file`."""
    directory.mkdir(parents=True)
    shutil.copy(TORCH_BERT / "config.json", directory)
    shutil.copy(TORCH_BERT / weights_file, directory / (SAFETENSORS if weights_file == SAFETENSORS else PYTORCH))
    write_file(directory / "vocab.txt", "\n".join(VOCAB_TOKENS) + "\n")
    write_file(directory / "tokenizer_config.json", json.dumps({"do_lower_case": False}))
    return directory


def google_directory(directory, checkpoint):
    """The fixture model as a Google-format directory at `directory`, as training writes a run's: bert_config.json,
    vocab.txt, tokenizer_config.json and the checkpoint (`checkpoint`'s files, named by a state file)."""
    directory.mkdir(parents=True)
    for path in checkpoint.glob(f"{CHECKPOINT_PREFIX}.*"):
        shutil.copy(path, directory)
    write_file(directory / "checkpoint", f'model_checkpoint_path: "{CHECKPOINT_PREFIX}"\n')
    write_file(directory / "bert_config.json", json.dumps(google_config()))
    write_file(directory / "vocab.txt", "\n".join(VOCAB_TOKENS) + "\n")
    write_file(directory / "tokenizer_config.json", json.dumps({"do_lower_case": False}))
    return directory


def google_config():
    config = json.loads((TORCH_BERT / "config.json").read_text())
    return {key: config[key] for key in GOOGLE_KEYS}


def base_directory(base, root, google_checkpoint):
    directory = root / "model"
    return google_directory(directory, google_checkpoint) if base == GOOGLE else hugging_face_directory(directory, base)


def export(runner, directory):
    """export.py of `directory` to `out` beside it, in a fork of the runner, in the directory's parent."""
    root = directory.parent
    argv = [
        "export.py",
        f"--checkpoint={directory}",
        "--format=huggingface",
        f"--max_sequence_length={MAX_SEQUENCE_LENGTH}",
        f"--output={root / 'out'}",
    ]
    return runner.run(argv, root, TIMEOUT_SECONDS)


def printable(text):
    """`text` with its control characters (other than \\n, \\t) written as escapes, for a failure message."""
    return CONTROL_CHARACTERS.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def broken_promises(result, replaced, root, baseline_kib):
    """What of issue 24's promise a hostile case's run breaks, each in a few words."""
    stderr = result["stderr"]
    error_lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    broken = []
    if result["signal"] is not None:
        broken.append(f"killed by {signal.Signals(result['signal']).name}")
    elif result["exit"] != 1:
        broken.append(f"exit status {result['exit']}")
    if "Traceback" in stderr:
        broken.append("a traceback")
    if len(error_lines) != 1:
        broken.append(f"{len(error_lines)} error lines")
    elif replaced.name not in error_lines[0]:
        broken.append(f"the error line does not name {replaced.name}")
    if any(CONTROL_CHARACTERS.search(line) for line in error_lines):
        broken.append("control characters in the error line")
    if result["max_rss_kib"] > baseline_kib + MEMORY_MARGIN_KIB:
        broken.append(f"peak memory {result['max_rss_kib'] >> 10} MiB, the valid directories' {baseline_kib >> 10} MiB")
    if result["seconds"] >= TIMEOUT_SECONDS:
        broken.append(f"{result['seconds']:.1f} s")
    if list(root.glob("out*")):
        broken.append("--output written")
    if (root / MARKER).exists():
        broken.append("the file's code ran")
    return broken


@pytest.fixture(scope="module")
def google_checkpoint(tmp_path_factory):
    """A Google-format checkpoint of the fixture config's shapes, random weights: model.ckpt.index and data."""
    directory = tmp_path_factory.mktemp("google_checkpoint")
    write_tf1_checkpoint(directory / CHECKPOINT_PREFIX, google_bert_weights(google_config()), pretraining_extras=False)
    return directory


# {id: (base, rewrite or None)}: the fixture's files, and the same as this module's writers write them, so each
# hostile case differs from a valid file by its one change.
VALID = {
    "model.safetensors": (SAFETENSORS, None),
    "model.safetensors-rewritten": (SAFETENSORS, write_safetensors),
    "pytorch_model.bin-zip": (PYTORCH, None),
    "pytorch_model.bin-zip-rewritten": (PYTORCH, write_torch_zip),
    "pytorch_model.bin-legacy": (LEGACY, None),
    "pytorch_model.bin-legacy-rewritten": (LEGACY, lambda d: write_legacy(d, state_dict=legacy_state_dict())),
    "google-checkpoint": (GOOGLE, None),
}


@pytest.fixture(scope="module")
def valid_runs(fork_runner, google_checkpoint, tmp_path_factory):
    """{id: (case root, export's result)} of each VALID directory."""
    results = {}
    for name, (base, rewrite) in VALID.items():
        directory = base_directory(base, tmp_path_factory.mktemp("valid"), google_checkpoint)
        if rewrite:
            rewrite(directory)
        results[name] = (directory.parent, export(fork_runner, directory))
    return results


@pytest.fixture(scope="module")
def baseline_kib(valid_runs):
    """The valid directories' peak memory, which a hostile file's may exceed by MEMORY_MARGIN_KIB."""
    failed = [name for name, (_, result) in valid_runs.items() if result["exit"] != 0]
    if failed:
        pytest.fail(f"the valid directories {', '.join(failed)} do not export: no hostile case can tell anything")
    return max(result["max_rss_kib"] for _, result in valid_runs.values())


@pytest.mark.parametrize("name", list(VALID))
def test_a_valid_directory_exports(valid_runs, name):
    root, result = valid_runs[name]
    assert result["exit"] == 0, printable(result["stderr"][-3000:])
    assert (root / "out" / SAFETENSORS).exists() and result["seconds"] < TIMEOUT_SECONDS


@pytest.mark.parametrize(
    ("base", "case"), [pytest.param(base, case, id=case) for base, cases in CASES.items() for case in cases]
)
def test_a_hostile_file_is_one_error_line(fork_runner, google_checkpoint, baseline_kib, tmp_path, base, case):
    directory = base_directory(base, tmp_path, google_checkpoint)
    replaced = CASES[base][case](directory)
    result = export(fork_runner, directory)
    broken = broken_promises(result, replaced, tmp_path, baseline_kib)
    assert not broken, "; ".join(broken) + "\n" + printable(result["stderr"][-2000:])


# Loads a valid directory's weights, then a hostile one's (refused or not: the corpus checks how), then the valid
# one's again, through what export.py calls.
LOAD_AGAIN = """
import files
import huggingface
import model
import model_files
import sys

def weights(directory):
    encoder = model.BertEncoder(model_files.find(directory).config, dtype="float32")
    model_files.load_encoder_weights(encoder, directory)
    return {name: v.numpy() for name, v in encoder.checkpoint_variables().items() if not name.startswith("bert/pooler")}

valid, hostile = sys.argv[1:]
before = weights(valid)
try:
    weights(hostile)
except Exception:
    pass
after = weights(valid)
assert all((after[name] == value).all() for name, value in before.items()), "the valid weights read otherwise"
"""


@pytest.mark.parametrize("weights_file", [PYTORCH, LEGACY])
def test_a_file_cannot_change_how_the_next_is_read(fork_runner, google_checkpoint, tmp_path, weights_file):
    """A pickle reaches the reader's own functions (GLOBAL) and sets their attributes (BUILD, UNDEFAULT): the next
    file of the process reads as before. In a fork, as a changed reader would change the reads of what follows."""
    valid = base_directory(weights_file, tmp_path / "valid", google_checkpoint)
    hostile = base_directory(weights_file, tmp_path / "hostile", google_checkpoint)
    if weights_file == PYTORCH:
        write_torch_zip(hostile, state_dict_pickle(before=UNDEFAULT))
    else:
        write_legacy(hostile, state_dict=legacy_state_dict(before=UNDEFAULT))
    result = fork_runner.run(["load_again", valid, hostile], tmp_path, TIMEOUT_SECONDS, LOAD_AGAIN)
    assert result["exit"] == 0, printable(result["stderr"][-3000:])
