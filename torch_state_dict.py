"""PyTorch state dicts (`pytorch_model.bin`, as `torch.save` writes them) read as numpy arrays, without PyTorch.

Both of torch.save's formats: the zip archive (PyTorch 1.6 and later: `<root>/data.pkl` and one file per storage
under `<root>/data/`) and the legacy stream (before 1.6: magic number, protocol, system info, the pickled dict,
its storage keys, then each storage's raw bytes). Every pickle is read as `torch.load(weights_only=True)` reads
it: only an (ordered) dict of tensors is accepted, so a file cannot run code; anything else is refused.
`huggingface.read_weights` reads a directory's pytorch_model.bin with `read(path)` where it has no
model.safetensors.
"""

import collections
import dataclasses
import pickle
import zipfile

import numpy as np

# torch.save's legacy stream starts with this number (torch/serialization.py MAGIC_NUMBER).
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
# The element type of each storage class a state dict holds; bfloat16 has no numpy type.
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "DoubleStorage": np.float64,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class TorchFormatError(ValueError):
    """A file that is not a PyTorch state dict this module reads."""


@dataclasses.dataclass
class Storage:
    """One storage of the file: its elements, read when the file says where they are."""

    dtype: np.dtype
    values: np.ndarray | None = None  # 1-D, filled by the reader


@dataclasses.dataclass
class TensorView:
    """A tensor as the pickle describes it: a strided view of a storage, made an array once storages are read."""

    storage: Storage
    offset: int
    shape: tuple
    stride: tuple

    def array(self):
        values = self.storage.values
        if 0 in self.shape:
            return np.zeros(self.shape, values.dtype)
        # The last element the view reaches, checked: as_strided itself would read past the storage.
        last = self.offset + sum((size - 1) * step for size, step in zip(self.shape, self.stride, strict=True))
        if self.offset < 0 or min(self.stride, default=0) < 0 or last >= len(values):
            raise TorchFormatError("a tensor reaches outside its storage")
        strides = [step * values.dtype.itemsize for step in self.stride]
        return np.lib.stride_tricks.as_strided(values[self.offset :], self.shape, strides).copy()


def _rebuild_tensor(storage, offset, shape, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """torch._utils._rebuild_tensor_v2, deferred: the storage's bytes may come after the pickle."""
    return TensorView(storage, offset, tuple(shape), tuple(stride))


def _rebuild_parameter(data, requires_grad, backward_hooks, *state):
    """torch._utils._rebuild_parameter: a Parameter is its tensor here."""
    return data


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles only what a state dict is made of; `storage(key, storage_class_name)` gives each storage."""

    ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, file, storage):
        super().__init__(file)
        self.storage = storage

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return name  # a storage class, named in the persistent ids
        raise TorchFormatError(f"it holds {module}.{name}, which is not part of a state dict of tensors")

    def persistent_load(self, pid):
        # ("storage", storage class, key, location, number of elements[, view of another storage (legacy)])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise TorchFormatError(f"unknown persistent id {pid!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise TorchFormatError("it holds storage views (a legacy format this reader does not follow)")
        return self.storage(str(pid[2]), pid[1])


def _storage_dtype(storage_class):
    if storage_class == "BFloat16Storage":
        raise TorchFormatError("it holds bfloat16 tensors, which numpy cannot read: save the model in float32")
    if storage_class not in STORAGE_DTYPES:
        raise TorchFormatError(f"it holds a {storage_class}, which is not a tensor type of a BERT state dict")
    return np.dtype(STORAGE_DTYPES[storage_class])


def _arrays(state_dict):
    if not isinstance(state_dict, dict) or not all(isinstance(value, TensorView) for value in state_dict.values()):
        raise TorchFormatError("it is not a dict of tensors")
    return {str(name): view.array() for name, view in state_dict.items()}


def _read_zip(path):
    with zipfile.ZipFile(path) as archive:
        pickle_names = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(pickle_names) != 1:
            raise TorchFormatError("it is a zip archive, but not one torch.save wrote (one data.pkl)")
        (pickle_name,) = pickle_names
        root = pickle_name.removesuffix("data.pkl")
        byte_order = "<"
        if f"{root}byteorder" in archive.namelist():
            byte_order = "<" if archive.read(f"{root}byteorder").decode().strip() == "little" else ">"
        storages = {}

        def storage(key, storage_class):
            if key not in storages:
                dtype = _storage_dtype(storage_class).newbyteorder(byte_order)
                storages[key] = Storage(dtype, np.frombuffer(archive.read(f"{root}data/{key}"), dtype))
            return storages[key]

        with archive.open(pickle_name) as file:
            return _arrays(_StateDictUnpickler(file, storage).load())


def _read_legacy(path):
    storages = {}

    def storage(key, storage_class):
        if key not in storages:
            storages[key] = Storage(_storage_dtype(storage_class))
        return storages[key]

    with open(path, "rb") as file:

        def load():
            return _StateDictUnpickler(file, storage).load()

        try:
            magic_number = load()
        except pickle.UnpicklingError as error:
            raise TorchFormatError("it is neither a zip archive nor a pickle") from error
        if magic_number != LEGACY_MAGIC_NUMBER:
            raise TorchFormatError("it is a pickle, but not one torch.save wrote")
        load()  # protocol version
        system_info = load()
        if isinstance(system_info, dict) and system_info.get("little_endian") is False:
            raise TorchFormatError("it was saved on a big-endian machine")
        state_dict = load()
        for key in load():  # the storages' keys, in the order of their bytes
            # Each storage: its number of elements (int64, little-endian), then its elements.
            count = int.from_bytes(file.read(8), "little")
            dtype = storages[str(key)].dtype
            data = file.read(count * dtype.itemsize)
            if len(data) != count * dtype.itemsize:
                raise TorchFormatError("it ends before its last tensor")
            storages[str(key)].values = np.frombuffer(data, dtype)
        return _arrays(state_dict)


def read(path):
    """{name: numpy array} of the PyTorch state dict at `path`; TorchFormatError says why a file is refused."""
    try:
        return _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, zipfile.BadZipFile, ValueError) as error:
        if isinstance(error, TorchFormatError):
            raise
        raise TorchFormatError(f"it is damaged ({type(error).__name__}: {error})") from error
