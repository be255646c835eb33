"""Moving weights between PyTorch and jaxlstm.

torch is imported only inside the functions that need it (`from_torch`, reading `.pt` files,
converting torch tensors). `.safetensors` files are read and written here without torch.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from typing import Any, NamedTuple

import ml_dtypes
import numpy as np

__all__ = [
    "LoadResult",
    "as_state_dict",
    "from_torch",
    "load_torch_state_dict",
    "match_state_dict",
    "read_safetensors",
    "read_state_dict",
    "to_numpy",
    "torch_lstm_arguments",
    "torch_state_dict",
    "write_safetensors",
]

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


class LoadResult(NamedTuple):
    """What `load_torch_state_dict` did not use, like torch's `load_state_dict` result."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor, jax array or array-like as a numpy array (bf16 stays bf16)."""
    if type(value).__module__.startswith("torch"):
        import torch

        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            return tensor.float().numpy().astype(ml_dtypes.bfloat16)
        return tensor.numpy().copy()
    return np.asarray(value)


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a `.safetensors` file into `{name: np.ndarray}` without torch.

    Raises:
        ValueError: the file is not a well-formed safetensors file (or is truncated).
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
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{os.fspath(path)!r} is not a valid .safetensors file: {e}") from e


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, Any]) -> None:
    """Writes `{name: array}` as a `.safetensors` file that torch's `safetensors` reads."""
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


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a state_dict from a `.safetensors` file, or a torch `.pt`/`.pth` file.

    Torch files are read with `torch.load(weights_only=True)`, so no code in them runs.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is not a checkpoint holding a dict of tensors.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"state_dict file {path!r} is a directory, expected a .pt/.pth or .safetensors file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"state_dict file {path!r} does not exist")
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file: name the file instead
        raise ValueError(
            f"{path!r} is not a torch checkpoint readable with weights_only=True "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path!r} holds a {type(obj).__name__}, expected a state_dict (a dict of tensors)")
    return {k: to_numpy(v) for k, v in obj.items() if hasattr(v, "shape")}


def match_state_dict(
    state_dict: Mapping[str, Any],
    expected: Mapping[str, tuple[int, ...]],
    *,
    prefix: str = "",
    strict: bool = True,
) -> tuple[dict[str, np.ndarray], LoadResult]:
    """Selects and checks the entries of a state_dict that a model expects.

    Args:
        state_dict: `{name: tensor or array}`.
        expected: `{name: shape}` of the model's parameters.
        prefix: keys are looked up as `prefix + name`; other keys are ignored.
        strict: if True, missing keys and unexpected keys under `prefix` are errors.

    Returns:
        `(values, result)`: `{name: np.ndarray}` of the keys found, and what was missing or
        unexpected.

    Raises:
        ValueError: one message listing every missing and unexpected key (when strict) and
            every shape mismatch (always).
    """
    found = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    missing = [k for k in expected if k not in found]
    unexpected = [prefix + k for k in found if k not in expected]
    mismatched = [
        f"{prefix + k}: expected {tuple(shape)}, got {tuple(found[k].shape)}"
        for k, shape in expected.items()
        if k in found and tuple(found[k].shape) != tuple(shape)
    ]
    problems = []
    if strict and missing:
        problems.append("missing keys " + str([prefix + k for k in missing]))
    if strict and unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if mismatched:
        problems.append("shape mismatches: " + "; ".join(mismatched))
    if problems:
        hint = ""
        # When no expected key is found under `prefix`, but they are all there under another
        # prefix, name the prefix to pass.
        candidates = set()
        if expected and len(missing) == len(expected):
            first = next(iter(expected))
            candidates = {k[: -len(first)] for k in state_dict if isinstance(k, str) and k.endswith(first)}
            candidates = {c for c in candidates if all(c + k in state_dict for k in expected)}
        if candidates:
            other = sorted(candidates, key=len)[0]
            hint = f" (the keys carry the prefix {other!r}, not prefix={prefix!r}: pass prefix={other!r})"
        elif not found:
            hint = f" (no key starts with prefix={prefix!r}; keys are e.g. {sorted(state_dict)[:4]})"
        raise ValueError("error loading the state_dict: " + ", ".join(problems) + hint)
    values = {k: to_numpy(found[k]) for k in expected if k in found}
    return values, LoadResult([prefix + k for k in missing], unexpected)


def as_state_dict(state_dict_or_path: Mapping[str, Any] | str | os.PathLike) -> Mapping[str, Any]:
    """A state_dict given as itself or as a `.pt`/`.pth`/`.safetensors` path (read here).

    Raises:
        TypeError: neither a mapping nor a path.
        ValueError, FileNotFoundError: see `read_state_dict`.
    """
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        return read_state_dict(state_dict_or_path)
    if isinstance(state_dict_or_path, Mapping):
        return state_dict_or_path
    raise TypeError(
        f"state_dict_or_path must be a mapping of tensors or a file path, got {type(state_dict_or_path).__name__}"
    )


def load_torch_state_dict(
    model: Any,
    state_dict_or_path: Mapping[str, Any] | str | os.PathLike,
    *,
    prefix: str = "",
    strict: bool = True,
) -> LoadResult:
    """Loads a torch state_dict into a `jaxlstm.LSTM` or `jaxlstm.LSTMCell`, in place.

    Either every value is loaded or, on an error, none is.

    Args:
        model: the module to load into.
        state_dict_or_path: a dict of torch tensors or numpy arrays, a `.pt`/`.pth` file
            (read with `weights_only=True`) or a `.safetensors` file (read without torch).
        prefix: the submodule's key prefix in a whole model's state_dict, e.g. `"lstm."`.
        strict: if True (torch's default), missing or unexpected keys are errors.

    Returns:
        `LoadResult(missing_keys, unexpected_keys)`.

    Raises:
        TypeError: `model` is not a jaxlstm module, or the state_dict is not a mapping/path.
        ValueError: keys or shapes do not match (all problems in one message); a bad file.
        FileNotFoundError: the path does not exist.

    Example:
        >>> load_torch_state_dict(lstm, "classifier.pt", prefix="lstm.")  # doctest: +SKIP
    """
    from jaxlstm.nnx import LSTM, LSTMCell

    if not isinstance(model, (LSTM, LSTMCell)):
        raise TypeError(f"model must be a jaxlstm.LSTM or jaxlstm.LSTMCell, got {type(model).__name__}")
    state_dict = as_state_dict(state_dict_or_path)
    values, result = match_state_dict(state_dict, model.param_shapes(), prefix=prefix, strict=strict)
    model.set_params(values)
    return result


def torch_state_dict(model: Any) -> dict[str, np.ndarray]:
    """The model's parameters as `{torch name: np.ndarray}`, in torch's order.

    `torch_module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})` accepts it.

    Raises:
        TypeError: `model` is not a jaxlstm module.
    """
    from jaxlstm.nnx import LSTM, LSTMCell

    if not isinstance(model, (LSTM, LSTMCell)):
        raise TypeError(f"model must be a jaxlstm.LSTM or jaxlstm.LSTMCell, got {type(model).__name__}")
    return {k: np.array(v) for k, v in model.params.items()}  # copies: writable, as torch.from_numpy wants


def torch_lstm_arguments(module: Any) -> dict[str, Any]:
    """The constructor arguments of a `torch.nn.LSTM`, by the names `jaxlstm.LSTM` takes them.

    Returns:
        `input_size`, `hidden_size`, `num_layers`, `bias`, `batch_first`, `dropout`,
        `bidirectional`, `proj_size` and `param_dtype` (the dtype of its weights).
    """
    return {
        "input_size": module.input_size,
        "hidden_size": module.hidden_size,
        "num_layers": module.num_layers,
        "bias": module.bias,
        "batch_first": module.batch_first,
        "dropout": float(module.dropout),
        "bidirectional": module.bidirectional,
        "proj_size": module.proj_size,
        "param_dtype": to_numpy(module.weight_ih_l0[:0]).dtype,
    }


def from_torch(module: Any, *, rngs: Any = None) -> Any:
    """A jaxlstm module equal to a `torch.nn.LSTM` or `torch.nn.LSTMCell`, weights included.

    Args:
        module: the torch module; its weights' dtype becomes `param_dtype`.
        rngs: `nnx.Rngs` for the dropout stream (default `nnx.Rngs(0)`).

    Returns:
        `jaxlstm.LSTM` or `jaxlstm.LSTMCell` with the same configuration and weights.

    Raises:
        TypeError: `module` is neither an `nn.LSTM` nor an `nn.LSTMCell`.

    Example:
        >>> lstm = from_torch(torch.nn.LSTM(3, 5, num_layers=2))  # doctest: +SKIP
    """
    import torch
    from flax import nnx

    from jaxlstm.nnx import LSTM, LSTMCell

    rngs = nnx.Rngs(0) if rngs is None else rngs
    if isinstance(module, torch.nn.LSTM):
        model = LSTM(**torch_lstm_arguments(module), rngs=rngs)
    elif isinstance(module, torch.nn.LSTMCell):
        param_dtype = to_numpy(module.weight_ih[:0]).dtype
        model = LSTMCell(module.input_size, module.hidden_size, bias=module.bias, param_dtype=param_dtype, rngs=rngs)
    else:
        raise TypeError(
            f"module must be a torch.nn.LSTM or torch.nn.LSTMCell, got {type(module).__name__}"
        )
    load_torch_state_dict(model, module.state_dict())
    return model
