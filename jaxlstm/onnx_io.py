"""ONNX `LSTM` nodes read with the `onnx` package (an optional extra), never by running the graph.

An ONNX `LSTM` node (opset >= 7) is one layer, one or both directions: inputs `X`,
`W` `[D, 4H, I]`, `R` `[D, 4H, H]`, `B` `[D, 8H]` (the input then the recurrent bias),
`sequence_lens` `[B]`, `initial_h`/`initial_c` `[D, B, H]`, `P` `[D, 3H]` (peepholes);
attributes `hidden_size`, `direction` ("forward", "reverse", "bidirectional"), `layout`
(0: `X` is `[T, B, I]`; 1: `[B, T, I]`), `activations`, `clip`, `input_forget`. Its
gates are stacked i, o, f, c; torch's are i, f, g (c), o, so each weight's blocks are
reordered. Direction 1 of a bidirectional node gives torch's `_reverse` weights.

Every LSTM node appears under the prefix `"<node name>."` (`"LSTM_<k>."` for the k-th
unnamed one) as a one-layer `nn.LSTM`; `jaxlstm.find_lstms`, `jaxlstm.from_torch` and
`python -m jaxlstm.convert` read `.onnx` files too. The weights must be initializers or
`Constant` nodes. Constant `initial_h`/`initial_c` are kept as `"<node>.initial_h"` /
`"<node>.initial_c"` tensors (pass them as `hx`); `sequence_lens` is the `seq_lengths`
argument of the call. Refused with a message naming the attribute: peepholes (a non-zero
`P`), `clip`, `input_forget=1`, activations other than Sigmoid, Tanh, Tanh.
`direction="reverse"` is ported with a note: the port runs forward in time, so feed it
each sequence reversed.

The ONNX output `Y` is `[T, D, B, H]` (layout 0) or `[B, T, D, H]` (layout 1); the
port's `out` is `[T, B, D*H]` or `[B, T, D*H]`: `Y.transpose(0, 2, 1, 3).reshape(T, B, -1)`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxlstm.state_dict import Checkpoint, ModuleInfo, StateDictError

__all__ = ["from_onnx", "read_onnx"]

_DEFAULT_ACTIVATIONS = ["Sigmoid", "Tanh", "Tanh"]
_ONNX_TO_TORCH_GATES = (0, 2, 3, 1)  # ONNX blocks i, o, f, c -> torch's i, f, g, o


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "reading ONNX models needs the onnx package: pip install 'jaxlstm[onnx]' "
            "(or pip install onnx)"
        ) from None
    return onnx


def _constants(model: Any) -> dict[str, np.ndarray]:
    """Every initializer and `Constant` node output of the main graph, by name."""
    onnx = _onnx()
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    values[node.output[0]] = onnx.numpy_helper.to_array(attribute.t)
    return values


def _attributes(node: Any) -> dict[str, Any]:
    onnx = _onnx()
    out = {}
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list):
            value = [v.decode() if isinstance(v, bytes) else v for v in value]
        out[attribute.name] = value
    return out


def _problem(attributes: Mapping[str, Any], peepholes: np.ndarray | None, directions: int) -> str:
    """Why an LSTM node does not compute torch's LSTM, naming the attribute; `""` if it does."""
    if "clip" in attributes:
        return f"attribute clip={attributes['clip']}: torch's nn.LSTM does not clip the cell input"
    if attributes.get("input_forget", 0):
        return "attribute input_forget=1 (coupled input and forget gates): torch's nn.LSTM has none"
    activations = attributes.get("activations")
    if activations and [a.lower() for a in activations] != [
        a.lower() for a in _DEFAULT_ACTIVATIONS * directions
    ]:
        return f"attribute activations={activations}: torch's nn.LSTM uses Sigmoid, Tanh, Tanh"
    if peepholes is not None and np.any(peepholes):
        return "input P (peephole weights): torch's nn.LSTM has no peepholes"
    return ""


def _torch_weights(
    W: np.ndarray, R: np.ndarray, B: np.ndarray | None, directions: int
) -> dict[str, np.ndarray]:
    """An LSTM node's weights under torch's names, gate blocks reordered."""
    hidden = R.shape[-1]

    def reorder(w: np.ndarray) -> np.ndarray:
        blocks = w.reshape(4, hidden, *w.shape[1:])
        return np.concatenate([blocks[g] for g in _ONNX_TO_TORCH_GATES])

    out = {}
    for d in range(directions):
        suffix = "_reverse" if d else ""
        out[f"weight_ih_l0{suffix}"] = reorder(W[d])
        out[f"weight_hh_l0{suffix}"] = reorder(R[d])
        if B is not None:
            out[f"bias_ih_l0{suffix}"] = reorder(B[d][: 4 * hidden])
            out[f"bias_hh_l0{suffix}"] = reorder(B[d][4 * hidden :])
    return out


def _input(node: Any, index: int, constants: Mapping[str, np.ndarray], name: str) -> Any:
    """The constant value of the node's input `index`, None if absent, an error if computed."""
    if len(node.input) <= index or not node.input[index]:
        return None
    value = constants.get(node.input[index])
    if value is None and name in ("W", "R", "B", "P"):
        raise StateDictError(
            f"the LSTM node {node.name!r}: its input {name} ({node.input[index]!r}) is computed "
            "in the graph, not an initializer or Constant: fold constants first (e.g. with "
            "onnxruntime's graph optimisation or onnx-simplifier)"
        )
    return value


def _read_node(
    node: Any, name: str, constants: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], ModuleInfo, list[str]]:
    """`(tensors without prefix, ModuleInfo, notes)` of one LSTM node."""
    attributes = _attributes(node)
    direction = attributes.get("direction", "forward")
    directions = 2 if direction == "bidirectional" else 1
    W, R, B = (_input(node, i, constants, n) for i, n in enumerate(("W", "R", "B"), start=1))
    peepholes = _input(node, 7, constants, "P")
    tensors = _torch_weights(np.asarray(W), np.asarray(R), B, directions)
    notes = []
    layout = int(attributes.get("layout", 0))
    for index, state in ((5, "initial_h"), (6, "initial_c")):
        value = _input(node, index, constants, state)
        if value is not None:
            tensors[state] = value
            shape = " (layout=1: [B, D, H], transpose it to [D, B, H])" if layout else ""
            notes.append(
                f"{state} is a constant of the graph, kept as the tensor {name + '.' + state!r}"
                f"{shape}: pass it as hx"
            )
    if direction == "reverse":
        notes.append(
            'direction="reverse": the port runs forward in time; feed it each sequence '
            "reversed (over its own length) and reverse its output to get ONNX's Y"
        )
    problem = _problem(attributes, peepholes, directions)
    return tensors, ModuleInfo("LSTM", False, layout == 1, 0.0, problem=problem), notes


def read_onnx(model: Any) -> Checkpoint:
    """Reads every `LSTM` node of an ONNX model, under torch's names.

    Args:
        model: a path to an `.onnx` file or an `onnx.ModelProto`.

    Returns:
        A `Checkpoint`: each node's weights under `"<node name>."` (torch's names, gates
        reordered), `batch_first` from `layout`, refusals and notes per prefix (see the
        module docstring).

    Raises:
        ImportError: onnx is not installed (`pip install 'jaxlstm[onnx]'`).
        FileNotFoundError: the path does not exist.
        StateDictError: the file is not an ONNX model, or a node's weights are computed in
            the graph.
    """
    onnx = _onnx()
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise FileNotFoundError(f"file {path!r} does not exist")
        try:
            model = onnx.load(path)
        except Exception as e:  # protobuf raises several types for a file that is not ONNX
            raise StateDictError(f"{path!r} is not a readable ONNX model ({e})") from None
        origin = f"ONNX model {path!r}"
    else:
        origin = f"the ONNX model {getattr(model.graph, 'name', '')!r}"
    constants = _constants(model)
    tensors: dict[str, Any] = {}
    modules: dict[str, ModuleInfo] = {}
    notes: dict[str, list[str]] = {}
    lstm_nodes = [n for n in model.graph.node if n.op_type == "LSTM"]
    for k, node in enumerate(lstm_nodes):
        name = node.name or f"LSTM_{k}"
        own, info, node_notes = _read_node(node, name, constants)
        tensors |= {f"{name}.{key}": value for key, value in own.items()}
        modules[f"{name}."], notes[f"{name}."] = info, node_notes
    return Checkpoint(tensors, modules, origin, [""], notes)


def from_onnx(model: Any, node: str | None = None, *, rngs: Any = None, **overrides: Any) -> Any:
    """A `jaxlstm.LSTM` computing what an ONNX `LSTM` node computes.

    Args:
        model: a path to an `.onnx` file or an `onnx.ModelProto`.
        node: the node's name (as `jaxlstm.find_lstms(path)` lists it, without the trailing
            `.`; `"LSTM_<k>"` for the k-th unnamed node); None takes the model's only one.
        rngs: `nnx.Rngs` for the dropout stream (default `nnx.Rngs(0)`).
        **overrides: as `jaxlstm.from_torch` takes them (`batch_first`, `dtype`,
            `param_dtype`, ...).

    Returns:
        The module in eval mode: one layer, bidirectional for a bidirectional node,
        batch-first for `layout=1`. `x: [T, B, I]` (or `[B, T, I]`), `seq_lengths` is the
        node's `sequence_lens`; `out: [T, B, D*H]` is `Y` `[T, D, B, H]` with the direction
        axis folded into the features; `h_n`, `c_n: [D, B, H]` are `Y_h`, `Y_c`.

    Raises:
        ImportError: onnx is not installed.
        StateDictError: no such node, several and `node` None, or a node that torch's LSTM
            cannot express (the message names the attribute: `clip`, `input_forget`,
            `activations`, the peephole input `P`).
        FileNotFoundError: the path does not exist.

    Examples:
        >>> lstm = from_onnx("model.onnx", node="encoder_lstm")  # doctest: +SKIP
        >>> out, (h_n, c_n) = lstm(x, seq_lengths=lengths)  # doctest: +SKIP
    """
    from jaxlstm.torch_io import from_torch

    prefix = None if node is None else f"{node}."
    return from_torch(read_onnx(model), prefix=prefix, rngs=rngs, **overrides)
