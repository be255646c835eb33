"""`python -m jaxlstm.convert SRC DST`: LSTM weights between torch, safetensors and orbax.

Formats, chosen by the path:

- `.pt` / `.pth` / `.bin`: a torch `state_dict` (read with `torch.load(weights_only=True)`).
- `.safetensors`: a safetensors file (read and written without torch).
- a directory (existing, or any other path, e.g. `lstm_ckpt`): an orbax
  checkpoint directory with the items `params` (`{torch name: array}`) and `config` (the
  `LSTMConfig` as JSON, so `batch_first` and `dropout` survive). Any orbax pytree
  checkpoint can be read: nested keys are joined with `.` (so `--prefix params.` or
  `--prefix lstm.` selects a subtree).

The configuration is inferred from the weights (`LSTMConfig.from_state_dict`) and printed.
Only the LSTM's keys are written, without the prefix: the result loads into `nn.LSTM`,
`jaxlstm.LSTM` and `jaxlstm.linen.LSTM` as is. Values and dtypes are copied bit for bit.

Example:
    $ python -m jaxlstm.convert classifier.pt lstm_ckpt --prefix lstm. --batch-first
    $ python -m jaxlstm.convert lstm_ckpt lstm.safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxlstm.config import LSTMConfig
from jaxlstm.torch_io import match_state_dict, read_state_dict, to_numpy, write_safetensors

__all__ = ["convert", "detect_format", "main", "read_lstm_weights", "write_lstm_weights"]

_TORCH_SUFFIXES = (".pt", ".pth", ".bin")  # .bin: e.g. pytorch_model.bin
_CONFIG_FORMAT = "jaxlstm.LSTMConfig"
# Suffixes of single-file formats this command does not handle: an error, not a directory name.
_FILE_SUFFIXES = (".npz", ".npy", ".h5", ".hdf5", ".msgpack", ".pkl", ".pickle", ".json", ".onnx", ".gguf")


def detect_format(path: str | os.PathLike) -> str:
    """`"torch"`, `"safetensors"` or `"orbax"` for a path (see the module docstring).

    Raises:
        ValueError: the path has a file suffix of another format (e.g. `.npz`).
    """
    path = os.fspath(path)
    lower = path.lower()
    if lower.endswith(_TORCH_SUFFIXES):
        return "torch"
    if lower.endswith(".safetensors"):
        return "safetensors"
    suffix = os.path.splitext(path.rstrip("/"))[1].lower()
    if os.path.isdir(path) or suffix not in _FILE_SUFFIXES:
        return "orbax"
    raise ValueError(
        f"cannot tell the format of {path!r} from its suffix {suffix!r}: expected .pt/.pth/.bin (torch), "
        ".safetensors, or a directory (orbax checkpoint)"
    )


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as `{"a.b.c": leaf}`; an nnx-style `{"value": leaf}` node counts as its leaf."""
    if isinstance(tree, Mapping):
        if set(tree) == {"value"} and hasattr(tree["value"], "shape"):
            return {prefix[:-1]: tree["value"]}
        out = {}
        for k, v in tree.items():
            out |= _flatten(v, f"{prefix}{k}.")
        return out
    if hasattr(tree, "shape"):
        return {prefix[:-1]: tree}
    return {}


def _read_orbax(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    import orbax.checkpoint as ocp

    if not os.path.isdir(path):
        raise (FileNotFoundError if not os.path.exists(path) else ValueError)(
            f"{path!r} is not an orbax checkpoint directory"
            + ("" if os.path.exists(path) else " (it does not exist)")
        )
    path = os.path.abspath(path)
    if not os.path.isdir(os.path.join(path, "params")) and not os.path.isfile(os.path.join(path, "_METADATA")):
        path = _single_pytree_item(path)
    try:
        if os.path.isdir(os.path.join(path, "params")):
            items: dict[str, Any] = {"params": ocp.args.StandardRestore()}
            if os.path.isdir(os.path.join(path, "config")):
                items["config"] = ocp.args.JsonRestore()
            with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
                restored = ckptr.restore(path, ocp.args.Composite(**items))
            tree, config = restored["params"], restored.get("config") if "config" in items else None
        else:
            with ocp.StandardCheckpointer() as ckptr:
                tree, config = ckptr.restore(path), None
    except Exception as e:  # orbax raises many types for a bad directory: name the path instead
        first = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(f"{path!r} is not a readable orbax checkpoint ({type(e).__name__}: {first})") from e
    return {k: to_numpy(v) for k, v in _flatten(tree).items()}, config


def _single_pytree_item(path: str) -> str:
    """The one pytree item (e.g. a CheckpointManager step's `default/`) inside `path`."""
    entries = sorted(os.listdir(path))
    items = [e for e in entries if os.path.isfile(os.path.join(path, e, "_METADATA"))]
    if len(items) == 1:
        return os.path.join(path, items[0])
    steps = [e for e in entries if e.isdigit() and os.path.isdir(os.path.join(path, e))]
    if steps:
        hint = f"it looks like a CheckpointManager directory: pass one step, e.g. {os.path.join(path, steps[-1])!r}"
    elif items:
        hint = f"it holds several pytree items {items}: pass one of them, e.g. {os.path.join(path, items[0])!r}"
    else:
        hint = f"no orbax pytree found (entries: {entries[:6]})"
    raise ValueError(f"{path!r} is not a readable orbax checkpoint: {hint}")


def _prefix_hint(state_dict: Mapping[str, Any], prefix: str) -> str:
    found = [k[: -len("weight_ih_l0")] for k in state_dict if k.endswith("weight_ih_l0")]
    found = [p for p in found if p != prefix]
    return f"; LSTM weights were found under --prefix {found[0]!r}" if found else ""


def read_lstm_weights(
    path: str | os.PathLike, *, prefix: str = "", batch_first: bool | None = None
) -> tuple[dict[str, np.ndarray], LSTMConfig]:
    """Reads an `nn.LSTM`'s weights from a torch, safetensors or orbax file.

    Args:
        path: the file or checkpoint directory.
        prefix: the LSTM's key prefix in a larger state_dict (e.g. `"lstm."`), stripped.
        batch_first: recorded in the config; None keeps what an orbax checkpoint recorded
            (False elsewhere).

    Returns:
        `({torch name: np.ndarray}, config)`, names in torch's order, dtypes as stored.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: an unreadable file, no LSTM weights under `prefix`, other keys under
            `prefix`, or shapes that are not an LSTM's.
    """
    path = os.fspath(path)
    fmt = detect_format(path)
    recorded = None
    if fmt == "orbax":
        state_dict, recorded = _read_orbax(path)
    else:
        state_dict = read_state_dict(path)
    try:
        config = LSTMConfig.from_state_dict(state_dict, prefix=prefix)
    except ValueError as e:
        raise ValueError(f"{path!r}: {e}{_prefix_hint(state_dict, prefix)}") from None
    if recorded is not None:  # the flags the weights cannot tell
        config = dataclasses.replace(
            config,
            batch_first=bool(recorded.get("batch_first", False)),
            dropout=float(recorded.get("dropout", 0.0)),
        )
    if batch_first is not None:
        config = dataclasses.replace(config, batch_first=batch_first)
    try:
        values, _ = match_state_dict(state_dict, config.param_shapes(), prefix=prefix, strict=True)
    except ValueError as e:
        raise ValueError(f"{path!r} does not hold a consistent LSTM under prefix={prefix!r}: {e}") from None
    return values, config


def _to_torch(value: np.ndarray) -> Any:
    import ml_dtypes
    import torch

    if value.dtype == ml_dtypes.bfloat16:  # torch.from_numpy knows no bfloat16: move the bits
        return torch.from_numpy(np.ascontiguousarray(value).view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(value).copy())


def write_lstm_weights(
    path: str | os.PathLike, state_dict: Mapping[str, np.ndarray], config: LSTMConfig, *, force: bool = False
) -> str:
    """Writes an `nn.LSTM`'s weights as a torch file, a safetensors file or an orbax checkpoint.

    Args:
        path: destination (see `detect_format`).
        state_dict: `{torch name: np.ndarray}` matching `config.param_shapes()`.
        config: recorded in an orbax checkpoint (`config` item); torch and safetensors files
            hold only the weights.
        force: overwrite an existing destination.

    Returns:
        The format written.

    Raises:
        FileExistsError: `path` exists and `force` is False.
        ValueError: `path` has an unknown suffix.
    """
    path = os.fspath(path)
    fmt = detect_format(path)
    if os.path.exists(path) and not force:
        raise FileExistsError(f"destination {path!r} already exists (pass --force to overwrite it)")
    if fmt == "torch":
        import torch

        torch.save({k: _to_torch(v) for k, v in state_dict.items()}, path)
    elif fmt == "safetensors":
        write_safetensors(path, state_dict)
    else:
        import orbax.checkpoint as ocp

        record = {"format": _CONFIG_FORMAT, **dataclasses.asdict(config)}
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
            ckptr.save(
                os.path.abspath(path),
                ocp.args.Composite(
                    params=ocp.args.StandardSave(dict(state_dict)), config=ocp.args.JsonSave(record)
                ),
                force=force,
            )
    return fmt


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    prefix: str = "",
    batch_first: bool | None = None,
    force: bool = False,
) -> LSTMConfig:
    """Converts an LSTM's weights from `src` to `dst`; see the module docstring.

    Returns:
        The inferred configuration.

    Raises:
        FileNotFoundError, FileExistsError, ValueError: see `read_lstm_weights` and
            `write_lstm_weights`.

    Example:
        >>> convert("classifier.pt", "lstm_ckpt", prefix="lstm.")  # doctest: +SKIP
    """
    detect_format(dst)  # fail on a bad destination before reading anything
    state_dict, config = read_lstm_weights(src, prefix=prefix, batch_first=batch_first)
    write_lstm_weights(dst, state_dict, config, force=force)
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0, 1 on a conversion error, 2 on usage)."""
    parser = argparse.ArgumentParser(
        prog="python -m jaxlstm.convert",
        description="Convert torch nn.LSTM weights between .pt/.pth, .safetensors and an orbax "
        "checkpoint directory, inferring the configuration from the weights.",
    )
    parser.add_argument("src", help="source: .pt/.pth/.bin, .safetensors, or an orbax checkpoint directory")
    parser.add_argument("dst", help="destination: .pt/.pth/.bin, .safetensors, or a new directory (orbax)")
    parser.add_argument("--prefix", default="", help="key prefix of the LSTM in SRC, e.g. 'lstm.' (stripped)")
    parser.add_argument(
        "--batch-first", action="store_true", default=None, help="record batch_first=True in the configuration"
    )
    parser.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    args = parser.parse_args(argv)
    try:
        state_dict, config = read_lstm_weights(args.src, prefix=args.prefix, batch_first=args.batch_first)
        dtypes = sorted({str(v.dtype) for v in state_dict.values()})
        print(f"read {len(state_dict)} tensors ({', '.join(dtypes)}) from {args.src}")
        print(f"inferred {config}")
        fmt = write_lstm_weights(args.dst, state_dict, config, force=args.force)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {fmt} {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
