"""The pickles of torch.save files run without Python's unpickler, for files that may be hostile: `load` gives a
state dict's tensors as `TensorView`s of `Storage`s, and nothing a pickle names can run code or change the reader.

`_Interpreter` runs the opcodes of protocol 2 that torch.save writes (walked by `pickletools.genops`, pure Python and
iterative) on values of its own, and refuses any other opcode, any global but the three a state dict names and its
storage classes, nesting deeper than MAX_DEPTH, more than MAX_OPCODES opcodes and lengths beyond the stream, before
anything is allocated for them. A pickle refused ends in `TorchFormatError` saying why.
"""

import dataclasses
import pickletools

import numpy as np

import errors

# torch.save pickles with protocol 2 (torch.serialization.DEFAULT_PROTOCOL).
PICKLE_PROTOCOL = 2
# Each storage class a state dict holds: its numpy element type (None for bfloat16, which numpy has not: refused
# when read) and bytes an element.
STORAGE_CLASSES = {
    "FloatStorage": (np.float32, 4),
    "HalfStorage": (np.float16, 2),
    "DoubleStorage": (np.float64, 8),
    "BFloat16Storage": (None, 2),
    "LongStorage": (np.int64, 8),
    "IntStorage": (np.int32, 4),
    "ShortStorage": (np.int16, 2),
    "CharStorage": (np.int8, 1),
    "ByteStorage": (np.uint8, 1),
    "BoolStorage": (np.bool_, 1),
}
# Opcodes of one pickle: a state dict has about 12 a tensor (BERT-large: 5,000). Bounds the memory and time of a
# pickle of tiny opcodes (each makes at most one value).
MAX_OPCODES = 500_000
# Containers within containers: a state dict nests 4 deep (dict, tensor arguments, shape tuple).
MAX_DEPTH = 16
# Shapes, strides, offsets and element counts above this are no tensor a machine holds.
MAX_INTEGER = 2**48


class TorchFormatError(errors.InputError):
    """A file that is not a PyTorch state dict these modules read (this one and torch_state_dict)."""


# === Values of the pickle ===


@dataclasses.dataclass(frozen=True)
class Global:
    """A global the pickle names: one of those in GLOBALS, nothing importable."""

    name: str


ORDERED_DICT = Global("collections.OrderedDict")
REBUILD_TENSOR = Global("torch._utils._rebuild_tensor_v2")
REBUILD_PARAMETER = Global("torch._utils._rebuild_parameter")
# GLOBAL's argument ("module name") -> its value: all a state dict names.
GLOBALS = {
    "collections OrderedDict": ORDERED_DICT,
    "torch._utils _rebuild_tensor_v2": REBUILD_TENSOR,
    "torch._utils _rebuild_parameter": REBUILD_PARAMETER,
    **{f"torch {name}": Global(name) for name in STORAGE_CLASSES},
}


@dataclasses.dataclass(eq=False)
class Storage:
    """One storage of the file: its key, class and number of elements."""

    key: str
    storage_class: str
    size: int

    @property
    def itemsize(self):
        return STORAGE_CLASSES[self.storage_class][1]


@dataclasses.dataclass(frozen=True)
class TensorView:
    """A tensor as the pickle describes it: a strided view of a storage."""

    storage: Storage
    offset: int
    shape: tuple
    stride: tuple

    def elements_needed(self):
        """How many elements of its storage the view reaches (0 for an empty tensor)."""
        if 0 in self.shape:
            return 0
        return self.offset + sum((size - 1) * step for size, step in zip(self.shape, self.stride, strict=True)) + 1


class _OrderedDict(dict):
    """A dict the pickle made by calling collections.OrderedDict: the only value BUILD may be applied to."""


# === The pickle interpreter ===


class _Interpreter:
    """Runs one pickle of a torch.save file on this module's values (see the module docstring).

    Containers are tracked by identity: their nesting depth, and whether they are inside another already (then they
    are final, as every pickle torch writes fills a container before using it), so the recorded depths are exact.
    """

    def __init__(self, storage):
        self.storage = storage  # (key, storage class, size) -> Storage
        self.stack, self.marks, self.memo = [], [], {}
        self.containers = []  # every container made, kept alive so that ids stay unique
        self.depths, self.used = {}, set()

    def run(self, stream):
        for self.count, (opcode, argument, _) in enumerate(pickletools.genops(stream), start=1):
            if self.count > MAX_OPCODES:
                raise TorchFormatError(f"its pickle has more than {MAX_OPCODES:,} opcodes")
            if opcode.name == "STOP":
                if len(self.stack) != 1 or self.marks:
                    raise TorchFormatError("its pickle does not end in one value")
                return self.stack[0]
            step = getattr(self, f"op_{opcode.name}", None)
            if step is None:
                raise TorchFormatError(f"its pickle has opcode {opcode.name}, which torch.save does not write")
            step(argument)
        raise TorchFormatError("its pickle ends before its STOP")

    # --- the stack ---

    def pop(self, count):
        if len(self.stack) - (self.marks[-1] if self.marks else 0) < count:
            raise TorchFormatError("its pickle takes more values than it put on its stack")
        items = self.stack[len(self.stack) - count :]
        del self.stack[len(self.stack) - count :]
        return items

    def pop_mark(self):
        if not self.marks:
            raise TorchFormatError("its pickle closes a mark it never opened")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def top(self):
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise TorchFormatError("its pickle takes more values than it put on its stack")
        return self.stack[-1]

    # --- containers ---

    def depth(self, value):
        return self.depths.get(id(value), 0)

    def new(self, container, items=()):
        depth = 1 + max((self.depth(item) for item in items), default=0)
        if depth > MAX_DEPTH:
            raise TorchFormatError(f"its pickle nests deeper than {MAX_DEPTH}")
        self.used.update(id(item) for item in items if id(item) in self.depths)
        self.containers.append(container)
        self.depths[id(container)] = depth
        self.stack.append(container)

    def new_tuple(self, items):
        self.new(tuple(items), items)

    def add_to_top(self, items):
        """Puts `items` into the container on top of the stack: a dict (key, value, key, value...) or a list."""
        container = self.top()
        if id(container) in self.used:
            raise TorchFormatError("its pickle changes a container after putting it into another")
        depth = 1 + max((self.depth(item) for item in items), default=0)
        if depth > MAX_DEPTH:
            raise TorchFormatError(f"its pickle nests deeper than {MAX_DEPTH}")
        self.depths[id(container)] = max(self.depths.get(id(container), 1), depth)
        self.used.update(id(item) for item in items if id(item) in self.depths)
        if isinstance(container, list):
            container.extend(items)
        elif isinstance(container, dict) and len(items) % 2 == 0:
            for key, value in zip(items[::2], items[1::2], strict=True):
                if isinstance(key, bool) or not isinstance(key, str | int):
                    raise TorchFormatError("its pickle has a dict key that is neither a string nor an integer")
                container[key] = value
        else:
            raise TorchFormatError("its pickle puts items into something that is neither a dict nor a list")

    # --- opcodes: what torch.save writes, no other ---

    def op_PROTO(self, protocol):
        if protocol != PICKLE_PROTOCOL:
            raise TorchFormatError(f"its pickle is of protocol {protocol}; torch.save writes {PICKLE_PROTOCOL}")

    def op_MARK(self, _):
        if len(self.marks) >= MAX_DEPTH:
            raise TorchFormatError(f"its pickle nests deeper than {MAX_DEPTH}")
        self.marks.append(len(self.stack))

    def push(self, value):
        self.stack.append(value)

    op_BINUNICODE = op_BININT = op_BININT1 = op_BININT2 = op_LONG1 = push

    def op_NONE(self, _):
        self.stack.append(None)

    def op_NEWTRUE(self, _):
        self.stack.append(True)

    def op_NEWFALSE(self, _):
        self.stack.append(False)

    def op_EMPTY_DICT(self, _):
        self.new({})

    def op_EMPTY_LIST(self, _):
        self.new([])

    def op_EMPTY_TUPLE(self, _):
        self.new(())

    def op_TUPLE1(self, _):
        self.new_tuple(self.pop(1))

    def op_TUPLE2(self, _):
        self.new_tuple(self.pop(2))

    def op_TUPLE3(self, _):
        self.new_tuple(self.pop(3))

    def op_TUPLE(self, _):
        self.new_tuple(self.pop_mark())

    def op_BINPUT(self, index):
        # A pickler numbers its memo 0, 1, 2...: an index beyond the opcodes so far is no pickler's.
        if index >= self.count:
            raise TorchFormatError(f"its pickle memoizes at index {index}, beyond its {self.count} opcodes so far")
        self.memo[index] = self.top()

    op_LONG_BINPUT = op_BINPUT

    def op_BINGET(self, index):
        if index not in self.memo:
            raise TorchFormatError(f"its pickle reads memo {index}, which it never wrote")
        self.stack.append(self.memo[index])

    op_LONG_BINGET = op_BINGET

    def op_SETITEM(self, _):
        self.add_to_top(self.pop(2))

    def op_SETITEMS(self, _):
        self.add_to_top(self.pop_mark())

    def op_APPEND(self, _):
        self.add_to_top(self.pop(1))

    def op_APPENDS(self, _):
        self.add_to_top(self.pop_mark())

    def op_GLOBAL(self, name):
        if name not in GLOBALS:
            raise TorchFormatError(f"it holds {name.replace(' ', '.')}, which is not part of a state dict of tensors")
        self.stack.append(GLOBALS[name])

    def op_BINPERSID(self, _):
        (pid,) = self.pop(1)
        # ("storage", storage class, key, location, number of elements[, view of another storage (legacy)])
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise TorchFormatError("it has a persistent id that is not a storage")
        _, storage_class, key, location, size, *view = pid
        if view not in ([], [None]):
            raise TorchFormatError("it holds storage views (a legacy format this reader does not follow)")
        if not (isinstance(storage_class, Global) and storage_class.name in STORAGE_CLASSES):
            raise TorchFormatError("it has a storage whose class is not a tensor type")
        if not (isinstance(key, str) and isinstance(location, str) and _is_count(size)):
            raise TorchFormatError("it has a storage whose key, location or size is malformed")
        self.stack.append(self.storage(key, storage_class.name, size))

    def op_REDUCE(self, _):
        function, arguments = self.pop(2)
        if not isinstance(arguments, tuple):
            raise TorchFormatError("its pickle calls something with arguments that are no tuple")
        if function == ORDERED_DICT and arguments == ():
            self.new(_OrderedDict())
        elif function == REBUILD_TENSOR:
            self.stack.append(_tensor_view(*_arguments(arguments, 6, 7)))
        elif function == REBUILD_PARAMETER:
            data, requires_grad, _ = _arguments(arguments, 3, 3)
            if not (isinstance(data, TensorView) and isinstance(requires_grad, bool)):
                raise TorchFormatError("it has a parameter that is not a tensor")
            self.stack.append(data)
        else:
            raise TorchFormatError("its pickle calls something other than what rebuilds a tensor or a dict")

    def op_BUILD(self, _):
        (state,) = self.pop(1)
        # A state dict's attributes (its _metadata of module versions), not needed to read its tensors.
        if not (isinstance(self.top(), _OrderedDict) and isinstance(state, dict)):
            raise TorchFormatError("its pickle sets attributes of something other than its dict of tensors")


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INTEGER


def _arguments(arguments, least, most):
    if not least <= len(arguments) <= most:
        raise TorchFormatError("it rebuilds a tensor with the wrong number of arguments")
    return arguments


def _tensor_view(storage, offset, shape, stride, requires_grad, backward_hooks, metadata=None):
    """torch._utils._rebuild_tensor_v2's arguments, checked, as a TensorView."""
    if not isinstance(storage, Storage):
        raise TorchFormatError("it has a tensor whose storage is not a storage")
    if not (_is_count(offset) and isinstance(shape, tuple) and isinstance(stride, tuple)):
        raise TorchFormatError("it has a tensor whose offset, shape or stride is malformed")
    if len(shape) != len(stride) or len(shape) > MAX_DEPTH or not all(map(_is_count, shape + stride)):
        raise TorchFormatError("it has a tensor whose shape or stride is malformed")
    if not (isinstance(requires_grad, bool) and isinstance(backward_hooks, dict)):
        raise TorchFormatError("it has a tensor whose requires_grad or hooks are malformed")
    view = TensorView(storage, offset, shape, stride)
    if view.elements_needed() > storage.size:
        raise TorchFormatError("a tensor reaches outside its storage")
    return view


def load(stream, storage=None):
    """The value of the pickle at `stream`'s position (io.BytesIO), which is left after its STOP. `storage(key,
    storage class, size)` gives the Storage a persistent id names (none may be named without it). A damaged stream
    raises what pickletools.genops raises (ValueError, EOFError...), the caller's to name."""

    def no_storage(*_):
        raise TorchFormatError("it has a storage where none belongs")

    return _Interpreter(storage or no_storage).run(stream)
