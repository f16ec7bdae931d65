"""PyTorch state dicts (`pytorch_model.bin`, as `torch.save` writes them) read as numpy arrays, without PyTorch,
from files that may be hostile.

Both of torch.save's formats: the zip archive (PyTorch 1.6 and later: `<root>/data.pkl` and one file per storage
under `<root>/data/`) and the legacy stream (before 1.6: magic number, protocol, system info, the pickled dict,
its storage keys, then each storage's raw bytes). Their pickles are run by `torch_pickle`, never by Python's
unpickler, so a file can neither run code nor change the reader; a file refused ends in `TorchFormatError` saying
why.

Tensors are read one by one (`StateDict.array`), each checked first to lie within its storage and within the
caller's byte limit; storages are read only as far as a tensor needs them, zip entries only stored or deflated.

    with StateDict("pytorch_model.bin", byte_limit=2**30) as state_dict:
        shapes = {name: tensor.shape for name, tensor in state_dict.tensors.items()}
        word_embeddings = state_dict.array("bert.embeddings.word_embeddings.weight")
"""

import contextlib
import io
import math
import os
import zipfile
import zlib

import numpy as np

import torch_pickle

# torch.save's legacy stream starts with this number (torch/serialization.py MAGIC_NUMBER), then this protocol
# version (PROTOCOL_VERSION).
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
# The zip format versions torch.save writes in `<root>/version` (caffe2's kProducedFileFormatVersion history).
ZIP_VERSIONS = ("1", "2", "3")
# A state dict's pickle is about 200 bytes a tensor (BERT-base: 40 KB); this bounds the bytes read for one.
PICKLE_BYTES = 16 * 2**20
# What each storage-reading zip method needs: none but the two torch.save and zip tools write.
ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
# The error of both modules, named here too for StateDict's callers.
TorchFormatError = torch_pickle.TorchFormatError


class StateDict:
    """A torch.save file opened for reading: `tensors` ({name: TensorView}) from its pickle, checked, and each
    tensor's array when asked for (`array`). Use it as a context manager; TorchFormatError says why a file is
    refused.

    Args:
        path: the file.
        byte_limit: the most bytes one tensor, and what it reads of its storage, may take: what the model it should
            hold needs (no tiny file then makes a large array).
    """

    def __init__(self, path, byte_limit):
        self.byte_limit = byte_limit
        self.storages = {}  # key -> Storage
        self.values = {}  # key -> the storage's elements read so far, as bytes
        self.file = open(path, "rb")  # noqa: SIM115 (closed by close())
        try:
            with _damage_named():
                is_zip = zipfile.is_zipfile(self.file)
                self.archive = zipfile.ZipFile(self.file) if is_zip else None
                state_dict = self._read_zip() if is_zip else self._read_legacy()
                if not isinstance(state_dict, dict) or not all(
                    isinstance(name, str) and isinstance(view, torch_pickle.TensorView)
                    for name, view in state_dict.items()
                ):
                    raise TorchFormatError("it is not a dict of tensors")
                self.tensors = dict(state_dict)
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()

    def close(self):
        self.file.close()

    def storage(self, key, storage_class, size):
        """The Storage a persistent id names: one per key, of one class and size."""
        storage = self.storages.setdefault(key, torch_pickle.Storage(key, storage_class, size))
        if (storage.storage_class, storage.size) != (storage_class, size):
            raise TorchFormatError(f"its storage {key} is named with two classes or sizes")
        return storage

    def array(self, name):
        """The tensor `name` as a numpy array, read once its view has been checked against the byte limit."""
        view = self.tensors[name]
        dtype, itemsize = torch_pickle.STORAGE_CLASSES[view.storage.storage_class]
        if dtype is None:
            raise TorchFormatError("it holds bfloat16 tensors, which numpy cannot read: save the model in float32")
        needed = view.elements_needed()
        if max(math.prod(view.shape), needed) * itemsize > self.byte_limit:
            raise TorchFormatError(f"its tensor {name} takes more than the {self.byte_limit:,} bytes the model needs")
        if needed == 0:
            return np.zeros(view.shape, dtype)
        with _damage_named():
            data = self._storage_bytes(view.storage, needed * itemsize)
        values = np.frombuffer(data, np.dtype(dtype).newbyteorder(self.byte_order), count=needed)
        strides = [step * itemsize for step in view.stride]
        return np.lib.stride_tricks.as_strided(values[view.offset :], view.shape, strides).copy()

    def _storage_bytes(self, storage, length):
        """At least `length` bytes of `storage` from the start, read as far as needed."""
        if len(self.values.get(storage.key, b"")) < length:
            data = self._read_storage(storage, length)
            if len(data) != length:
                raise TorchFormatError(f"its storage {storage.key} ends before its tensors do")
            self.values[storage.key] = data
        return self.values[storage.key]

    # --- zip (PyTorch 1.6 and later) ---

    def _read_zip(self):
        pickle_names = [name for name in self.archive.namelist() if name.endswith("/data.pkl")]
        if len(pickle_names) != 1:
            raise TorchFormatError("it is a zip archive, but not one torch.save wrote (one data.pkl)")
        self.root = pickle_names[0].removesuffix("data.pkl")
        version = self._read_entry("version", 16, required=True).strip()
        if version.decode("ascii", "replace") not in ZIP_VERSIONS:
            raise TorchFormatError(f"its version is {version[:16]!r}; torch.save writes {', '.join(ZIP_VERSIONS)}")
        byte_order = self._read_entry("byteorder", 16, required=False)
        if byte_order not in (None, b"little", b"big"):
            raise TorchFormatError(f"its byteorder is {byte_order!r}, neither 'little' nor 'big'")
        self.byte_order = ">" if byte_order == b"big" else "<"
        data = self._read_entry("data.pkl", PICKLE_BYTES, required=True)
        state_dict = torch_pickle.load(io.BytesIO(data), self.storage)
        for storage in self.storages.values():
            info = self._entry(f"data/{storage.key}")
            if info.file_size != storage.size * storage.itemsize:
                raise TorchFormatError(
                    f"its storage {storage.key} holds {info.file_size:,} bytes, its tensors say "
                    f"{storage.size * storage.itemsize:,}"
                )
        return state_dict

    def _entry(self, name):
        """The zip entry `<root>/name`, if it is one this reader may read."""
        try:
            info = self.archive.getinfo(self.root + name)
        except KeyError:
            raise TorchFormatError(f"it has no {self.root}{name}") from None
        if info.flag_bits & 0x1:
            raise TorchFormatError(f"its {info.filename} is encrypted")
        if info.compress_type not in ZIP_METHODS:
            raise TorchFormatError(
                f"its {info.filename} is compressed by method {info.compress_type}, not "
                f"{' or '.join(ZIP_METHODS.values())}"
            )
        return info

    def _read_entry(self, name, limit, required):
        if not required and self.root + name not in self.archive.namelist():
            return None
        info = self._entry(name)
        if info.file_size > limit:
            raise TorchFormatError(f"its {info.filename} is larger than {limit:,} bytes")
        with self.archive.open(info) as entry:
            return entry.read(limit)

    # --- legacy (before PyTorch 1.6) ---

    def _read_legacy(self):
        self.byte_order = "<"
        size = os.fstat(self.file.fileno()).st_size
        self.file.seek(0)  # is_zipfile has read its end
        header = io.BytesIO(self.file.read(min(size, PICKLE_BYTES)))
        if header.getvalue()[:2] != b"\x80\x02":  # PROTO 2
            raise TorchFormatError("it is neither a zip archive nor a pickle of protocol 2")
        if torch_pickle.load(header) != LEGACY_MAGIC_NUMBER:
            raise TorchFormatError("it is a pickle, but not one torch.save wrote")
        protocol = torch_pickle.load(header)
        if protocol != LEGACY_PROTOCOL_VERSION:
            raise TorchFormatError(f"its protocol version is {protocol!r}; torch.save writes {LEGACY_PROTOCOL_VERSION}")
        system_info = torch_pickle.load(header)
        if not isinstance(system_info, dict) or system_info.get("protocol_version") != LEGACY_PROTOCOL_VERSION:
            raise TorchFormatError("its system information is not torch.save's")
        if system_info.get("little_endian") is not True:
            raise TorchFormatError("it was saved on a big-endian machine")
        state_dict = torch_pickle.load(header, self.storage)
        keys = torch_pickle.load(header)
        if not (isinstance(keys, list) and all(isinstance(key, str) for key in keys)) or sorted(keys) != sorted(
            self.storages
        ):
            raise TorchFormatError("its list of storages is not the storages its tensors name")
        # Each storage: its number of elements (int64, little-endian), then its elements.
        self.offsets = {}
        position = header.tell()
        for key in keys:
            storage = self.storages[key]
            self.file.seek(position)
            count = int.from_bytes(self.file.read(8), "little")
            if count != storage.size:
                raise TorchFormatError(f"its storage {key} holds {count:,} elements, its tensors say {storage.size:,}")
            self.offsets[key] = position + 8
            position += 8 + count * storage.itemsize
            if position > size:
                raise TorchFormatError("it ends before its last tensor")
        return state_dict

    def _read_storage(self, storage, length):
        if self.archive is not None:
            with self.archive.open(self._entry(f"data/{storage.key}")) as entry:
                return entry.read(length)
        self.file.seek(self.offsets[storage.key])
        return self.file.read(length)


@contextlib.contextmanager
def _damage_named():
    """Turns what the standard library raises for a damaged file (genops' and zipfile's errors, zlib's) into
    TorchFormatError."""
    try:
        yield
    except TorchFormatError:
        raise
    except (ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, OverflowError) as error:
        raise TorchFormatError(f"it is damaged ({type(error).__name__}: {error})") from error
