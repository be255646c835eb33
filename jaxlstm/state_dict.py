"""State dicts: reading every source of LSTM weights, finding the LSTMs in it, matching, writing.

This is the one home of how weights travel; it never imports torch.

A *source* is any of:

- a mapping: a torch `state_dict`, or a checkpoint that nests one at any depth (e.g.
  `{"model_state": {...}, "optimizer": {...}, "step": 3}`); values may be torch tensors,
  numpy or jax arrays;
- a torch `nn.Module` (TorchScript modules included), or a `jaxlstm.LSTM`/`LSTMCell`;
- a path: a torch file (`.pt .pth .bin .ckpt .jit`: `torch.save`'s zip or legacy format,
  or a TorchScript archive), a `.safetensors` file (under any suffix: files are recognised
  by their content), a `.zip` archive of torch files, a `.pkl` pickle of numpy arrays, a
  Keras `.keras`/`.h5` file (`jaxlstm.keras_io`), an `.onnx` model (`jaxlstm.onnx_io`), or
  an orbax checkpoint directory (such as `python -m jaxlstm.convert` writes).

Checkpoints in the wild are normalised to torch's plain names: a weight-dropped LSTM
(AWD-LSTM's `weight_hh_l0_raw` beside `module.weight_ih_l0`) is read with its raw weights;
a dynamically quantized LSTM (`_all_weight_values.<k>.param`) with its dequantized weights;
each with a note in `LSTMWeights.notes`. Look-alikes — extra weights (peepholes),
submodules with parameters (layer norms), torch modules of another class or subclasses
overriding `forward` — are never listed as LSTMs; the error names why.

Every source is read into a `Checkpoint`: its tensors under flattened keys (nested dicts
joined with `.`, so `{"model_state": {"lstm.weight_ih_l0": w}}` gives the key
`"model_state.lstm.weight_ih_l0"`) and, where the source records them, facts about its
modules (type, `training`, `batch_first`, `dropout`). Torch files are decoded by
`jaxlstm.torch_format` without running code from them.

An LSTM is found wherever a key prefix holds exactly the parameters of an `nn.LSTM`
(`weight_ih_l0`, ...) or an `nn.LSTMCell` (`weight_ih`, `weight_hh`, ...) with consistent
shapes; its *prefix* is the full key prefix in the flattened source, e.g.
`"model_state.encoder.lstm."`, which `read_lstm`, `match_state_dict` and
`jaxlstm.from_torch` accept as `prefix`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import struct
import sys
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any, NamedTuple

import ml_dtypes
import numpy as np

from jaxlstm.config import LSTMCellConfig, LSTMConfig
from jaxlstm.torch_format import (
    Placeholder,
    TorchFormatError,
    pickled_module_class,
    quantized_cell_params,
    quantized_linear_params,
    read_pickle_file,
    read_torch_bytes,
    read_torch_file,
    script_modules,
    traced_lstm_arguments,
    write_torch_file,
)

__all__ = [
    "READ_ONLY_SUFFIXES",
    "TORCH_SUFFIXES",
    "Checkpoint",
    "LSTMWeights",
    "LoadResult",
    "ModuleInfo",
    "StateDictError",
    "detect_format",
    "find_lstms",
    "match_state_dict",
    "read_checkpoint",
    "read_lstm",
    "read_model",
    "read_orbax",
    "read_safetensors",
    "read_state_dict",
    "to_numpy",
    "write_orbax",
    "write_safetensors",
    "write_state_dict",
]

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".jit")
"""The suffixes read and written as torch files (`torch.save`'s formats, TorchScript)."""

READ_ONLY_SUFFIXES = {
    ".zip": "archive",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".keras": "keras",
    ".h5": "keras",
    ".hdf5": "keras",
    ".onnx": "onnx",
}
"""The suffixes read but never written, and the format each names."""
_CONFIG_FORMATS = {"jaxlstm.LSTMConfig": LSTMConfig, "jaxlstm.LSTMCellConfig": LSTMCellConfig}
_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
_LSTM_PARAM = re.compile(r"^(weight|bias)_(ih|hh|hr)_l\d+(_reverse)?$")
_CELL_PARAM = re.compile(r"^(weight|bias)_(ih|hh)$")
_PARAM_LIKE = re.compile(r"^(weight|bias)")
_CELL_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
_RAW_WEIGHT = re.compile(
    r"^(?P<owner>(?:.*\.)?)(?P<name>weight_hh_l\d+(?:_reverse)?|weight_hh)_raw$"
)
_QUANTIZED_CELL = re.compile(
    r"^(?P<owner>(?:.*\.)?)_packed_weight_(?P<kind>ih|hh)\.(?P<name>weight|bias)$"
)
_QUANTIZED = re.compile(
    r"^(?P<owner>(?:.*\.)?)_all_weight_values\.(?P<index>\d+)\.param\."
    r"(?P<name>weight_ih|weight_hh|bias_ih|bias_hh)$"
)
_SAFETENSORS_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}


class StateDictError(ValueError):
    """A source's weights cannot give what was asked: no LSTM, a wrong prefix, bad shapes."""


class LoadResult(NamedTuple):
    """What a load did not use, like torch's `load_state_dict` result."""

    missing_keys: list[str]
    unexpected_keys: list[str]


@dataclasses.dataclass(frozen=True)
class ModuleInfo:
    """What a source records about one module beyond its weights (None: not recorded).

    Attributes:
        type_name: the module's class name, e.g. `"LSTM"`.
        training: its `training` flag (torch and TorchScript modules).
        batch_first: the `nn.LSTM` argument, which the weights cannot tell.
        dropout: the `nn.LSTM` argument, which the weights cannot tell.
        problem: why the module, though it holds an LSTM's weights, is not ported (e.g. a
            subclass of `nn.LSTM` that overrides `forward`); empty if none.
    """

    type_name: str
    training: bool | None = None
    batch_first: bool | None = None
    dropout: float | None = None
    problem: str = ""


@dataclasses.dataclass
class Checkpoint:
    """A source, read.

    Attributes:
        tensors: `{flattened key: tensor or array}` of every tensor in the source.
        modules: `{prefix: ModuleInfo}` of the modules the source describes (torch and
            TorchScript modules, an orbax checkpoint's recorded configuration).
        origin: what the source is, for messages, e.g. `"torch checkpoint 'model.pt'"`.
        containers: the nested dicts searched, by key path (`""` the top level).
        notes: `{prefix: [note]}`: what a port of the LSTM under `prefix` should say about
            how its weights were read (raw weight-dropped weights, dequantized weights).
    """

    tensors: dict[str, Any]
    modules: dict[str, ModuleInfo] = dataclasses.field(default_factory=dict)
    origin: str = "the state_dict"
    containers: list[str] = dataclasses.field(default_factory=lambda: [""])
    notes: dict[str, list[str]] = dataclasses.field(default_factory=dict)


class LSTMWeights(NamedTuple):
    """One LSTM or LSTM cell of a source.

    Attributes:
        prefix: its key prefix in the flattened source.
        config: `LSTMConfig` or `LSTMCellConfig`, with `batch_first`/`dropout` as the source
            records them (else torch's defaults).
        params: `{torch name: np.ndarray}` in torch's order, the prefix stripped.
        training: the module's `training` flag if the source records one, else None.
        notes: what a port should tell the user about how the weights were read, e.g.
            that they were dequantized; empty for a plain LSTM.
    """

    prefix: str
    config: LSTMConfig | LSTMCellConfig
    params: dict[str, np.ndarray]
    training: bool | None
    notes: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- arrays


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor, jax array or array-like as a numpy array, without importing torch.

    bfloat16 stays bfloat16 (via `ml_dtypes`); torch tensors are detached and moved to the
    CPU; the result never shares memory with a torch tensor.
    """
    if type(value).__module__.startswith("torch"):
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":  # numpy has no bfloat16: exact via float32
            return tensor.float().numpy().astype(ml_dtypes.bfloat16)
        return tensor.numpy().copy()
    if hasattr(value, "get_value"):  # an nnx Variable
        value = value.get_value()
    return np.asarray(value)


def _dtype_name(value: Any) -> str:
    return str(value.dtype).removeprefix("torch.")


def _is_tensor(value: Any) -> bool:
    return (
        hasattr(value, "shape")
        and hasattr(value, "dtype")
        and not isinstance(value, (Mapping, type))
    )


# ----------------------------------------------------------------------------- formats


def detect_format(path: str | os.PathLike) -> str:
    """`"torch"`, `"safetensors"`, `"archive"`, `"pickle"` or `"orbax"` for a path, from its suffix.

    Torch: `.pt .pth .bin .ckpt .jit`; `.safetensors`; archive (read only): a `.zip` whose
    members are torch files; pickle (read only): `.pkl .pickle`; keras (read only, see
    `jaxlstm.keras_io`): `.keras .h5 .hdf5`; onnx (read only, see `jaxlstm.onnx_io`):
    `.onnx`; orbax: an existing
    directory or a path without a suffix (a directory to create). Reading looks at the
    content as well (a `.ckpt` holding safetensors is read as safetensors).

    Raises:
        StateDictError: any other suffix.
    """
    path = os.fspath(path)
    lower = path.lower()
    if lower.endswith(TORCH_SUFFIXES):
        return "torch"
    if lower.endswith(".safetensors"):
        return "safetensors"
    for read_only, fmt in READ_ONLY_SUFFIXES.items():
        if lower.endswith(read_only):
            return fmt
    suffix = os.path.splitext(path.rstrip("/" + os.sep))[1]
    if os.path.isdir(path) or not suffix:
        return "orbax"
    raise StateDictError(
        f"cannot tell the format of {path!r} from its suffix {suffix!r}: expected "
        f"{'/'.join(TORCH_SUFFIXES)} (torch), .safetensors, .zip (an archive of torch files), "
        ".pkl (a pickle of numpy arrays), .keras/.h5 (Keras), .onnx, or a directory (orbax "
        "checkpoint)"
    )


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a `.safetensors` file into `{name: np.ndarray}` without torch.

    Raises:
        StateDictError: the file is not a well-formed safetensors file (or is truncated).
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        (header_len,) = struct.unpack("<Q", data[:8])
        if header_len > len(data) - 8:
            raise ValueError(f"header of {header_len} bytes but the file has {len(data)}")
        header = json.loads(data[8 : 8 + header_len])
        body = memoryview(data)[8 + header_len :]
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dtype = _SAFETENSORS_DTYPES[info["dtype"]]
            start, end = info["data_offsets"]
            if end > len(body) or end - start != dtype.itemsize * int(np.prod(info["shape"])):
                raise ValueError(f"tensor {name!r} lies outside the file or has the wrong size")
            out[name] = np.frombuffer(body[start:end], dtype=dtype).reshape(info["shape"]).copy()
        return out
    except (
        struct.error,
        json.JSONDecodeError,
        UnicodeDecodeError,
        KeyError,
        TypeError,
        ValueError,
    ) as e:
        raise StateDictError(f"{os.fspath(path)!r} is not a valid .safetensors file: {e}") from None


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, Any]) -> None:
    """Writes `{name: array}` as a `.safetensors` file that the `safetensors` package reads."""
    codes = {dtype: code for code, dtype in _SAFETENSORS_DTYPES.items()}
    header: dict[str, Any] = {}
    chunks, offset = [], 0
    for name, value in tensors.items():
        array = np.ascontiguousarray(to_numpy(value))
        raw = array.tobytes()
        header[name] = {
            "dtype": codes[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format aligns the body to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob + b"".join(chunks))


def _flatten_pytree(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as `{"a.b.c": leaf}`; an nnx-style `{"value": leaf}` node is its leaf."""
    if isinstance(tree, Mapping):
        if set(tree) == {"value"} and _is_tensor(tree["value"]):
            return {prefix[:-1]: tree["value"]}
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out |= _flatten_pytree(v, f"{prefix}{k}.")
        return out
    return {prefix[:-1]: tree} if _is_tensor(tree) else {}


def read_orbax(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    """Reads an orbax checkpoint directory: `python -m jaxlstm.convert`'s, or any pytree.

    Args:
        path: the directory; a directory holding exactly one pytree item (e.g. a
            `CheckpointManager` step) is read through.

    Returns:
        `({flattened key: np.ndarray}, recorded configuration or None)`.

    Raises:
        FileNotFoundError: `path` does not exist.
        StateDictError: not a readable orbax checkpoint (the message says why).
    """
    import orbax.checkpoint as ocp

    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"orbax checkpoint directory {path!r} does not exist")
        raise StateDictError(f"{path!r} is not an orbax checkpoint directory")
    if not os.path.isdir(os.path.join(path, "params")) and not os.path.isfile(
        os.path.join(path, "_METADATA")
    ):
        path = _single_pytree_item(path)
    try:
        if os.path.isdir(os.path.join(path, "params")):
            items: dict[str, Any] = {"params": ocp.args.StandardRestore()}
            if os.path.isdir(os.path.join(path, "config")):
                items["config"] = ocp.args.JsonRestore()
            with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
                restored = ckptr.restore(path, ocp.args.Composite(**items))
            tree, config = restored["params"], restored["config"] if "config" in items else None
        else:
            with ocp.StandardCheckpointer() as ckptr:
                tree, config = ckptr.restore(path), None
    except Exception as e:  # orbax raises many types for a bad directory: name the path instead
        first = str(e).splitlines()[0] if str(e) else ""
        raise StateDictError(
            f"{path!r} is not a readable orbax checkpoint ({type(e).__name__}: {first})"
        ) from None
    return {k: to_numpy(v) for k, v in _flatten_pytree(tree).items()}, config


def _single_pytree_item(path: str) -> str:
    """The one pytree item (e.g. a CheckpointManager step's `default/`) inside `path`."""
    entries = sorted(os.listdir(path))
    items = [e for e in entries if os.path.isfile(os.path.join(path, e, "_METADATA"))]
    if len(items) == 1:
        return os.path.join(path, items[0])
    steps = [e for e in entries if e.isdigit() and os.path.isdir(os.path.join(path, e))]
    if steps:
        example = os.path.join(path, steps[-1])
        hint = f"it looks like a CheckpointManager directory: pass one step, e.g. {example!r}"
    elif items:
        example = os.path.join(path, items[0])
        hint = f"it holds several pytree items {items}: pass one of them, e.g. {example!r}"
    else:
        hint = f"no orbax pytree found (entries: {entries[:6]})"
    raise StateDictError(f"{path!r} is not a readable orbax checkpoint: {hint}")


def write_orbax(
    path: str | os.PathLike,
    params: Mapping[str, Any],
    config: LSTMConfig | LSTMCellConfig,
    *,
    force: bool = False,
) -> None:
    """Writes an orbax checkpoint directory with the items `params` and `config`.

    `params` holds `{torch name: array}`; `config` the configuration as JSON (with
    `"format": "jaxlstm.LSTMConfig"` or `"jaxlstm.LSTMCellConfig"`), so that `batch_first`
    and `dropout`, which weights cannot tell, survive. `read_checkpoint` and every loader
    read it back.
    """
    import orbax.checkpoint as ocp

    record = {"format": f"jaxlstm.{type(config).__name__}", **dataclasses.asdict(config)}
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(
            os.path.abspath(os.fspath(path)),
            ocp.args.Composite(
                params=ocp.args.StandardSave({k: to_numpy(v) for k, v in params.items()}),
                config=ocp.args.JsonSave(record),
            ),
            force=force,
        )


def write_state_dict(
    path: str | os.PathLike,
    params: Mapping[str, Any],
    config: LSTMConfig | LSTMCellConfig | None = None,
    *,
    force: bool = False,
) -> str:
    """Writes `{name: array}` as a torch file, a `.safetensors` file or an orbax directory.

    Values and dtypes are written bit for bit; torch files are written without torch and
    `torch.load(path, weights_only=True)` reads them.

    Args:
        path: the destination; its format follows from the suffix (`detect_format`).
        params: `{name: array}`.
        config: recorded in an orbax checkpoint (required there); files hold weights only.
        force: overwrite an existing destination.

    Returns:
        The format written: `"torch"`, `"safetensors"` or `"orbax"`.

    Raises:
        FileExistsError: `path` exists and `force` is False.
        StateDictError: an unknown suffix, or an orbax destination without `config`.
    """
    fmt = detect_format(path)
    if fmt in READ_ONLY_SUFFIXES.values():
        raise StateDictError(
            f"cannot write {os.fspath(path)!r}: the {fmt} format is read only; write a torch "
            f"file ({'/'.join(TORCH_SUFFIXES)}), .safetensors or an orbax directory"
        )
    if os.path.exists(path) and not force:
        raise FileExistsError(
            f"destination {os.fspath(path)!r} already exists "
            "(pass --force / force=True to overwrite it)"
        )
    arrays = {k: to_numpy(v) for k, v in params.items()}
    if fmt == "torch":
        write_torch_file(path, arrays)
    elif fmt == "safetensors":
        write_safetensors(path, arrays)
    elif config is None:
        raise StateDictError(
            "an orbax checkpoint records the configuration: pass config to write "
            f"{os.fspath(path)!r}"
        )
    else:
        write_orbax(path, arrays, config, force=force)
    return fmt


# ----------------------------------------------------------------------------- reading sources


_MAX_DEPTH = 200


def _flatten(
    obj: Any, path: str, out: dict[str, Any], containers: list[str], origin: str, above: set[int]
) -> None:
    """Collects the tensors of a nested checkpoint under `.`-joined keys.

    `above` holds the containers on the way down (a container inside itself is skipped; one
    reached twice by different keys is read twice, under both keys).
    """
    if _is_tensor(obj):
        out[path] = obj
        return
    if id(obj) in above:
        return
    if len(above) > _MAX_DEPTH:
        raise StateDictError(
            f"{origin} nests containers deeper than {_MAX_DEPTH} levels (at {path[:200]!r})"
        )
    try:
        quantized = quantized_cell_params(obj) or quantized_linear_params(obj)
    except TorchFormatError as e:
        raise StateDictError(f"{origin}: {e}") from None
    if quantized is not None:
        out |= {(f"{path}." if path else "") + k: v for k, v in quantized.items()}
        return
    module_class = pickled_module_class(obj)
    if module_class:
        at = f" under the key {path!r}" if path else ""
        inside = _quantized_module_inside(obj)
        if inside:
            module_class += f", holding the dynamically quantized {inside}"
        raise StateDictError(
            f"{origin} holds a pickled torch.nn.Module ({module_class}){at}, not a state_dict: "
            "reading it would run code from the file. In the process that has the model, save "
            "torch.save(model.state_dict(), path) or torch.jit.save(torch.jit.script(model), path)"
        )
    above.add(id(obj))
    join = (lambda k: f"{path}.{k}") if path else str
    if isinstance(obj, Placeholder):
        for part in (obj.state, obj.items, obj.list_items):
            if isinstance(part, Mapping) or (isinstance(part, list) and part):
                _flatten(part, path, out, containers, origin, above)
    elif isinstance(obj, Mapping):
        containers.append(path)
        for key, value in obj.items():
            _flatten(value, join(key), out, containers, origin, above)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _flatten(value, join(i), out, containers, origin, above)
    above.discard(id(obj))


def _quantized_module_inside(obj: Any, depth: int = 0) -> str:
    """The class of a quantized module among a pickled module's submodules, else `""`."""
    name = pickled_module_class(obj) or ""
    if ".quantized." in name:
        return name
    state = obj.state if isinstance(obj, Placeholder) else None
    children = state.get("_modules") if isinstance(state, Mapping) else None
    if depth > 20 or not isinstance(children, Mapping):
        return ""
    for child in children.values():
        if found := _quantized_module_inside(child, depth + 1):
            return found
    return ""


def _from_tree(obj: Any, origin: str) -> Checkpoint:
    if _is_tensor(obj):
        raise StateDictError(
            f"{origin} holds a single tensor of shape {tuple(obj.shape)}, expected a state_dict "
            "(a dict of tensors)"
        )
    tensors: dict[str, Any] = {}
    containers: list[str] = []
    _flatten(obj, "", tensors, containers, origin, set())
    if not containers and not tensors:
        raise StateDictError(
            f"{origin} holds a {type(obj).__name__}, expected a state_dict (a dict of tensors)"
        )
    return Checkpoint(tensors, {}, origin, containers)


def _lstm_arguments(module: Any) -> dict[str, Any]:
    """`batch_first`, `dropout` of a torch module, from its attributes or traced code."""
    found = {}
    for name, kind in (("batch_first", bool), ("dropout", (int, float))):
        try:
            value = getattr(module, name)
        except Exception:  # a TorchScript module raises for attributes tracing dropped
            continue
        if isinstance(value, kind) and not (name == "dropout" and isinstance(value, bool)):
            found[name] = value if name == "batch_first" else float(value)
    if not found and hasattr(module, "_c"):  # a traced module: only its code keeps the flags
        try:
            found = traced_lstm_arguments(str(module.code))
        except Exception:  # a module without forward has no code
            found = {}
    return found


def _class_problem(module: Any) -> str:
    """Why a torch module holding an LSTM's parameter names is not an `nn.LSTM`/`LSTMCell`.

    Empty for torch's own classes and for subclasses that only add methods; TorchScript
    modules are judged by their class name in `_read_torch_path`'s way.
    """
    cls = type(module)
    if hasattr(module, "_c"):
        name = str(getattr(module, "original_name", cls.__name__))
        return "" if name in ("LSTM", "LSTMCell") else _script_class_problem(name)
    base = next(
        (
            c
            for c in cls.__mro__
            if c.__module__ == "torch.nn.modules.rnn" and c.__name__ in ("LSTM", "LSTMCell")
        ),
        None,
    )
    if base is None:
        return (
            f"its class {cls.__module__}.{cls.__qualname__} is not torch.nn.LSTM or "
            "nn.LSTMCell, though its parameters carry their names: it may compute something "
            "else (another gate order, peepholes, normalisation)"
        )
    below = cls.__mro__[: cls.__mro__.index(base)]
    if any("forward" in c.__dict__ for c in below):
        return (
            f"its class {cls.__module__}.{cls.__qualname__} subclasses torch.nn.{base.__name__} "
            "and overrides forward, so it may compute something else"
        )
    standard = getattr(module, "_flat_weights_names", None) or list(_CELL_NAMES)
    added = [name for name, _ in module.named_parameters() if name not in standard]
    if below and added:
        return (
            f"its class {cls.__module__}.{cls.__qualname__} subclasses torch.nn.{base.__name__} "
            f"and adds parameters ({', '.join(added[:6])}), so it computes something else"
        )
    return ""


def _script_class_problem(name: str) -> str:
    return (
        f"its TorchScript class {name} is not torch.nn.LSTM or nn.LSTMCell, though its "
        "parameters carry their names: it may compute something else (a subclass with its own "
        "forward, another gate order, peepholes, normalisation)"
    )


def _script_objects(state: Mapping[str, Any]) -> dict[str, Any]:
    """The tensors inside a state_dict's script objects (a quantized LSTM's packed cells).

    They are serialised with torch's own `torch.save` (torch is loaded: the module is a torch
    module) and read back as a file would be.
    """
    objects = {k: v for k, v in state.items() if type(v).__name__ == "ScriptObject"}
    if not objects:
        return {}
    torch = sys.modules["torch"]
    buffer = io.BytesIO()
    torch.save(objects, buffer)
    torch_file = read_torch_bytes(buffer.getvalue(), "the module's quantized parameters")
    return _from_tree(torch_file.obj, "the module's quantized parameters").tensors


def _from_torch_module(module: Any) -> Checkpoint:
    state = module.state_dict()
    tensors = {k: v for k, v in state.items() if _is_tensor(v)}  # not _extra_state
    tensors |= _script_objects(state)
    modules = {}
    for name, sub in module.named_modules():
        type_name = getattr(sub, "original_name", None) or type(sub).__name__
        info = ModuleInfo(str(type_name), training=bool(sub.training))
        if str(type_name) == "LSTM" or hasattr(sub, "weight_ih_l0"):
            info = dataclasses.replace(info, **_lstm_arguments(sub))
        if hasattr(sub, "weight_ih_l0") or hasattr(sub, "weight_ih"):
            info = dataclasses.replace(info, problem=_class_problem(sub))
        modules[f"{name}." if name else ""] = info
    kind = "TorchScript module" if hasattr(module, "_c") else "torch module"
    return Checkpoint(tensors, modules, f"the {kind} {type(module).__name__}", [""])


def _from_jaxlstm_module(model: Any) -> Checkpoint:
    config = model.config
    info = ModuleInfo(type(model).__name__, training=not getattr(model, "deterministic", True))
    if isinstance(config, LSTMConfig):
        info = dataclasses.replace(info, batch_first=config.batch_first, dropout=config.dropout)
    return Checkpoint(dict(model.params), {"": info}, f"the jaxlstm.{type(model).__name__}", [""])


def _read_torch_path(path: str) -> Checkpoint:
    torch_file = read_torch_file(path)
    if torch_file.kind != "torchscript":
        kind = (
            "torch checkpoint"
            if torch_file.kind == "checkpoint"
            else "torch checkpoint (legacy format)"
        )
        return _from_tree(torch_file.obj, f"{kind} {path!r}")
    tensors: dict[str, Any] = {}
    modules: dict[str, ModuleInfo] = {}
    for record in script_modules(torch_file):
        tensors |= {record.prefix + k: v for k, v in record.tensors.items()}
        arguments: dict[str, Any] = {
            k: record.constants[k] for k in ("batch_first", "dropout") if k in record.constants
        }
        if not arguments and record.type_name == "LSTM":
            arguments = traced_lstm_arguments(record.code)
        if "dropout" in arguments:
            arguments["dropout"] = float(arguments["dropout"])
        problem = (
            ""
            if record.type_name in ("LSTM", "LSTMCell")
            else _script_class_problem(record.type_name)
        )
        modules[record.prefix] = ModuleInfo(
            record.type_name, record.training, problem=problem, **arguments
        )
    return Checkpoint(tensors, modules, f"TorchScript archive {path!r}", [""])


def _is_safetensors(head: bytes, size: int) -> bool:
    """Whether a file's first bytes are a safetensors header (an 8-byte length, then JSON)."""
    if len(head) < 10:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length <= size - 8 and head[8:9] == b"{"


def _read_archive(path: str) -> Checkpoint:
    """A `.zip` whose members are torch files (e.g. a reinforcement-learning policy's)."""
    tensors: dict[str, Any] = {}
    containers: list[str] = []
    origin = f"zip archive {path!r}"
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        for name in names:
            data = archive.read(name)
            if not (data.startswith(b"PK") or data.startswith(b"\x80")):
                continue  # JSON, text: not weights
            try:
                torch_file = read_torch_bytes(data, f"{name!r} in {path!r}")
            except TorchFormatError:
                continue
            stem = os.path.splitext(name)[0].replace("/", ".")
            member = _from_tree(torch_file.obj, f"{name!r} in {origin}")
            tensors |= {f"{stem}.{k}": v for k, v in member.tensors.items()}
            containers += [f"{stem}.{c}" if c else stem for c in member.containers]
    if not tensors:
        raise StateDictError(
            f"{origin} holds no torch files with tensors (members: {names[:6]}); expected a zip "
            "whose members are torch.save files"
        )
    return Checkpoint(tensors, {}, origin, containers)


def _read_file(path: str, fmt: str) -> Checkpoint:
    """A file, by its content: safetensors, a torch file, an archive of them, or a pickle."""
    with open(path, "rb") as f:
        head = f.read(16)
        size = os.fstat(f.fileno()).st_size
    if fmt == "safetensors" or _is_safetensors(head, size):
        return Checkpoint(read_safetensors(path), {}, f"safetensors file {path!r}", [""])
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                is_torch = any(
                    n.endswith("data.pkl") and n.count("/") == 1 for n in archive.namelist()
                )
            return _read_torch_path(path) if is_torch else _read_archive(path)
        if fmt == "pickle":
            return _from_tree(read_pickle_file(path), f"pickle {path!r}")
        try:
            return _read_torch_path(path)
        except TorchFormatError as torch_error:
            if not head.startswith(b"\x80"):
                raise
            try:
                plain = read_pickle_file(path)  # a plain pickle under a torch suffix
            except TorchFormatError:
                raise torch_error from None
            return _from_tree(plain, f"pickle {path!r}")
    except TorchFormatError as e:
        raise StateDictError(str(e)) from None


def _read_path(path: str) -> Checkpoint:
    fmt = detect_format(path)
    if fmt != "orbax" and not os.path.exists(path):
        raise FileNotFoundError(f"file {path!r} does not exist")
    if fmt != "orbax" and os.path.isdir(path):
        raise StateDictError(f"{path!r} is a directory, expected a {fmt} file")
    if fmt == "keras":
        from jaxlstm.keras_io import read_keras

        return read_keras(path)
    if fmt == "onnx":
        from jaxlstm.onnx_io import read_onnx

        return read_onnx(path)
    if fmt != "orbax":
        return _read_file(path, fmt)
    tensors, record = read_orbax(path)
    modules = {}
    if isinstance(record, Mapping) and record.get("format") in _CONFIG_FORMATS:
        kind = "LSTM" if record["format"] == "jaxlstm.LSTMConfig" else "LSTMCell"
        arguments = {
            k: record[k] for k in ("batch_first", "dropout") if k in record and kind == "LSTM"
        }
        modules[""] = ModuleInfo(kind, **arguments)
    return Checkpoint(tensors, modules, f"orbax checkpoint {path!r}", [""])


def _read_weight_dropped(checkpoint: Checkpoint) -> None:
    """Weight-dropped LSTMs (AWD-LSTM's `WeightDrop`): the raw weights become the LSTM's.

    The wrapper holds `weight_hh_l0_raw` and the LSTM under `module.` its other weights;
    its `module.weight_hh_l0` is the raw weight with dropout applied (absent from most
    files). At eval time dropout is off, so the raw weight is the weight the model uses.
    """
    tensors = checkpoint.tensors
    for key in list(tensors):
        match = _RAW_WEIGHT.match(key)
        inner = f"{match['owner']}module." if match else ""
        if not match or not any(k.startswith(inner + "weight_ih") for k in tensors):
            continue
        target = inner + match["name"]
        had = " (replacing the dropped-out copy the file also holds)" if target in tensors else ""
        tensors[target] = tensors[key]
        checkpoint.notes.setdefault(inner, []).append(
            f"weight-dropped LSTM: {match['name']} is the raw weight {key!r}{had}, the weight "
            "the model uses at eval time (weight dropout applies only in training)"
        )


def _quantized_layout(cells: dict[int, dict[str, Any]]) -> tuple[bool, str]:
    """`(bidirectional, problem)` of a quantized LSTM's cells, from their shapes."""
    n = len(cells)
    if sorted(cells) != list(range(n)):
        return False, f"its cells are numbered {sorted(cells)}, not 0 to {n - 1}"
    inputs = [cells[i]["weight_ih"].shape[1] for i in range(n)]
    hidden = cells[0]["weight_hh"].shape[1]
    uni = all(size == hidden for size in inputs[1:])
    bi = n % 2 == 0 and all(inputs[i] == (inputs[0] if i < 2 else 2 * hidden) for i in range(n))
    if not (uni or bi):
        return False, f"its cells' input sizes {inputs} fit no stacking of LSTM layers"
    return bi and not uni, ""


def _read_quantized(checkpoint: Checkpoint) -> None:
    """Dynamically quantized LSTMs: the dequantized cells under torch's `nn.LSTM` names."""
    tensors = checkpoint.tensors
    owners: dict[str, dict[int, dict[str, Any]]] = {}
    for key in tensors:
        if match := _QUANTIZED.match(key):
            cells = owners.setdefault(match["owner"], {})
            cells.setdefault(int(match["index"]), {})[match["name"]] = tensors[key]
    for owner, cells in owners.items():
        bidirectional, problem = _quantized_layout(cells)
        if problem:
            raise StateDictError(
                f"{checkpoint.origin}: the quantized LSTM under {owner!r}: {problem}"
            )
        directions = 2 if bidirectional else 1
        for index, cell in cells.items():
            layer, direction = divmod(index, directions)
            suffix = "_reverse" if direction else ""
            for name, value in cell.items():
                del tensors[f"{owner}_all_weight_values.{index}.param.{name}"]
                tensors[f"{owner}{name}_l{layer}{suffix}"] = value
        note = (
            "dynamically quantized LSTM: its weights were dequantized with their recorded "
            "scales and zero points; the port is a float model (it does not quantize "
            "activations as torch's quantized kernels do, so outputs differ by that rounding)"
        )
        if (
            len(cells) == 2
            and not bidirectional
            and cells[0]["weight_ih"].shape == cells[1]["weight_ih"].shape
        ):
            note += (
                "; its two cells fit both 2 layers and 1 bidirectional layer (input size = "
                "hidden size): read as 2 layers, as the file does not say"
            )
        checkpoint.notes.setdefault(owner, []).append(note)


def _read_quantized_cells(checkpoint: Checkpoint) -> None:
    """Dynamically quantized LSTM cells: `_packed_weight_ih.weight` -> `weight_ih`, ..."""
    tensors = checkpoint.tensors
    owners = set()
    for key in list(tensors):
        if match := _QUANTIZED_CELL.match(key):
            owner = match["owner"]
            tensors[f"{owner}{match['name']}_{match['kind']}"] = tensors.pop(key)
            owners.add(owner)
    for owner in sorted(owners):
        checkpoint.notes.setdefault(owner, []).append(
            "dynamically quantized LSTM cell: its weights were dequantized with their recorded "
            "scales and zero points; the port is a float model"
        )


def _normalised(checkpoint: Checkpoint) -> Checkpoint:
    """The checkpoint with weight-dropped and quantized LSTMs under torch's plain names."""
    _read_quantized(checkpoint)
    _read_quantized_cells(checkpoint)
    _read_weight_dropped(checkpoint)
    return checkpoint


def read_checkpoint(source: Any) -> Checkpoint:
    """Reads any source (see the module docstring) into a `Checkpoint`.

    Args:
        source: a mapping, a torch or jaxlstm module, a path, an `onnx.ModelProto`, or a
            `Checkpoint`.

    Returns:
        The `Checkpoint`; tensors are not copied until used.

    Raises:
        TypeError: `source` is none of these.
        FileNotFoundError: the path does not exist.
        StateDictError: the file is not a checkpoint (the message says what it is and what
            to do), or holds a pickled `nn.Module`.
    """
    from jaxlstm.nnx import LSTM, LSTMCell

    if isinstance(source, Checkpoint):
        return source
    if isinstance(source, (str, os.PathLike)):
        return _normalised(_read_path(os.fspath(source)))
    if isinstance(source, (LSTM, LSTMCell)):
        return _from_jaxlstm_module(source)
    if isinstance(source, Mapping):
        return _normalised(_from_tree(source, "the state_dict"))
    if type(source).__name__ == "ModelProto" and type(source).__module__.startswith("onnx"):
        from jaxlstm.onnx_io import read_onnx

        return read_onnx(source)
    if callable(getattr(source, "named_modules", None)) and callable(
        getattr(source, "state_dict", None)
    ):
        return _normalised(_from_torch_module(source))
    raise TypeError(
        "source must be a state_dict (a mapping of tensors, possibly nested in a checkpoint "
        "dict), a torch nn.Module, a jaxlstm module or a file path, got "
        f"{type(source).__name__}"
    )


def read_state_dict(source: Any, *, prefix: str = "") -> dict[str, np.ndarray]:
    """Every tensor of a source as `{key: np.ndarray}`, e.g. a model's head next to its LSTM.

    Args:
        source: see `read_checkpoint`.
        prefix: keep only keys starting with it, stripped (e.g. `"model_state.head."`).

    Returns:
        `{flattened key: np.ndarray}` in the source's order.

    Raises:
        StateDictError: `prefix` is given and no key starts with it (the message lists the
            keys' first components).
        TypeError, FileNotFoundError: see `read_checkpoint`.

    Examples:
        >>> read_state_dict({"model": {"head.weight": np.ones((2, 3))}}, prefix="model.head.")
        {'weight': array([[1., 1., 1.],
               [1., 1., 1.]])}
    """
    checkpoint = read_checkpoint(source)
    found = {k[len(prefix) :]: v for k, v in checkpoint.tensors.items() if k.startswith(prefix)}
    if prefix and not found:
        raise StateDictError(
            f"{checkpoint.origin} has no tensor under prefix={prefix!r}{_keys_hint(checkpoint)}"
        )
    return {k: to_numpy(v) for k, v in found.items()}


# ----------------------------------------------------------------------------- finding LSTMs


class _Candidate(NamedTuple):
    prefix: str
    config: LSTMConfig | LSTMCellConfig | None
    problem: str


def _own_entries(tensors: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The tensors directly under `prefix` (not those of its submodules)."""
    return {
        k[len(prefix) :]: v
        for k, v in tensors.items()
        if k.startswith(prefix) and "." not in k[len(prefix) :]
    }


def _infer(
    tensors: Mapping[str, Any], prefix: str, cell: bool, info: ModuleInfo | None
) -> LSTMConfig | LSTMCellConfig:
    """The configuration the weights under `prefix` give, with the flags a module recorded.

    Raises:
        ValueError: the weights are not exactly an LSTM's (or a cell's); the message says why.
    """
    if info is not None and info.problem:
        raise ValueError(info.problem)
    own = _own_entries(tensors, prefix)
    if cell:
        config: LSTMConfig | LSTMCellConfig = LSTMCellConfig.from_state_dict(tensors, prefix=prefix)
        pattern = _CELL_PARAM
    else:
        batch_first = info.batch_first if info and info.batch_first is not None else False
        dropout = info.dropout if info and info.dropout is not None else 0.0
        config = LSTMConfig.from_state_dict(
            tensors, prefix=prefix, batch_first=batch_first, dropout=dropout
        )
        pattern = _LSTM_PARAM
    expected = config.param_shapes()
    names = {k for k in own if pattern.match(k)}
    problems = [f"missing {k}" for k in expected if k not in own]
    problems += [f"unexpected {k}" for k in sorted(names - set(expected))]
    problems += [
        f"{k} has shape {tuple(own[k].shape)}, expected {shape}"
        for k, shape in expected.items()
        if k in own and tuple(own[k].shape) != shape
    ]
    problems += [
        f"{k} has dtype {_dtype_name(own[k])}"
        for k in expected
        if k in own and _dtype_name(own[k]) not in _FLOAT_DTYPES
    ]
    if problems:
        raise ValueError(", ".join(problems))
    _check_no_extras(tensors, prefix, set(expected), own)
    return config


def _check_no_extras(
    tensors: Mapping[str, Any], prefix: str, expected: set[str], own: Mapping[str, Any]
) -> None:
    """Refuses look-alikes: torch's names next to parameters an `nn.LSTM` does not have.

    Raises:
        ValueError: peephole or other extra weights (`weight_ci`, `weight_ip_l0`, ...), or
            submodules with parameters (`g_norm.weight`, ...), under `prefix`.
    """
    extras = sorted(k for k in own if k not in expected and _PARAM_LIKE.match(k))
    if extras:
        raise ValueError(
            f"it has parameters nn.LSTM and nn.LSTMCell do not have ({', '.join(extras[:6])}): "
            "a peephole or other variant LSTM, which computes something else"
        )
    nested = sorted(
        k[len(prefix) :]
        for k in tensors
        if k.startswith(prefix)
        and "." in k[len(prefix) :]
        and _PARAM_LIKE.match(k.rsplit(".", 1)[1])
    )
    if nested:
        raise ValueError(
            f"it has submodules with parameters ({', '.join(nested[:6])}), which nn.LSTM and "
            "nn.LSTMCell have not (e.g. a layer-normalised LSTM): it computes something else"
        )


def _candidates(checkpoint: Checkpoint) -> list[_Candidate]:
    """Every prefix whose keys look like an LSTM's or a cell's, valid or not, sorted."""
    tensors = checkpoint.tensors
    found: dict[tuple[str, bool], None] = {}
    for key in tensors:
        for name, cell in (("weight_ih_l0", False), ("weight_ih", True)):
            prefix = key[: -len(name)]
            if key.endswith(name) and (not prefix or prefix.endswith(".")):
                if not cell or prefix + "weight_hh" in tensors:
                    found[(prefix, cell)] = None
    out = []
    for prefix, cell in sorted(found):
        try:
            config = _infer(tensors, prefix, cell, checkpoint.modules.get(prefix))
            out.append(_Candidate(prefix, config, ""))
        except (ValueError, TypeError) as e:
            out.append(_Candidate(prefix, None, str(e)))
    return out


def find_lstms(source: Any) -> dict[str, LSTMConfig | LSTMCellConfig]:
    """Every `nn.LSTM` and `nn.LSTMCell` in a source, by prefix, in sorted prefix order.

    Args:
        source: see `read_checkpoint`.

    Returns:
        `{prefix: LSTMConfig or LSTMCellConfig}`; each prefix is what `jaxlstm.from_torch`,
        `read_lstm` and `load_torch_state_dict` take as `prefix`. `batch_first` and
        `dropout` are the module's where the source records them (a torch or TorchScript
        module, a converted orbax checkpoint), else torch's defaults.

    Raises:
        TypeError, FileNotFoundError, StateDictError: see `read_checkpoint`.

    Examples:
        >>> sd = {"enc.weight_ih_l0": np.zeros((8, 3)), "enc.weight_hh_l0": np.zeros((8, 2))}
        >>> {p: c.hidden_size for p, c in find_lstms({"model": sd}).items()}
        {'model.enc.': 2}
    """
    checkpoint = read_checkpoint(source)
    return {c.prefix: c.config for c in _candidates(checkpoint) if c.config is not None}


def _describe_found(candidates: list[_Candidate]) -> str:
    return "; ".join(f"{c.prefix!r}: {c.config}" for c in candidates)


def _keys_hint(checkpoint: Checkpoint, most: int = 6) -> str:
    keys = list(checkpoint.tensors)
    shown = ", ".join(repr(k) for k in keys[:most]) + (", ..." if len(keys) > most else "")
    nested = [c for c in checkpoint.containers if c]
    searched = (
        f"; nested dicts searched: {', '.join(repr(c) for c in nested[:most])}" if nested else ""
    )
    if len(nested) > most:
        searched += f", ... ({len(nested)} in all)"
    return f" (it holds {len(keys)} tensors{': ' + shown if keys else ''}{searched})"


def _no_lstm_message(
    checkpoint: Checkpoint, candidates: list[_Candidate], prefix: str | None
) -> str:
    where = "" if prefix is None else f" under prefix={prefix!r}"
    message = f"{checkpoint.origin} holds no nn.LSTM or nn.LSTMCell weights{where}"
    broken = [c for c in candidates if c.config is None and (prefix is None or c.prefix == prefix)]
    if broken:
        message += "; keys that look like one but are not: " + "; ".join(
            f"{c.prefix!r}: {c.problem}" for c in broken
        )
    return message + _prefix_hint(checkpoint, prefix)


def read_lstm(source: Any, *, prefix: str | None = None) -> LSTMWeights:
    """The weights and configuration of one LSTM or LSTM cell of a source.

    Args:
        source: see `read_checkpoint`.
        prefix: the LSTM's key prefix, as `find_lstms` gives it; None takes the one LSTM
            of the source.

    Returns:
        `LSTMWeights(prefix, config, params, training)`.

    Raises:
        StateDictError: no LSTM (under `prefix`), or several and `prefix` is None (the
            message lists every prefix with its configuration); what was found is named.
        TypeError, FileNotFoundError: see `read_checkpoint`.
    """
    checkpoint = read_checkpoint(source)
    candidates = _candidates(checkpoint)
    valid = [c for c in candidates if c.config is not None]
    if prefix is None:
        if len(valid) > 1:
            raise StateDictError(
                f"{checkpoint.origin} holds {len(valid)} LSTMs and LSTM cells; "
                "pass prefix= one of: "
                f"{_describe_found(valid)}"
            )
        chosen = valid
    else:
        chosen = [c for c in valid if c.prefix == prefix]
    if not chosen:
        raise StateDictError(_no_lstm_message(checkpoint, candidates, prefix))
    (found,) = chosen[:1]
    config = found.config
    assert config is not None  # `valid` holds only candidates with a configuration
    params = {k: to_numpy(checkpoint.tensors[found.prefix + k]) for k in config.param_shapes()}
    info = checkpoint.modules.get(found.prefix)
    notes = tuple(checkpoint.notes.get(found.prefix, ()))
    return LSTMWeights(found.prefix, config, params, info.training if info else None, notes)


# ----------------------------------------------------------------------------- matching


def read_model(model: Any) -> LSTMWeights:
    """The weights and configuration of what the exporters take (`to_flax`, `to_haiku`).

    Args:
        model: a `jaxlstm.LSTM` or `jaxlstm.LSTMCell`, or `{torch name: array}` of one LSTM
            or LSTM cell.

    Raises:
        TypeError: `model` is none of these.
        StateDictError: the dict does not hold exactly one LSTM or LSTM cell.
    """
    from jaxlstm.nnx import LSTM, LSTMCell

    if not isinstance(model, (LSTM, LSTMCell, Mapping)):
        raise TypeError(
            "model must be a jaxlstm.LSTM, jaxlstm.LSTMCell or a dict of torch-named "
            f"parameters, got {type(model).__name__}"
        )
    return read_lstm(model)


def _prefix_hint(
    checkpoint: Checkpoint, prefix: str | None, expected: Mapping[str, Any] | None = None
) -> str:
    """Where the weights are, when not under `prefix`, for an error message.

    Names every prefix holding all the `expected` keys, else every LSTM of the source with
    its configuration, else what the source holds; candidates sorted, so the message is
    the same in every run.
    """
    tensors = checkpoint.tensors
    if expected:
        first = next(iter(expected))
        heads = {key[: -len(first)] for key in tensors if key.endswith(first)}
        found = sorted(
            h
            for h in heads
            if (not h or h.endswith("."))
            and h != prefix
            and all(h + k in tensors for k in expected)
        )
        if len(found) == 1:
            other = found[0]
            return f" (the keys carry the prefix {other!r}, not {prefix!r}: pass prefix={other!r})"
        if found:
            listed = ", ".join(repr(c) for c in found)
            return (
                f" (the keys are under several prefixes, not prefix={prefix!r}: "
                f"pass prefix= one of {listed})"
            )
    valid = [c for c in _candidates(checkpoint) if c.config is not None and c.prefix != prefix]
    if valid:
        return f"; the source holds LSTMs under other prefixes: {_describe_found(valid)}"
    if prefix and not any(k.startswith(prefix) for k in tensors):
        return f" (no key starts with prefix={prefix!r}; {_keys_hint(checkpoint)[2:]}"
    return _keys_hint(checkpoint)


def match_state_dict(
    source: Any,
    expected: Mapping[str, tuple[int, ...]],
    *,
    prefix: str = "",
    strict: bool = True,
) -> tuple[dict[str, np.ndarray], LoadResult]:
    """Selects and checks the tensors of a source that a model expects.

    Args:
        source: see `read_checkpoint`.
        expected: `{name: shape}` of the model's parameters.
        prefix: keys are looked up as `prefix + name`; other keys are ignored.
        strict: if True, missing keys and unexpected keys under `prefix` are errors.

    Returns:
        `(values, result)`: `{name: np.ndarray}` of the keys found, and what was missing or
        unexpected.

    Raises:
        StateDictError: one message listing every missing and unexpected key (when strict),
            every shape mismatch and non-floating dtype (always), and where the keys are
            if not under `prefix`; or the module under `prefix` is a refused look-alike
            (e.g. a Keras layer with `hard_sigmoid`, an `nn.LSTM` subclass overriding
            `forward`). Notes on how weights were read (dequantized, raw weight-dropped)
            are issued as `UserWarning`s.
        TypeError, FileNotFoundError: see `read_checkpoint`.
    """
    checkpoint = read_checkpoint(source)
    info = checkpoint.modules.get(prefix)
    if info is not None and info.problem:
        raise StateDictError(
            f"error loading {checkpoint.origin}: the module under prefix={prefix!r} is not "
            f"ported: {info.problem}"
        )
    for note in checkpoint.notes.get(prefix, ()):
        warnings.warn(f"loading {prefix or 'the LSTM'!r}: {note}", UserWarning, stacklevel=3)
    found = {k[len(prefix) :]: v for k, v in checkpoint.tensors.items() if k.startswith(prefix)}
    missing = [k for k in expected if k not in found]
    unexpected = [prefix + k for k in found if k not in expected]
    bad = [
        f"{prefix + k}: expected {tuple(shape)}, got {tuple(found[k].shape)}"
        for k, shape in expected.items()
        if k in found and tuple(found[k].shape) != tuple(shape)
    ]
    bad += [
        f"{prefix + k}: dtype {_dtype_name(found[k])} is not floating point"
        for k in expected
        if k in found and _dtype_name(found[k]) not in _FLOAT_DTYPES
    ]
    problems = []
    if strict and missing:
        problems.append("missing keys " + str([prefix + k for k in missing]))
    if strict and unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if bad:
        problems.append("shape or dtype mismatches: " + "; ".join(bad))
    if problems:
        hint = _prefix_hint(checkpoint, prefix, expected) if missing else ""
        raise StateDictError(f"error loading {checkpoint.origin}: " + ", ".join(problems) + hint)
    values = {k: to_numpy(found[k]) for k in expected if k in found}
    return values, LoadResult([prefix + k for k in missing], unexpected)
