"""Torch's file formats, read and written without torch and without running code from the file.

Torch's own reader (`torch.load`) unpickles; this module decodes the same files with a
restricted unpickler that constructs only plain data, numpy arrays and inert `Placeholder`
objects. It never imports a module named in the file and never calls anything the file
names, so a checkpoint from an untrusted source, or one that holds objects of a library this
process lacks, reads safely. It never imports torch either.

Formats read (`read_torch_file`):

- the zip format of `torch.save` (torch >= 1.6): `<name>/data.pkl` is a pickle whose tensors
  are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` calls and whose
  storages are persistent ids `('storage', <StorageType>, key, location, numel)`, the bytes
  of storage `key` being the record `<name>/data/<key>`;
- TorchScript archives (`torch.jit.save`): the same zip layout, with `data.pkl` holding the
  module tree as `__torch__.*` objects and `code/` the modules' TorchScript source;
- the legacy format (`torch.save(..., _use_new_zipfile_serialization=False)`): a magic
  number, a protocol version and system information as three pickles, the data pickle, the
  list of storage keys, then each storage as an int64 element count and its bytes.

Format written (`write_torch_file`): the zip format, for a flat `{name: array}`, which
`torch.load(path, weights_only=True)` reads back bit for bit.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import io
import os
import pickle
import re
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import ml_dtypes
import numpy as np

__all__ = [
    "ModuleRecord",
    "Placeholder",
    "QuantizedTensor",
    "TorchFile",
    "TorchFormatError",
    "describe_bytes",
    "pickled_module_class",
    "quantized_cell_params",
    "quantized_linear_params",
    "read_pickle_file",
    "read_torch_bytes",
    "read_torch_file",
    "script_modules",
    "traced_lstm_arguments",
    "write_torch_file",
]


class TorchFormatError(ValueError):
    """A file is not a torch checkpoint this module can read; the message says what it is."""


# Storage classes of torch's pickles, by name, and the dtype of their elements.
_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
    "UntypedStorage": np.dtype(np.uint8),
    "QInt8Storage": np.dtype(np.int8),
    "QUInt8Storage": np.dtype(np.uint8),
    "QInt32Storage": np.dtype(np.int32),
}
# `torch.<dtype>` globals (the dtype argument of `_rebuild_tensor_v3`).
_TORCH_DTYPES = {
    "float64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "int64": np.dtype(np.int64),
    "int32": np.dtype(np.int32),
    "int16": np.dtype(np.int16),
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16),
    "uint32": np.dtype(np.uint32),
    "uint64": np.dtype(np.uint64),
    "bool": np.dtype(np.bool_),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_SAVE_ADVICE = (
    "save the weights with torch.save(model.state_dict(), path) or the whole model with "
    "torch.jit.save(torch.jit.script(model), path)"
)


# ----------------------------------------------------------------------------- placeholders


class Placeholder:
    """An object of a class the reader does not construct, kept as inert data.

    Each class the file names gets its own subclass, whose class attributes `module` and
    `qualname` say what it stands for; its instances record what the file did with them.

    Attributes:
        module: (class level) the module the file names, e.g.
            `"lightning.fabric.utilities.data"`.
        qualname: (class level) the class or function name, e.g. `"AttributeDict"`.
        args: what the file passed when constructing or calling it, positionally.
        kwargs: what the file passed when constructing or calling it, by keyword.
        state: what the file set as its state (usually its `__dict__`), or None.
        items: entries the file set with `obj[key] = value` (dict subclasses).
        list_items: entries the file appended (list subclasses).
    """

    module = ""
    qualname = ""
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: Any
    items: dict[Any, Any]
    list_items: list[Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        self = object.__new__(cls)
        self.args, self.kwargs, self.state = args, kwargs, None
        self.items, self.list_items = {}, []
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # __new__ recorded the arguments; nothing runs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.list_items.append(value)

    def extend(self, values: Any) -> None:
        self.list_items.extend(values)

    @classmethod
    def name(cls) -> str:
        """`module.qualname` of the class the file named."""
        return f"{cls.module}.{cls.qualname}" if cls.module else cls.qualname

    def __repr__(self) -> str:
        return f"<placeholder for {self.name()}>"


@dataclasses.dataclass(frozen=True)
class _Storage:
    """A storage a tensor points into: its elements as a flat numpy array."""

    data: np.ndarray


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> np.ndarray:
    """`torch._utils._rebuild_tensor[_v2]`: a strided view of a storage, copied."""
    storage = _storage_from_bytes(storage)
    if not isinstance(storage, _Storage):
        raise TorchFormatError(f"a tensor refers to {type(storage).__name__}, not to a storage")
    size, stride = tuple(size), tuple(stride)
    ints = (offset, *size, *stride)
    if len(size) != len(stride) or not all(isinstance(v, int) and v >= 0 for v in ints):
        raise TorchFormatError(
            f"a tensor has an invalid layout: offset {offset}, size {size}, stride {stride}"
        )
    data = storage.data
    if 0 in size:
        return np.zeros(size, data.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= data.size:
        raise TorchFormatError(
            f"a tensor of size {size} and stride {stride} at offset {offset} reaches element "
            f"{last} "
            f"of a storage of {data.size} elements (the file is damaged)"
        )
    view = np.lib.stride_tricks.as_strided(
        data[offset:], shape=size, strides=[s * data.itemsize for s in stride], writeable=False
    )
    return np.array(view)  # a copy: tensors sharing a storage stay independent


def _storage_from_bytes(storage: Any) -> Any:
    """`torch.storage._load_from_bytes(b)` (a tensor pickled with `pickle`, not `torch.save`):
    `b` is a `torch.save` file holding the storage, read like any other."""
    if (
        isinstance(storage, Placeholder)
        and storage.name() == "torch.storage._load_from_bytes"
        and storage.args
        and isinstance(storage.args[0], bytes)
    ):
        return read_torch_bytes(storage.args[0], "a pickled storage").obj
    return storage


def _rebuild_tensor_v3(
    storage: Any, offset: Any, size: Any, stride: Any, _grad: Any, _hooks: Any, dtype: Any, *_: Any
) -> np.ndarray:
    """`torch._utils._rebuild_tensor_v3`: an untyped storage viewed as `dtype`."""
    name = getattr(dtype, "qualname", None)
    storage = _storage_from_bytes(storage)
    if name not in _TORCH_DTYPES or not isinstance(storage, _Storage):
        raise TorchFormatError(
            f"a tensor has dtype torch.{name}, which this reader does not support"
        )
    raw = storage.data.view(np.uint8)
    typed = _Storage(
        raw[: raw.size - raw.size % _TORCH_DTYPES[name].itemsize].view(_TORCH_DTYPES[name])
    )
    return _rebuild_tensor(typed, offset, size, stride)


@dataclasses.dataclass(frozen=True)
class QuantizedTensor:
    """A quantized tensor of a torch file (`torch.qint8`, ...), kept with its quantizer.

    Attributes:
        values: the integers, e.g. int8, in the tensor's shape.
        scale: the scale: a float (per tensor) or one per slice along `axis` (per channel).
        zero_point: the zero point, like `scale`.
        axis: the channel axis of a per-channel quantizer, else None.
    """

    values: np.ndarray
    scale: Any
    zero_point: Any
    axis: int | None = None

    def dequantize(self) -> np.ndarray:
        """`(values - zero_point) * scale` as float32, as `torch.Tensor.dequantize` computes."""
        scale = np.asarray(self.scale, np.float64)
        zero = np.asarray(self.zero_point, np.float64)
        if self.axis is not None:
            shape = [1] * self.values.ndim
            shape[self.axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return ((self.values.astype(np.float64) - zero) * scale).astype(np.float32)


def _rebuild_qtensor(
    storage: Any, offset: Any, size: Any, stride: Any, quantizer: Any, *_: Any
) -> QuantizedTensor:
    """`torch._utils._rebuild_qtensor`: integers with a per-tensor or per-channel quantizer."""
    values = _rebuild_tensor(storage, offset, size, stride)
    scheme = getattr(quantizer[0], "qualname", None) if isinstance(quantizer, tuple) else None
    if scheme == "per_tensor_affine" and len(quantizer) >= 3:
        return QuantizedTensor(values, float(quantizer[1]), int(quantizer[2]))
    if scheme in ("per_channel_affine", "per_channel_affine_float_qparams") and len(quantizer) >= 4:
        return QuantizedTensor(values, quantizer[1], quantizer[2], int(quantizer[3]))
    raise TorchFormatError(f"a quantized tensor has the quantizer {scheme!r}, which is not read")


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    """`torch._utils._rebuild_parameter[_with_state]`: a Parameter is its data."""
    return data


def _rebuild_from_type(func: Any, _new_type: Any, args: Any, _state: Any) -> Any:
    """`torch._tensor._rebuild_from_type_v2`: a tensor subclass, rebuilt as its data."""
    if func in _REBUILDERS.values():
        return func(*args)
    return func(*args) if isinstance(func, type) and issubclass(func, Placeholder) else None


def _latin1_bytes(text: Any, encoding: str = "latin1") -> bytes:
    """`_codecs.encode`, as pickle protocol 2 uses it for `bytes` objects."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise TorchFormatError("the file asks to encode a non-string (not a pickle of plain data)")
    return text.encode("latin1")


_REBUILDERS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_qtensor"): _rebuild_qtensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
}
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    **_REBUILDERS,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _latin1_bytes,
}


class _Unpickler(pickle.Unpickler):
    """Unpickles plain data; every global it does not know becomes a `Placeholder` class.

    Args:
        file: the pickle.
        storage: `(key, dtype, numel) -> np.ndarray` of the storage's elements.
    """

    def __init__(
        self,
        file: Any,
        storage: Callable[[str, np.dtype, int], np.ndarray],
        extra_globals: Mapping[tuple[str, str], Any] | None = None,
    ):
        super().__init__(file)
        self._globals = {**_SAFE_GLOBALS, **(extra_globals or {})}
        self._storage = storage
        self._storages: dict[str, _Storage] = {}
        self._classes: dict[tuple[str, str], type[Placeholder]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._globals:
            return self._globals[(module, name)]
        key = (str(module), str(name))
        if key not in self._classes:
            self._classes[key] = type(name, (Placeholder,), {"module": key[0], "qualname": key[1]})
        return self._classes[key]

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
            raise TorchFormatError(f"unknown persistent id {str(pid)[:80]!r} (not a torch storage)")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        dtype = _STORAGE_DTYPES.get(str(getattr(storage_type, "qualname", "")))
        if dtype is None or not isinstance(numel, int):
            raise TorchFormatError(
                f"storage {key!r} has type {storage_type!r}, which this reader does not support"
            )
        if key not in self._storages:
            data = self._storage(key, dtype, numel)
            if data.size != numel:
                raise TorchFormatError(
                    f"storage {key!r} holds {data.size} elements, the file says {numel}"
                )
            self._storages[key] = _Storage(data)
        return self._storages[key]


def _unpickle(data: bytes | Any, storage: Callable[[str, np.dtype, int], np.ndarray]) -> Any:
    file = io.BytesIO(data) if isinstance(data, bytes) else data
    return _Unpickler(file, storage).load()


# ----------------------------------------------------------------------------- reading


@dataclasses.dataclass
class TorchFile:
    """What a torch file holds.

    Attributes:
        kind: `"checkpoint"` (zip format), `"legacy"` or `"torchscript"`.
        obj: the unpickled object: tensors are numpy arrays, objects of other classes
            `Placeholder`s (a TorchScript archive's modules included).
        code: TorchScript only: `{module path: source}` of the archive's `code/`, e.g.
            `{"__torch__.torch.nn.modules.rnn": "class LSTM(Module): ..."}`.
    """

    kind: str
    obj: Any
    code: dict[str, str] = dataclasses.field(default_factory=dict)


def describe_bytes(head: bytes, size: int) -> str:
    """What a file that is not a checkpoint looks like, from its first bytes, for an error."""
    if size == 0:
        return "is empty (0 bytes)"
    if head.startswith(b"PK"):
        return f"is a zip archive ({size} bytes) that is truncated or damaged"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "is a tar archive (torch's pre-0.4 format, which this reader does not support)"
    try:
        text = head[:64].decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(c.isprintable() or c in "\r\n\t" for c in text):
        return f"is a text file ({size} bytes) starting with {text[:40]!r}"
    return (
        f"is not a torch checkpoint ({size} bytes of unrecognised content starting with "
        f"{head[:12]!r})"
    )


def read_torch_file(path: str | os.PathLike) -> TorchFile:
    """Reads a torch file (zip checkpoint, TorchScript archive or legacy format) without torch.

    Args:
        path: the file.

    Returns:
        The `TorchFile`.

    Raises:
        FileNotFoundError: `path` does not exist.
        TorchFormatError: the file is not a torch checkpoint (empty, text, truncated,
            another format, or a damaged record); the message says what the file is.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        return _decode(f, f"{path!r}")


def read_torch_bytes(data: bytes, name: str) -> TorchFile:
    """`read_torch_file` for a file's bytes, e.g. a member of a zip archive.

    Args:
        data: the file's bytes.
        name: what to call it in messages, e.g. `"'policy.pth' in 'model.zip'"`.

    Raises:
        TorchFormatError: see `read_torch_file`.
    """
    return _decode(io.BytesIO(data), name)


def _decode(f: Any, where: str) -> TorchFile:
    """A torch file from an open binary file object; `where` names it in messages."""
    head = f.read(512)
    size = f.seek(0, io.SEEK_END)
    f.seek(0)
    try:
        if zipfile.is_zipfile(f):
            f.seek(0)
            return _read_zip(f)
        if head.startswith(b"\x80") and _is_legacy(head):
            f.seek(0)
            return _read_legacy(f)
    except TorchFormatError as e:
        raise TorchFormatError(f"{where} is not a readable torch checkpoint: {e}") from None
    except (
        zipfile.BadZipFile,
        EOFError,
        zlib.error,
        pickle.UnpicklingError,
        struct.error,
        OSError,
    ) as e:
        if isinstance(e, FileNotFoundError):
            raise
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TorchFormatError(
            f"{where} is a damaged or truncated torch checkpoint ({detail})"
        ) from None
    what = describe_bytes(head, size)
    if head.startswith(b"\x80"):
        what = f"is a Python pickle ({size} bytes) but not a torch checkpoint"
    raise TorchFormatError(
        f"{where} {what}; expected a file written by torch.save, torch.jit.save or safetensors: "
        f"{_SAVE_ADVICE}"
    )


def _is_legacy(head: bytes) -> bool:
    """Whether a pickle starts with the legacy format's magic number."""
    try:
        return pickle.loads(head[: head.index(b".") + 1]) == _LEGACY_MAGIC
    except Exception:  # any failure to read a number means: not the legacy magic
        return False


def _archive_prefix(names: list[str]) -> str:
    """`<name>/`: the directory of the zip that holds `data.pkl`."""
    prefixes = sorted(
        {n[: -len("data.pkl")] for n in names if n.endswith("data.pkl") and n.count("/") == 1}
    )
    if len(prefixes) != 1:
        shown = names[:6]
        raise TorchFormatError(
            "it is a zip archive but not a torch checkpoint: expected one '<name>/data.pkl', "
            "found "
            f"entries {shown}{' ...' if len(names) > 6 else ''}"
        )
    return prefixes[0]


def _read_zip(source: Any) -> TorchFile:
    with zipfile.ZipFile(source) as archive:
        names = archive.namelist()
        prefix = _archive_prefix(names)
        big = prefix + "byteorder" in names and archive.read(prefix + "byteorder").strip() == b"big"

        def storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
            record = f"{prefix}data/{key}"
            if record not in names:
                raise TorchFormatError(f"the record {record!r} of a tensor is missing")
            return _typed(archive.read(record), dtype, numel, big)

        obj = _unpickle(archive.read(prefix + "data.pkl"), storage)
        scripted = prefix + "constants.pkl" in names or any(
            n.startswith(prefix + "code/") for n in names
        )
        code = {}
        if scripted:
            for name in names:
                if name.startswith(prefix + "code/") and name.endswith(".py"):
                    module = name[len(prefix + "code/") : -len(".py")].replace("/", ".")
                    code[module] = archive.read(name).decode("utf-8", errors="replace")
    return TorchFile("torchscript" if scripted else "checkpoint", obj, code)


def _typed(raw: bytes, dtype: np.dtype, numel: int, big_endian: bool) -> np.ndarray:
    """The elements of a storage record; too few bytes is an error."""
    if len(raw) < numel * dtype.itemsize:
        raise TorchFormatError(
            f"a storage record holds {len(raw)} bytes, {numel * dtype.itemsize} expected"
        )
    data = np.frombuffer(raw, np.uint8, numel * dtype.itemsize)
    if big_endian and dtype.itemsize > 1:
        data = data.view(f">u{dtype.itemsize}").astype(f"<u{dtype.itemsize}").view(np.uint8)
    return data.view(dtype)


def _read_legacy(f: Any) -> TorchFile:
    """The legacy format: the data pickle is read twice, once to find the storages after it."""
    no_storages = lambda key, dtype, numel: np.zeros(numel, dtype)  # noqa: E731
    if _unpickle(f, no_storages) != _LEGACY_MAGIC or _unpickle(f, no_storages) != _LEGACY_PROTOCOL:
        raise TorchFormatError(
            "it has the legacy format's magic number but a wrong protocol version"
        )
    sys_info = _unpickle(f, no_storages)
    big = isinstance(sys_info, dict) and sys_info.get("little_endian") is False
    start = f.tell()
    sized: dict[str, np.dtype] = {}

    def record_dtype(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        sized.setdefault(key, dtype)
        return np.zeros(numel, dtype)

    _unpickle(f, record_dtype)
    keys = _unpickle(f, no_storages)
    storages = {}
    for key in keys:
        (count,) = struct.unpack(">q" if big else "<q", f.read(8))
        dtype = sized[str(key)]
        storages[str(key)] = _typed(f.read(count * dtype.itemsize), dtype, count, big)
    f.seek(start)

    def storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        if key not in storages:
            raise TorchFormatError(f"storage {key!r} is missing")
        return storages[key][:numel]

    return TorchFile("legacy", _unpickle(f, storage))


# ----------------------------------------------------------------------------- objects in files


def pickled_module_class(obj: Any) -> str | None:
    """`module.Class` if `obj` is a pickled `torch.nn.Module` (not TorchScript), else None."""
    if not isinstance(obj, Placeholder) or obj.module.startswith("__torch__"):
        return None
    state = obj.state
    if isinstance(state, dict) and "_modules" in state and "_parameters" in state:
        if obj.qualname == "_reconstructor" and obj.args and isinstance(obj.args[0], type):
            return obj.args[0].name() if issubclass(obj.args[0], Placeholder) else str(obj.args[0])
        return obj.name()
    return None


@dataclasses.dataclass
class ModuleRecord:
    """One module of a TorchScript archive.

    Attributes:
        prefix: its key prefix, `""` for the root, `"encoder.lstm."` below it.
        type_name: the class name, e.g. `"LSTM"` (mangling removed).
        training: its `training` flag.
        tensors: `{name: array}` of its parameters and buffers.
        constants: the values the scripted class declares `Final` (e.g. `batch_first`).
        code: the TorchScript source of its class.
    """

    prefix: str
    type_name: str
    training: bool | None
    tensors: dict[str, np.ndarray]
    constants: dict[str, Any]
    code: str


def _class_source(code: Mapping[str, str], module: str, name: str) -> str:
    """The source of `class name(...)` in the archive's file for `module`."""
    text = code.get(module, "")
    match = re.search(rf"^class {re.escape(name)}\(.*?(?=^class |\Z)", text, flags=re.M | re.S)
    return match.group(0) if match else ""


def _declared_list(source: str, attribute: str) -> list[str] | None:
    """`__parameters__ = ["a", "b", ]` in a class's source, as a list; None if absent."""
    match = re.search(rf"^\s+{attribute} = (\[.*?\])\s*$", source, flags=re.M)
    if not match:
        return None
    try:
        value = ast.literal_eval(match.group(1))
    except (ValueError, SyntaxError):
        return None
    return [str(v) for v in value] if isinstance(value, list) else None


def _final_constants(source: str) -> dict[str, Any]:
    """`name : Final[type] = literal` declarations of a scripted class."""
    constants = {}
    for name, literal in re.findall(
        r"^\s+(\w+) : Final\[[\w\[\], ]+\] = (.+?)\s*$", source, flags=re.M
    ):
        try:
            constants[name] = ast.literal_eval(literal)
        except (ValueError, SyntaxError):
            continue
    return constants


def script_modules(torch_file: TorchFile) -> Iterator[ModuleRecord]:
    """Every module of a TorchScript archive, depth first from the root.

    Yields:
        `ModuleRecord`s; the tensors are the parameters and buffers the class declares
        (or, without its source, every tensor attribute not starting with `_`), and the
        dequantized weights of a quantized LSTM's cells (`param.weight_ih`, ...; see
        `quantized_cell_params`).
    """
    stack: list[tuple[str, Any]] = [("", torch_file.obj)]
    seen: set[int] = set()
    while stack:
        prefix, obj = stack.pop()
        if id(obj) in seen or not _is_script_module(obj):
            continue
        seen.add(id(obj))
        state = obj.state
        source = _class_source(torch_file.code, obj.module, obj.qualname)
        declared = (_declared_list(source, "__parameters__") or []) + (
            _declared_list(source, "__buffers__") or []
        )
        tensors = {
            k: v
            for k, v in state.items()
            if isinstance(v, np.ndarray)
            and (k in declared if source else not str(k).startswith("_"))
        }
        for k, v in state.items():  # a quantized LSTM's cells, dequantized
            tensors |= {f"{k}.{n}": a for n, a in (quantized_cell_params(v) or {}).items()}
        training = state.get("training") if isinstance(state.get("training"), bool) else None
        yield ModuleRecord(
            prefix, obj.qualname, training, tensors, _final_constants(source), source
        )
        children = [(f"{prefix}{k}.", v) for k, v in state.items() if _is_script_module(v)]
        stack.extend(reversed(children))


def _is_script_module(obj: Any) -> bool:
    return (
        isinstance(obj, Placeholder)
        and obj.module.startswith("__torch__")
        and isinstance(obj.state, dict)
        and "training" in obj.state
    )


def _split_arguments(text: str) -> list[str]:
    """The top-level comma-separated arguments of a call's argument text."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


def traced_lstm_arguments(code: str) -> dict[str, Any]:
    """`batch_first` and `dropout` of a traced `nn.LSTM`, from its `torch.lstm(...)` call.

    A traced module keeps no attributes but its forward code, in which the LSTM is the call
    `torch.lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional,
    batch_first)` with the flags as literals. (The packed-sequence form has no
    `batch_first`; then only `dropout` is returned.)

    Returns:
        `{"batch_first": bool, "dropout": float}`, or the subset found, or `{}`.
    """
    match = re.search(r"torch\.lstm\((.*?)\)\s*$", code, flags=re.M)
    if not match:
        return {}
    literals: list[Any] = []
    for argument in reversed(_split_arguments(match.group(1))):
        try:
            literals.insert(0, ast.literal_eval(argument))
        except (ValueError, SyntaxError):
            break
    if len(literals) >= 6 and all(isinstance(v, bool) for v in (literals[-6], literals[-1])):
        return {"batch_first": literals[-1], "dropout": float(literals[-4])}
    if len(literals) == 5 and isinstance(literals[2], (int, float)):
        return {"dropout": float(literals[2])}
    return {}


# ----------------------------------------------------------------------------- plain pickles


class _PickledDtype:
    """`numpy.dtype(name, align, copy)` as a pickle builds it; resolved by `resolve`."""

    def __init__(self, name: Any = "f8", *_: Any) -> None:
        self.name, self.byteorder = name, "="

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.byteorder = state[1]

    def resolve(self) -> np.dtype:
        """The numpy dtype; object and structured dtypes are refused (they hold code or more)."""
        if not isinstance(self.name, str) or self.name[:1] in ("O", "V", "|"):
            raise TorchFormatError(f"an array has dtype {self.name!r}, which is not read")
        dtype = np.dtype(self.name)
        return (
            dtype.newbyteorder("<" if self.byteorder == "<" else ">")
            if self.byteorder in "<>"
            else dtype
        )


class _PickledArray:
    """`numpy.core.multiarray._reconstruct(...)` before and after its `__setstate__`."""

    def __init__(self, *_: Any) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise TorchFormatError("a pickled numpy array has an unknown state")
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _PickledDtype) or not isinstance(raw, (bytes, bytearray)):
            raise TorchFormatError("a pickled numpy array holds objects, not numbers")
        flat = np.frombuffer(bytes(raw), dtype.resolve())
        order = "F" if fortran else "C"
        self.array = _native(flat, shape, order)


def _native(flat: np.ndarray, shape: Any, order: Any) -> np.ndarray:
    """`flat` in `shape` (`order` "C" or "F"), copied in native byte order."""
    shaped = flat.reshape([int(n) for n in shape], order="F" if order == "F" else "C")
    return shaped.astype(flat.dtype.newbyteorder("="))


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """`numpy._core.numeric._frombuffer` (pickle protocol 5)."""
    if not isinstance(dtype, _PickledDtype):
        raise TorchFormatError("a pickled numpy array has no dtype")
    return _native(np.frombuffer(bytes(buffer), dtype.resolve()), shape, order)


def _scalar(dtype: Any, raw: Any = b"") -> Any:
    """`numpy.core.multiarray.scalar`: a numpy scalar (e.g. a step count) from its bytes."""
    if not isinstance(dtype, _PickledDtype) or not isinstance(raw, (bytes, bytearray)):
        raise TorchFormatError("a pickled numpy scalar holds objects, not numbers")
    return np.frombuffer(bytes(raw), dtype.resolve())[0].item()


_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {}
for _core in ("numpy.core", "numpy._core"):
    _NUMPY_GLOBALS[(f"{_core}.multiarray", "_reconstruct")] = _PickledArray
    _NUMPY_GLOBALS[(f"{_core}.multiarray", "scalar")] = _scalar
    _NUMPY_GLOBALS[(f"{_core}.numeric", "_frombuffer")] = _frombuffer
_NUMPY_GLOBALS[("numpy", "dtype")] = _PickledDtype
# Only ever an argument of `_reconstruct`: an inert class, so that a file cannot allocate with it.
_NUMPY_GLOBALS[("numpy", "ndarray")] = type(
    "ndarray", (Placeholder,), {"module": "numpy", "qualname": "ndarray"}
)


def _resolve_arrays(obj: Any, seen: set[int] | None = None) -> Any:
    """The unpickled structure with every `_PickledArray` replaced by its array."""
    seen = set() if seen is None else seen
    if isinstance(obj, _PickledArray):
        return obj.array
    if id(obj) in seen:
        return obj
    seen.add(id(obj))
    if isinstance(obj, dict):
        for key in list(obj):
            obj[key] = _resolve_arrays(obj[key], seen)
    elif isinstance(obj, list):
        obj[:] = [_resolve_arrays(v, seen) for v in obj]
    elif isinstance(obj, tuple):
        return tuple(_resolve_arrays(v, seen) for v in obj)
    elif isinstance(obj, Placeholder):
        obj.state = _resolve_arrays(obj.state, seen)
        obj.items = _resolve_arrays(obj.items, seen)
    return obj


def read_pickle_file(path: str | os.PathLike) -> Any:
    """Reads a plain pickle (`pickle.dump`, e.g. a `.pkl` of numpy arrays) without running code.

    numpy arrays (numpy 1's `numpy.core` and numpy 2's `numpy._core` paths, pickle protocols
    2 to 5) become arrays; dicts, lists, numbers and strings stay; any other object becomes
    an inert `Placeholder`. Torch tensors pickled this way (not via `torch.save`) hold
    their storages as nested `torch.save` files, which are read like any torch file.

    Raises:
        TorchFormatError: not a pickle, a damaged one, or object arrays.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()

    def no_storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        raise TorchFormatError(
            "it refers to storages outside the pickle (persistent ids), as only torch.save's "
            "formats do: read it as a torch file"
        )

    unpickler = _Unpickler(io.BytesIO(data), no_storage, extra_globals=_NUMPY_GLOBALS)
    try:
        return _resolve_arrays(unpickler.load())
    except TorchFormatError as e:
        raise TorchFormatError(f"{path!r} is not a readable pickle: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, struct.error) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TorchFormatError(f"{path!r} is a damaged or unreadable pickle ({detail})") from None


# ----------------------------------------------------------------------------- quantized LSTMs

_CELL_PARAMS = "__torch__.torch.classes.rnn.CellParamsBase"


def _unwrap(value: Any) -> Any:
    """A TorchScript pickle's `build_tensorlist(x)`/`restore_type_tag(x, type)` as `x`."""
    if isinstance(value, Placeholder) and value.module == "torch.jit._pickle" and value.args:
        return value.args[0]
    return value


def _packed_linear(obj: Any) -> tuple[np.ndarray, Any]:
    """`(float weight, bias or None)` of a pickled `LinearPackedParamsBase`."""
    state = obj.state if isinstance(obj, Placeholder) else None
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], str):
        state = state[0]  # eager pickles add the class name
    if not (isinstance(state, tuple) and len(state) >= 1):
        raise TorchFormatError("a quantized LSTM holds a packed linear layer of unknown layout")
    weight, bias = state[0], _unwrap(state[1]) if len(state) > 1 else None
    if isinstance(weight, QuantizedTensor):
        weight = weight.dequantize()
    return np.asarray(weight, np.float32), bias


_LINEAR_PARAMS = "__torch__.torch.classes.quantized.LinearPackedParamsBase"


def quantized_linear_params(obj: Any) -> dict[str, np.ndarray] | None:
    """The float weight and bias of a dynamically quantized linear layer's packed parameters.

    A quantized `nn.LSTMCell` stores `_packed_weight_ih` and `_packed_weight_hh` this way
    (each with its bias), a quantized `nn.Linear` `_packed_params._packed_params`.

    Returns:
        `{"weight"[, "bias"]: float32 array}`, or None if `obj` is not such an object.
    """
    if not isinstance(obj, Placeholder) or not isinstance(obj.state, tuple):
        return None
    eager = len(obj.state) == 2 and obj.state[1] == _LINEAR_PARAMS
    if not (eager or obj.name() == _LINEAR_PARAMS):
        return None
    weight, bias = _packed_linear(obj)
    return {"weight": weight} | ({} if bias is None else {"bias": np.asarray(bias, np.float32)})


def quantized_cell_params(obj: Any) -> dict[str, np.ndarray] | None:
    """The float weights of one layer and direction of a dynamically quantized LSTM.

    `torch.ao.quantization.quantize_dynamic` stores each layer and direction of an LSTM as
    a `CellParamsBase` script object (`_all_weight_values.<k>.param` in its state_dict):
    `("quantized_dynamic", [b_ih, b_hh], [], [...], [packed w_ih, packed w_hh])` for qint8,
    whose weights are dequantized here with their recorded scales and zero points, or
    `("quantized_fp16", [], [], [], [packed (w_ih, b_ih), packed (w_hh, b_hh)])`.

    Returns:
        `{"weight_ih", "weight_hh"[, "bias_ih", "bias_hh"]: float32 array}`, or None if
        `obj` is not such an object.

    Raises:
        TorchFormatError: a `CellParamsBase` of another kind (e.g. static quantization).
    """
    if not isinstance(obj, Placeholder) or not isinstance(obj.state, tuple):
        return None
    if obj.name() == _CELL_PARAMS:  # TorchScript: the state itself, lists wrapped
        inner = tuple(_unwrap(v) for v in obj.state)
    elif len(obj.state) == 2 and obj.state[1] == _CELL_PARAMS:  # torch.save: (state, class)
        inner = obj.state[0]
    else:
        return None
    kind = inner[0] if isinstance(inner, tuple) and inner else None
    if kind not in ("quantized_dynamic", "quantized_fp16") or len(inner) != 5:
        raise TorchFormatError(
            f"a quantized LSTM has cell parameters of kind {kind!r}; only dynamic quantization "
            "(qint8, float16) is read: export float weights with "
            "torch.save(float_model.state_dict(), path)"
        )
    (w_ih, b_ih), (w_hh, b_hh) = (_packed_linear(p) for p in inner[4])
    if kind == "quantized_dynamic":
        b_ih, b_hh = [*inner[1], None, None][:2]
    out = {"weight_ih": w_ih, "weight_hh": w_hh}
    if b_ih is not None and b_hh is not None:
        out |= {"bias_ih": np.asarray(b_ih, np.float32), "bias_hh": np.asarray(b_hh, np.float32)}
    return out


# ----------------------------------------------------------------------------- writing

_STORAGE_NAMES = {
    dtype: name
    for name, dtype in _STORAGE_DTYPES.items()
    if name != "UntypedStorage" and not name.startswith("Q")
}


def _p_int(value: int) -> bytes:
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _p_str(value: str) -> bytes:
    raw = value.encode("utf-8")
    return b"X" + struct.pack("<I", len(raw)) + raw


def _p_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _p_tuple(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _tensor_pickle(key: str, array: np.ndarray) -> bytes:
    """The opcodes of `_rebuild_tensor_v2(storage key, 0, shape, contiguous strides, ...)`."""
    strides = [s // array.itemsize for s in array.strides] if array.size else [1] * array.ndim
    storage = _p_tuple(
        [
            _p_str("storage"),
            _p_global("torch", _STORAGE_NAMES[array.dtype]),
            _p_str(key),
            _p_str("cpu"),
            _p_int(array.size),
        ]
    )
    hooks = _p_global("collections", "OrderedDict") + b")R"
    arguments = [storage + b"Q", _p_int(0), _p_tuple([_p_int(n) for n in array.shape])]
    arguments += [_p_tuple([_p_int(s) for s in strides]), b"\x89", hooks]
    return _p_global("torch._utils", "_rebuild_tensor_v2") + _p_tuple(arguments) + b"R"


def write_torch_file(path: str | os.PathLike, tensors: Mapping[str, Any]) -> None:
    """Writes `{name: array}` in `torch.save`'s zip format, without torch.

    `torch.load(path, weights_only=True)` returns a dict of tensors with the same names,
    shapes, dtypes and bits.

    Args:
        path: the file to write.
        tensors: `{name: array}`; dtypes float64/32/16, bfloat16, int64/32/16/8, uint8, bool.

    Raises:
        TypeError: a dtype torch's storages cannot hold.
    """
    arrays = {str(k): np.asarray(v, order="C") for k, v in tensors.items()}
    bad = {k: str(a.dtype) for k, a in arrays.items() if a.dtype not in _STORAGE_NAMES}
    if bad:
        raise TypeError(f"tensors must have a dtype torch can store, got {bad}")
    body = b"".join(
        _p_str(name) + _tensor_pickle(str(i), a) for i, (name, a) in enumerate(arrays.items())
    )
    data = b"\x80\x02" + _p_global("collections", "OrderedDict") + b")R(" + body + b"u."
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", data)
        archive.writestr("archive/byteorder", sys.byteorder)
        for i, array in enumerate(arrays.values()):
            archive.writestr(f"archive/data/{i}", array.tobytes())
        archive.writestr("archive/version", "3\n")
