"""Keras LSTM weights (`.keras` and `.h5` files) read with h5py and json, never by loading keras.

Keras stores an `LSTM` layer's weights as `kernel` `[I, 4H]`, `recurrent_kernel` `[H, 4H]`
and `bias` `[4H]`, gates in the order i, f, c, o — torch's i, f, g, o — with
`activation="tanh"` and `recurrent_activation="sigmoid"` torch's equations. So
`weight_ih_l0 = kernel.T`, `weight_hh_l0 = recurrent_kernel.T`, `bias_ih_l0 = bias` and
`bias_hh_l0 = 0`; a `Bidirectional` (merge_mode "concat") gives the `_reverse` weights;
Keras 2's `CuDNNLSTM` stores `bias` `[8H]`, the input and recurrent biases, torch's two.
Keras layers are batch-first unless Keras 2's `time_major` was set.

Files read (each with the model's configuration, which decides what the weights compute):

- `.keras` (Keras 3): a zip of `config.json` and `model.weights.h5`, whose groups
  (`layers/<key>/cell/vars/0..2`) name their layer in a `vars` attribute;
- `.h5`/`.hdf5` (Keras 2 and Keras 3's legacy format): the root attribute `model_config`
  and `model_weights/<layer>` groups listing their datasets in `weight_names`.

Every LSTM appears under the prefix `"<layer name>."` (e.g. `"lstm_1."`) as the tensors
of a one-layer `nn.LSTM`; `jaxlstm.find_lstms`, `jaxlstm.from_torch` and
`python -m jaxlstm.convert` read these files too. Refused by name (listed nowhere, the
reason in the error): `recurrent_activation="hard_sigmoid"` (Keras 2's default) or any
activation but tanh/sigmoid, `merge_mode` other than "concat". `go_backwards` layers are
ported with a note (feed them the time-reversed sequence).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from jaxlstm.state_dict import Checkpoint, ModuleInfo, StateDictError

__all__ = ["KERAS_SUFFIXES", "from_keras", "read_keras"]

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
"""The suffixes of the Keras files `from_keras` reads (a `.keras` zip, or legacy HDF5)."""
_LSTM_CLASSES = ("LSTM", "CuDNNLSTM")


def _h5py() -> Any:
    try:
        import h5py  # type: ignore[import-untyped]
    except ImportError:
        raise ImportError(
            "reading Keras files needs h5py: pip install 'jaxlstm[keras]' (or pip install h5py)"
        ) from None
    return h5py


@dataclasses.dataclass(frozen=True)
class _Layer:
    """An LSTM layer of a Keras configuration (`Bidirectional`: its forward layer)."""

    name: str
    class_name: str
    config: Mapping[str, Any]
    backward: Mapping[str, Any] | None = None
    merge_mode: str | None = None


def _walk_config(config: Any) -> Iterator[_Layer]:
    """Every LSTM layer of a model configuration, nested models and Bidirectional included."""
    if isinstance(config, list):
        for item in config:
            yield from _walk_config(item)
        return
    if not isinstance(config, Mapping):
        return
    class_name, inner = config.get("class_name"), config.get("config")
    if class_name in _LSTM_CLASSES and isinstance(inner, Mapping):
        yield _Layer(str(inner.get("name")), str(class_name), inner)
    elif class_name == "Bidirectional" and isinstance(inner, Mapping):
        forward = inner.get("layer", {})
        backward = inner.get("backward_layer") or forward
        if forward.get("class_name") in _LSTM_CLASSES:
            yield _Layer(
                str(inner.get("name")),
                str(forward["class_name"]),
                forward.get("config", {}),
                backward.get("config", {}),
                inner.get("merge_mode", "concat"),
            )
    elif isinstance(inner, Mapping):
        yield from _walk_config(inner.get("layers", []))


# ----------------------------------------------------------------------------- weights in files


def _keras_v3_weights(path: str) -> tuple[Any, dict[str, dict[str, np.ndarray]]]:
    """`(config, {layer name: {"kernel", "recurrent_kernel"[, "bias"]}})` of a `.keras` zip."""
    h5py = _h5py()
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if "config.json" not in names or "model.weights.h5" not in names:
            raise StateDictError(
                f"{path!r} is a zip but not a .keras file: expected config.json and "
                f"model.weights.h5, found {names[:6]}"
            )
        config = json.loads(archive.read("config.json"))
        with archive.open("model.weights.h5") as raw:
            data = raw.read()
    weights: dict[str, dict[str, np.ndarray]] = {}
    with h5py.File(io.BytesIO(data), "r") as f:

        def visit(name: str, group: Any) -> None:
            cell = group.get("cell/vars") if isinstance(group, h5py.Group) else None
            owner = group.get("vars") if isinstance(group, h5py.Group) else None
            if cell is None or owner is None or "name" not in owner.attrs:
                return
            arrays = [np.asarray(cell[str(i)]) for i in range(len(cell))]
            weights[_text(owner.attrs["name"])] = dict(
                zip(("kernel", "recurrent_kernel", "bias"), arrays, strict=False)
            )

        f.visititems(visit)
    return config, weights


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _legacy_weights(path: str) -> tuple[Any, dict[str, dict[str, np.ndarray]]]:
    """`(config, {layer name: weights})` of a Keras 2 / legacy `.h5` model file."""
    h5py = _h5py()
    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs:
            raise StateDictError(
                f"{path!r} is an HDF5 file without a model configuration (a weights-only file?): "
                "save the whole model (model.save) so the layers' activations are known"
            )
        config = json.loads(_text(f.attrs["model_config"]))
        root = f["model_weights"] if "model_weights" in f else f
        weights: dict[str, dict[str, np.ndarray]] = {}
        for layer in root.attrs.get("layer_names", []):
            group = root[_text(layer)]
            for weight_name in group.attrs.get("weight_names", []):
                parts = _text(weight_name).split(":")[0].split("/")
                kind = parts[-1]
                owner = [p for p in parts[:-1] if p != "lstm_cell"]
                if kind in ("kernel", "recurrent_kernel", "bias") and owner:
                    weights.setdefault(owner[-1], {})[kind] = np.asarray(group[_text(weight_name)])
    return config, weights


# ----------------------------------------------------------------------------- torch names


def _problem(layer: _Layer) -> str:
    """Why a Keras layer does not compute torch's LSTM, or `""`."""
    for cfg in (layer.config, layer.backward) if layer.backward else (layer.config,):
        if layer.class_name == "CuDNNLSTM":
            continue  # cuDNN's equations: tanh and sigmoid, fixed
        activation = cfg.get("activation", "tanh")
        recurrent = cfg.get("recurrent_activation", "hard_sigmoid")  # Keras 2's default
        if recurrent != "sigmoid":
            return (
                f"recurrent_activation={recurrent!r}: torch's nn.LSTM uses sigmoid, so the "
                "layer cannot be ported exactly (retrain or fine-tune with sigmoid)"
            )
        if activation != "tanh":
            return f"activation={activation!r}: torch's nn.LSTM uses tanh"
    if layer.backward is not None and layer.merge_mode != "concat":
        return f"Bidirectional merge_mode={layer.merge_mode!r}: torch concatenates the directions"
    return ""


def _direction(found: Mapping[str, np.ndarray], cudnn: bool, suffix: str) -> dict[str, np.ndarray]:
    """One direction's Keras weights under torch's names (gates i, f, c, o = i, f, g, o)."""
    kernel, recurrent = found["kernel"], found["recurrent_kernel"]
    out = {f"weight_ih_l0{suffix}": kernel.T.copy(), f"weight_hh_l0{suffix}": recurrent.T.copy()}
    if "bias" in found:
        bias = found["bias"]
        hidden4 = kernel.shape[1]
        if cudnn:  # the input and the recurrent bias, as torch has them
            out |= {f"bias_ih_l0{suffix}": bias[:hidden4], f"bias_hh_l0{suffix}": bias[hidden4:]}
        else:
            out |= {f"bias_ih_l0{suffix}": bias, f"bias_hh_l0{suffix}": np.zeros_like(bias)}
    return out


def _notes(layer: _Layer) -> list[str]:
    notes = []
    if layer.backward is None and layer.config.get("go_backwards"):
        notes.append(
            "Keras go_backwards=True: the port runs forward in time; feed it the time-reversed "
            "sequence (its outputs then come in Keras's order for that layer)"
        )
    if layer.config.get("dropout") or layer.config.get("recurrent_dropout"):
        notes.append(
            "the Keras layer's dropout/recurrent_dropout (training only) has no torch "
            "counterpart and is left out: the port is in eval mode"
        )
    return notes


def read_keras(path: str | os.PathLike) -> Checkpoint:
    """Reads every LSTM of a Keras `.keras` or `.h5` model file, under torch's names.

    Args:
        path: the file (see the module docstring).

    Returns:
        A `Checkpoint`: each LSTM layer's tensors under `"<layer name>."` (a `Bidirectional`
        under its own name, with `_reverse` weights), with `batch_first` (True unless
        `time_major`) and the reason a layer is refused recorded per prefix.

    Raises:
        ImportError: h5py is not installed (`pip install 'jaxlstm[keras]'`).
        FileNotFoundError: `path` does not exist.
        StateDictError: not a Keras model file, or a layer's weights are missing.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"file {path!r} does not exist")
    if zipfile.is_zipfile(path):
        config, weights = _keras_v3_weights(path)
    else:
        config, weights = _legacy_weights(path)
    tensors: dict[str, Any] = {}
    modules: dict[str, ModuleInfo] = {}
    notes: dict[str, list[str]] = {}
    for layer in _walk_config(config):
        prefix = f"{layer.name}."
        cudnn = layer.class_name == "CuDNNLSTM"
        if layer.backward is None:
            parts = {"": weights.get(layer.name)}
        else:
            forward_name = str(layer.config.get("name"))
            backward_name = str(layer.backward.get("name"))
            parts = {
                "": weights.get(f"forward_{forward_name}", weights.get(forward_name)),
                "_reverse": weights.get(f"backward_{backward_name}", weights.get(backward_name)),
            }
        missing = [suffix or "forward" for suffix, found in parts.items() if not found]
        if missing:
            raise StateDictError(
                f"Keras file {path!r}: the weights of layer {layer.name!r} are missing "
                f"({', '.join(missing)}); weights found for {sorted(weights)}"
            )
        for suffix, found in parts.items():
            assert found is not None  # checked above
            tensors |= {prefix + k: v for k, v in _direction(found, cudnn, suffix).items()}
        batch_first = not bool(layer.config.get("time_major", False))
        modules[prefix] = ModuleInfo(
            layer.class_name, False, batch_first, 0.0, problem=_problem(layer)
        )
        notes[prefix] = _notes(layer)
    return Checkpoint(tensors, modules, f"Keras file {path!r}", [""], notes)


def _stacked(checkpoint: Checkpoint, layers: Sequence[str]) -> Checkpoint:
    """The checkpoint of consecutive Keras LSTM layers as one multi-layer LSTM (prefix "")."""
    tensors: dict[str, Any] = {}
    notes: list[str] = []
    first = checkpoint.modules.get(f"{layers[0]}.")
    for k, name in enumerate(layers):
        prefix = f"{name}."
        info = checkpoint.modules.get(prefix)
        if info is None:
            raise StateDictError(
                f"{checkpoint.origin} has no LSTM layer {name!r}; its LSTM layers: "
                f"{[p[:-1] for p in checkpoint.modules]}"
            )
        if info.problem:
            raise StateDictError(f"{checkpoint.origin}: layer {name!r}: {info.problem}")
        for key, value in checkpoint.tensors.items():
            if key.startswith(prefix):
                tensors[key[len(prefix) :].replace("_l0", f"_l{k}")] = value
        notes += checkpoint.notes.get(prefix, [])
    assert first is not None
    return Checkpoint(tensors, {"": first}, checkpoint.origin, [""], {"": notes})


def from_keras(
    path: str | os.PathLike,
    layer: str | Sequence[str] | None = None,
    *,
    rngs: Any = None,
    **overrides: Any,
) -> Any:
    """A `jaxlstm.LSTM` computing what a Keras LSTM layer (or a stack of them) computes.

    Args:
        path: a `.keras` or `.h5` model file (read with h5py and json; keras is not needed).
        layer: the LSTM or `Bidirectional` layer's name; a list of names of consecutive
            layers (each feeding the next, all bidirectional or none) gives one
            multi-layer LSTM; None takes the file's only LSTM layer.
        rngs: `nnx.Rngs` for the dropout stream (default `nnx.Rngs(0)`).
        **overrides: as `jaxlstm.from_torch` takes them (`batch_first`, `dtype`,
            `param_dtype`, ...).

    Returns:
        The module in eval mode, batch-first like Keras (`x: [B, T, I]`, `out: [B, T, D*H]`
        like `return_sequences=True`, `h_n`/`c_n: [D*L, B, H]`).

    Raises:
        ImportError: h5py is not installed.
        StateDictError: no such layer, several and `layer` None, a layer that cannot be
            ported exactly (the message names the attribute, e.g. `hard_sigmoid`), or
            stacked layers whose sizes do not chain.
        FileNotFoundError: `path` does not exist.

    Examples:
        >>> lstm = from_keras("model.keras", layer="lstm")  # doctest: +SKIP
        >>> out, (h_n, c_n) = lstm(x)  # x: [B, T, I]  # doctest: +SKIP
    """
    from jaxlstm.torch_io import from_torch

    checkpoint = read_keras(path)
    if layer is None or isinstance(layer, str):
        prefix = None if layer is None else f"{layer}."
        return from_torch(checkpoint, prefix=prefix, rngs=rngs, **overrides)
    return from_torch(_stacked(checkpoint, list(layer)), rngs=rngs, **overrides)
