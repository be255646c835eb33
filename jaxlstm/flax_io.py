"""Weights from and to Flax's own LSTMs: `flax.linen` and `flax.nnx` `RNN`/`Bidirectional` over
`LSTMCell` or `OptimizedLSTMCell`.

Flax's layouts, all with gate order i, f, g, o and the bias on the hidden path only:

- linen `LSTMCell` and `OptimizedLSTMCell`, nnx `LSTMCell`: one Dense per gate and path,
  `ii, if, ig, io` (nnx: `if_`) `kernel [I, H]`, and `hi, hf, hg, ho` `kernel [H, H]` +
  `bias [H]`.
- nnx `OptimizedLSTMCell`: fused `dense_i.kernel [I, 4H]`, `dense_h.kernel [H, 4H]` +
  `dense_h.bias [4H]`.

Torch's `weight_ih` is the transposed, gate-stacked input kernel, `weight_hh` likewise,
`bias_hh` Flax's bias and `bias_ih` zero. Flax's carry is `(c, h)` where jaxlstm's state is
`(h, c)`: `hx_from_flax` and `hx_to_flax` translate.

What Flax's layouts cannot hold, for `to_flax`: a projection (`proj_size > 0`, an error); two
biases (`bias_ih + bias_hh` is exported as Flax's one bias: same outputs, the split is lost);
no bias (exported as a zero bias, which Flax then trains); dropout between layers (Flax
stacks layers as a plain list of modules: apply dropout between them yourself).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm import nnx as jnnx
from jaxlstm.config import LSTMCellConfig, LSTMConfig, param_names
from jaxlstm.state_dict import read_model, to_numpy

__all__ = [
    "cell_from_flax",
    "cell_to_flax",
    "from_flax",
    "hx_from_flax",
    "hx_to_flax",
    "to_flax",
]

_GATES = ("i", "f", "g", "o")
_PER_GATE_KEYS = ("ii", "if", "ig", "io", "hi", "hf", "hg", "ho")


def _leaf(tree: Mapping[str, Any], *path: str) -> np.ndarray:
    value = tree
    for key in path:
        value = value[key]
    if hasattr(value, "get_value"):  # an nnx Variable
        value = value.get_value()
    return to_numpy(value)


def cell_from_flax(cell_params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """One Flax LSTM cell's parameters in torch's layout.

    Args:
        cell_params: the cell's parameter tree, per-gate (`{"ii": {"kernel": [I, H]}, ...,
            "hi": {"kernel": [H, H], "bias": [H]}, ...}`, nnx naming `if_` accepted) or fused
            nnx `OptimizedLSTMCell` (`{"dense_i": {"kernel": [I, 4H]}, "dense_h": {"kernel":
            [H, 4H], "bias": [4H]}}`).

    Returns:
        `{"weight_ih": (4H, I), "weight_hh": (4H, H), "bias_ih": zeros (4H,), "bias_hh": (4H,)}`
        as numpy arrays, rows in gate order i, f, g, o.

    Raises:
        ValueError: the tree is neither layout, or its shapes disagree.

    Examples:
        >>> H, I = 2, 3
        >>> tree = {f"i{g}": {"kernel": np.ones((I, H))} for g in "ifgo"}
        >>> tree |= {f"h{g}": {"kernel": np.ones((H, H)), "bias": np.zeros(H)} for g in "ifgo"}
        >>> cell_from_flax(tree)["weight_ih"].shape
        (8, 3)
    """
    tree = {k.rstrip("_"): v for k, v in cell_params.items()}  # nnx calls the forget kernel `if_`
    if "dense_i" in tree and "dense_h" in tree:
        w_ih = _leaf(tree, "dense_i", "kernel").T
        w_hh = _leaf(tree, "dense_h", "kernel").T
        b = _leaf(tree, "dense_h", "bias")
    elif all(k in tree for k in _PER_GATE_KEYS):
        w_ih = np.concatenate([_leaf(tree, "i" + g, "kernel").T for g in _GATES])
        w_hh = np.concatenate([_leaf(tree, "h" + g, "kernel").T for g in _GATES])
        b = np.concatenate([_leaf(tree, "h" + g, "bias") for g in _GATES])
    else:
        raise ValueError(
            "cell_params must be a Flax LSTMCell/OptimizedLSTMCell parameter tree with keys "
            f"{list(_PER_GATE_KEYS)} or ['dense_i', 'dense_h'], got keys {sorted(cell_params)}"
        )
    hidden = w_hh.shape[1]
    if (
        w_ih.ndim != 2
        or w_ih.shape[0] != 4 * hidden
        or w_hh.shape != (4 * hidden, hidden)
        or b.shape != (4 * hidden,)
    ):
        raise ValueError(
            f"Flax LSTM cell parameters have inconsistent shapes: input kernels give "
            f"weight_ih {w_ih.shape}, hidden kernels weight_hh {w_hh.shape} and bias {b.shape}; "
            f"expected (4H, I), (4H, H), (4H,) with H = {hidden}"
        )
    return {"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": np.zeros_like(b), "bias_hh": b}


def cell_to_flax(
    params: Mapping[str, Any],
    *,
    layout: Literal["per_gate", "fused"] = "per_gate",
    nnx_names: bool = False,
) -> dict[str, dict[str, np.ndarray]]:
    """One cell's torch-layout parameters as a Flax LSTM cell's parameter tree.

    Args:
        params: `weight_ih` `(4H, I)`, `weight_hh` `(4H, H)`, optionally `bias_ih` and
            `bias_hh` `(4H,)`; no `weight_hr` (Flax cells have no projection).
        layout: `"per_gate"` (linen `LSTMCell`/`OptimizedLSTMCell`, nnx `LSTMCell`) or
            `"fused"` (nnx `OptimizedLSTMCell`).
        nnx_names: name the forget-gate input kernel `if_` as nnx's `LSTMCell` does.

    Returns:
        The nested `{module: {"kernel": ..., "bias": ...}}` tree; the bias is
        `bias_ih + bias_hh` (zeros without bias).

    Raises:
        ValueError: `params` has a projection, or an unknown layout is asked for.
    """
    if "weight_hr" in params:
        raise ValueError(
            "Flax's LSTM cells have no projection: a model with proj_size > 0 (weight_hr) cannot "
            "be exported to Flax"
        )
    w_ih, w_hh = to_numpy(params["weight_ih"]), to_numpy(params["weight_hh"])
    if "bias_ih" in params:
        b = to_numpy(params["bias_ih"]) + to_numpy(params["bias_hh"])
    else:
        b = np.zeros(w_ih.shape[0], w_ih.dtype)
    if layout == "fused":
        return {
            "dense_i": {"kernel": w_ih.T.copy()},
            "dense_h": {"kernel": w_hh.T.copy(), "bias": b},
        }
    if layout != "per_gate":
        raise ValueError(f"layout must be 'per_gate' or 'fused', got {layout!r}")
    w_ih_g, w_hh_g, b_g = (np.split(a, 4) for a in (w_ih, w_hh, b))
    tree: dict[str, dict[str, np.ndarray]] = {}
    for k, g in enumerate(_GATES):
        name = "if_" if (g == "f" and nnx_names) else "i" + g
        tree[name] = {"kernel": w_ih_g[k].T.copy()}
    for k, g in enumerate(_GATES):
        tree["h" + g] = {"kernel": w_hh_g[k].T.copy(), "bias": b_g[k].copy()}
    return tree


# ----------------------------------------------------------------------------- module walking


class _Layer:
    """One Flax layer: its cells (1 or 2 directions), their parameter trees, time_major."""

    def __init__(self, cells: list[Any], trees: list[Mapping[str, Any]], time_major: bool):
        self.cells, self.trees, self.time_major = cells, trees, time_major


def _check_cell(cell: Any, where: str) -> None:
    import flax.linen as nn
    from flax import nnx

    kinds = (nn.LSTMCell, nn.OptimizedLSTMCell, nnx.LSTMCell, nnx.OptimizedLSTMCell)
    if not isinstance(cell, kinds):
        raise TypeError(
            f"{where} must be an LSTMCell or OptimizedLSTMCell (flax.linen or flax.nnx), got "
            f"{type(cell).__module__}.{type(cell).__name__}"
        )
    if cell.gate_fn is not jax.nn.sigmoid or cell.activation_fn is not jnp.tanh:
        raise ValueError(
            f"{where} uses gate_fn={getattr(cell.gate_fn, '__name__', cell.gate_fn)} and "
            f"activation_fn={getattr(cell.activation_fn, '__name__', cell.activation_fn)}; "
            "torch's LSTM needs sigmoid and tanh"
        )


def _concatenates(merge_fn: Any) -> bool:
    """Whether a `Bidirectional`'s `merge_fn` concatenates the two directions' outputs on the
    feature axis, as torch does (checked by what it returns, not by its identity)."""
    forward, backward = np.zeros((1, 1, 2), np.float32), np.ones((1, 1, 3), np.float32)
    try:
        merged = np.asarray(merge_fn(forward, backward))
    except Exception:  # any failure means it is not the concatenation
        return False
    return merged.shape == (1, 1, 5) and np.array_equal(
        merged, np.concatenate([forward, backward], axis=-1)
    )


def _linen_layer(module: Any, variables: Any, where: str) -> _Layer:
    import flax.linen as nn

    if not isinstance(variables, Mapping):
        raise TypeError(
            f"variables for {where} must be a dict of Flax variables, "
            f"got {type(variables).__name__}"
        )
    tree = variables["params"] if "params" in variables else variables
    try:
        if isinstance(module, nn.RNN):
            if module.reverse:
                raise ValueError(
                    f"{where} is an nn.RNN with reverse=True: torch has no backward-only LSTM"
                )
            _check_cell(module.cell, f"{where}.cell")
            return _Layer([module.cell], [tree["cell"]], module.time_major)
        if isinstance(module, nn.Bidirectional):
            if not _concatenates(module.merge_fn):
                raise ValueError(
                    f"{where} merges directions with {module.merge_fn}; torch concatenates them"
                )
            rnns: list[nn.RNN] = []
            for name in ("forward_rnn", "backward_rnn"):
                rnn = getattr(module, name)
                if not isinstance(rnn, nn.RNN):
                    raise TypeError(f"{where}.{name} must be an nn.RNN, got {type(rnn).__name__}")
                _check_cell(rnn.cell, f"{where}.{name}.cell")
                rnns.append(rnn)
            trees = [tree["forward_rnn"]["cell"], tree["backward_rnn"]["cell"]]
            return _Layer([r.cell for r in rnns], trees, module.time_major)
    except KeyError as e:
        raise ValueError(
            f"variables for {where} have no entry {e} (keys: {sorted(tree)})"
        ) from None
    raise TypeError(
        f"{where} must be a flax.linen RNN or Bidirectional, got {type(module).__name__}"
    )


def _nnx_layer(module: Any, where: str) -> _Layer:
    from flax import nnx

    def tree(cell: Any) -> Mapping[str, Any]:
        return nnx.to_pure_dict(nnx.state(cell, nnx.Param))

    if isinstance(module, nnx.RNN):
        if module.reverse:
            raise ValueError(
                f"{where} is an nnx.RNN with reverse=True: torch has no backward-only LSTM"
            )
        _check_cell(module.cell, f"{where}.cell")
        return _Layer([module.cell], [tree(module.cell)], module.time_major)
    if isinstance(module, nnx.Bidirectional):
        if not _concatenates(module.merge_fn):
            raise ValueError(
                f"{where} merges directions with {module.merge_fn}; torch concatenates them"
            )
        rnns: list[nnx.RNN] = []
        for name in ("forward_rnn", "backward_rnn"):
            rnn = getattr(module, name)
            if not isinstance(rnn, nnx.RNN):
                raise TypeError(f"{where}.{name} must be an nnx.RNN, got {type(rnn).__name__}")
            _check_cell(rnn.cell, f"{where}.{name}.cell")
            rnns.append(rnn)
        return _Layer([r.cell for r in rnns], [tree(r.cell) for r in rnns], module.time_major)
    raise TypeError(f"{where} must be a flax.nnx RNN or Bidirectional, got {type(module).__name__}")


def _is_linen(module: Any) -> bool:
    import flax.linen as nn

    return isinstance(module, nn.Module)


def _is_cell(module: Any) -> bool:
    import flax.linen as nn
    from flax import nnx

    return isinstance(
        module, (nn.LSTMCell, nn.OptimizedLSTMCell, nnx.LSTMCell, nnx.OptimizedLSTMCell)
    )


def from_flax(module: Any, variables: Any = None, *, rngs: Any = None) -> Any:
    """A `jaxlstm.LSTM` (or `LSTMCell`) computing what a Flax LSTM computes.

    Accepted sources: a `flax.linen` `RNN` or `Bidirectional` over `LSTMCell` or
    `OptimizedLSTMCell` with its variables; their `flax.nnx` counterparts, alone; a list of
    such layers (applied one after the other), which becomes `num_layers`; a bare cell, which
    becomes a `jaxlstm.LSTMCell`. `batch_first` follows the source's `time_major` (Flax's
    default `time_major=False` gives `batch_first=True`), `dtype` the cells' `dtype`, and
    `param_dtype` the weights'. Flax's bias becomes `bias_hh`, `bias_ih` is zero.

    Flax does not zero `RNN` outputs past `seq_lengths` where jaxlstm (like torch) does; the
    valid steps and the final states agree. Translate carries with `hx_from_flax`; a
    non-zero `carry_init` of the source is not carried over (pass the initial state as `hx`).

    Args:
        module: the Flax module, or a list of them (one per layer).
        variables: for linen, the module's variables (`{"params": ...}` or the params
            subtree), or a list of them matching `module`; None for nnx.
        rngs: accepted for symmetry with `from_torch` and unused: the weights come from the
            source, Flax's LSTMs have no dropout, so no random numbers are drawn.

    Returns:
        `jaxlstm.LSTM` with `num_layers = len(layers)`, `bidirectional` for `Bidirectional`
        layers; `jaxlstm.LSTMCell` for a bare cell.

    Raises:
        TypeError: an unsupported module, or variables missing/given where they do not belong.
        ValueError: layers disagree (hidden size, direction count, time_major, dtype), a layer's
            input size is not the previous layer's output size, non-default activations, a
            reversed `RNN`, or a `merge_fn` other than concatenation.

    Examples:
        >>> rnn = flax.linen.RNN(flax.linen.LSTMCell(8))  # doctest: +SKIP
        >>> variables = rnn.init(jax.random.key(0), x)  # doctest: +SKIP
        >>> lstm = jaxlstm.from_flax(rnn, variables)  # doctest: +SKIP
        >>> out, (h_n, c_n) = lstm(x)  # x: [B, T, I], as rnn.apply(variables, x)  # doctest: +SKIP
    """
    del rngs  # no random numbers are needed: see the docstring
    if _is_cell(module):
        return _from_flax_cell(module, variables)
    layers = _flax_layers(module, variables)
    state_dict, config = _stacked(layers)
    return jnnx.from_params(state_dict, config, dtype=layers[0].cells[0].dtype)


def _from_flax_cell(module: Any, variables: Any) -> Any:
    """`from_flax` of a bare Flax cell: a `jaxlstm.LSTMCell`."""
    from flax import nnx

    linen = _is_linen(module)
    _check_cell(module, "module")
    if linen and variables is None:
        raise TypeError("variables are required for a flax.linen module (module.init's result)")
    if not linen and variables is not None:
        raise TypeError("variables must be None for a flax.nnx module, which holds its parameters")
    tree = (
        variables.get("params", variables)
        if linen
        else nnx.to_pure_dict(nnx.state(module, nnx.Param))
    )
    sd = cell_from_flax(tree)
    config = LSTMCellConfig(int(sd["weight_ih"].shape[1]), int(sd["weight_hh"].shape[1]))
    return jnnx.from_params(sd, config, dtype=module.dtype)


def _flax_layers(module: Any, variables: Any) -> list[_Layer]:
    """The layers of `from_flax`'s source (a module or a list of them), one `_Layer` each.

    Raises:
        TypeError: variables missing or given where they do not belong; linen and nnx mixed.
        ValueError: no layers, or not one variables entry per layer.
    """
    modules = list(module) if isinstance(module, (list, tuple)) else [module]
    if not modules:
        raise ValueError(
            "module must be a Flax RNN/Bidirectional or a non-empty list of them, got []"
        )
    linen = _is_linen(modules[0])
    var_list = [None] * len(modules)
    if linen:
        if variables is None:
            raise TypeError("variables are required for flax.linen modules (module.init's result)")
        var_list = list(variables) if isinstance(variables, (list, tuple)) else [variables]
        if len(var_list) != len(modules):
            raise ValueError(
                f"variables must have one entry per module: {len(modules)} modules, "
                f"got {len(var_list)}"
            )
    elif variables is not None:
        raise TypeError("variables must be None for flax.nnx modules, which hold their parameters")
    layers = []
    for k, (m, v) in enumerate(zip(modules, var_list, strict=True)):
        where = f"module[{k}]" if len(modules) > 1 else "module"
        if _is_linen(m) != linen:
            raise TypeError(f"{where}: all layers must be flax.linen or all flax.nnx, not a mix")
        layers.append(_linen_layer(m, v, where) if linen else _nnx_layer(m, where))
    return layers


def _stacked(layers: list[_Layer]) -> tuple[dict[str, np.ndarray], LSTMConfig]:
    """`(state_dict, config)` of the stacked LSTM that Flax layers make.

    Raises:
        ValueError: the layers or directions disagree in hidden size, direction count,
            time_major or dtype.
    """
    per_layer = [[cell_from_flax(t) for t in layer.trees] for layer in layers]
    cells = [c for layer_cells in per_layer for c in layer_cells]
    for name, values in (
        ("hidden size", [c["weight_hh"].shape[1] for c in cells]),
        ("number of directions", [len(layer.cells) for layer in layers]),
        ("time_major", [layer.time_major for layer in layers]),
        ("dtype", [str(c.dtype) for layer in layers for c in layer.cells]),
    ):
        if len(set(values)) > 1:
            raise ValueError(f"all layers and directions must have the same {name}, got {values}")
    config = LSTMConfig(
        input_size=int(cells[0]["weight_ih"].shape[1]),
        hidden_size=int(cells[0]["weight_hh"].shape[1]),
        num_layers=len(layers),
        batch_first=not layers[0].time_major,
        bidirectional=len(layers[0].cells) == 2,
    )
    state_dict: dict[str, np.ndarray] = {}
    for k, layer_cells in enumerate(per_layer):
        for d, cell_sd in enumerate(layer_cells):
            state_dict |= {name: cell_sd[role] for role, name in param_names(config, k, d).items()}
    return state_dict, config


def _exported(model: Any, batch_first: bool | None) -> tuple[dict[str, np.ndarray], Any, Any]:
    """`(params, config, compute dtype)` of a jaxlstm module or a dict holding one LSTM.

    Raises:
        ValueError: `batch_first` contradicts the module's, or the dict holds no single LSTM.
        TypeError: `model` is neither.
    """
    weights = read_model(model)
    config = weights.config
    if (
        isinstance(model, jnnx.LSTM)
        and batch_first is not None
        and batch_first != model.batch_first
    ):
        raise ValueError(
            f"batch_first={batch_first} contradicts the model's batch_first={model.batch_first}"
        )
    if isinstance(config, LSTMConfig) and batch_first is not None:
        config = dataclasses.replace(config, batch_first=batch_first)
    return (
        weights.params,
        config,
        getattr(model, "dtype", None) if not isinstance(model, Mapping) else None,
    )


def to_flax(
    model: Any,
    *,
    api: Literal["nnx", "linen"] = "nnx",
    cell: Literal["LSTMCell", "OptimizedLSTMCell"] = "LSTMCell",
    batch_first: bool | None = None,
    rngs: Any = None,
) -> Any:
    """Flax modules (and, for linen, variables) computing what a jaxlstm LSTM computes.

    The inverse of `from_flax`: each layer becomes an `RNN` (a `Bidirectional` of two `RNN`s
    when bidirectional) over `cell`, with `time_major = not batch_first`; several layers
    become a list to apply one after the other. Flax cannot hold everything torch's LSTM can:
    `proj_size > 0` is an error; `bias_ih + bias_hh` become Flax's single bias (same outputs,
    the split is lost); `bias=False` becomes a zero bias; dropout between layers is not
    represented. Flax's carries are `(c, h)`: translate `hx` with `hx_to_flax`.

    Args:
        model: a `jaxlstm.LSTM` or `jaxlstm.LSTMCell` (nnx), or `{torch name: array}` (a
            torch state_dict, or `jaxlstm.linen` variables / params).
        api: `"nnx"` or `"linen"`.
        cell: the Flax cell class to build.
        batch_first: for a dict, the layout to record (default False); for a module, must
            agree with it if given.
        rngs: `nnx.Rngs` for the nnx modules (default `nnx.Rngs(0)`).

    Returns:
        nnx: an `nnx.RNN`/`nnx.Bidirectional` (a list of them when `num_layers > 1`; a bare
        cell for an `LSTMCell`). linen: `(module, variables)`, or `(list of modules, list of
        variables)` when `num_layers > 1`, ready for `from_flax(*to_flax(...))`.

    Raises:
        ValueError: `proj_size > 0`, an unknown `api`/`cell`, contradictory `batch_first`.
        TypeError: `model` is not a jaxlstm module or parameter dict.

    Examples:
        >>> lstm = jaxlstm.LSTM(3, 8, rngs=nnx.Rngs(0))  # doctest: +SKIP
        >>> rnn, variables = to_flax(lstm, api="linen")  # doctest: +SKIP
    """
    from flax import nnx

    if api not in ("nnx", "linen"):
        raise ValueError(f"api must be 'nnx' or 'linen', got {api!r}")
    if cell not in ("LSTMCell", "OptimizedLSTMCell"):
        raise ValueError(f"cell must be 'LSTMCell' or 'OptimizedLSTMCell', got {cell!r}")
    params, config, dtype = _exported(model, batch_first)
    if isinstance(config, LSTMConfig) and config.proj_size > 0:
        raise ValueError(
            f"Flax's LSTM cells have no projection: a model with proj_size={config.proj_size} "
            "cannot be exported to Flax"
        )
    rngs = nnx.Rngs(0) if rngs is None else rngs
    if isinstance(config, LSTMCellConfig):
        flax_cell, tree = _flax_cell(params, api, cell, dtype, rngs)
        return (flax_cell, {"params": tree}) if api == "linen" else flax_cell
    layers = []
    for k in range(config.num_layers):
        directions = [
            _flax_cell(
                {role: params[name] for role, name in param_names(config, k, d).items()},
                api,
                cell,
                dtype,
                rngs,
            )
            for d in range(config.num_directions)
        ]
        layers.append(_flax_layer(directions, api, not config.batch_first, rngs))
    if api == "nnx":
        modules = [module for module, _ in layers]
        return modules[0] if len(modules) == 1 else modules
    return layers[0] if len(layers) == 1 else tuple(list(v) for v in zip(*layers, strict=True))


def _flax_cell(
    cell_params: Mapping[str, np.ndarray], api: str, cell: str, dtype: Any, rngs: Any
) -> tuple[Any, dict[str, Any]]:
    """`(Flax cell, its linen params or {})` holding one direction's torch-named weights."""
    import flax.linen as nn
    from flax import nnx

    layout: Literal["per_gate", "fused"] = (
        "fused" if (api == "nnx" and cell == "OptimizedLSTMCell") else "per_gate"
    )
    tree = jax.tree.map(
        jnp.asarray, cell_to_flax(cell_params, layout=layout, nnx_names=api == "nnx")
    )
    in_size, hidden = cell_params["weight_ih"].shape[1], cell_params["weight_hh"].shape[1]
    param_dtype = cell_params["weight_ih"].dtype
    if api == "linen":
        linen_cls = nn.LSTMCell if cell == "LSTMCell" else nn.OptimizedLSTMCell
        return linen_cls(hidden, dtype=dtype, param_dtype=param_dtype), tree
    nnx_cls = nnx.LSTMCell if cell == "LSTMCell" else nnx.OptimizedLSTMCell
    flax_cell = nnx_cls(in_size, hidden, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    state = nnx.state(flax_cell, nnx.Param)
    nnx.replace_by_pure_dict(state, tree)
    nnx.update(flax_cell, state)
    return flax_cell, {}


def _flax_layer(
    directions: list[tuple[Any, dict[str, Any]]], api: str, time_major: bool, rngs: Any
) -> tuple[Any, dict[str, Any] | None]:
    """`(RNN or Bidirectional, its linen variables or None)` over one layer's cells."""
    import flax.linen as nn
    from flax import nnx

    if api == "nnx":
        nnx_rnns = [nnx.RNN(c, time_major=time_major, rngs=rngs) for c, _ in directions]
        if len(nnx_rnns) == 1:
            return nnx_rnns[0], None
        return nnx.Bidirectional(nnx_rnns[0], nnx_rnns[1], time_major=time_major, rngs=rngs), None
    linen_rnns = [nn.RNN(c, time_major=time_major) for c, _ in directions]
    if len(linen_rnns) == 1:
        return linen_rnns[0], {"params": {"cell": directions[0][1]}}
    params = {"forward_rnn": {"cell": directions[0][1]}, "backward_rnn": {"cell": directions[1][1]}}
    return nn.Bidirectional(linen_rnns[0], linen_rnns[1], time_major=time_major), {"params": params}


def hx_from_flax(carries: Any) -> tuple[jax.Array, jax.Array]:
    """Flax carries, `(c, h)` per direction, as jaxlstm's `(h_0, c_0)`.

    Args:
        carries: one layer's carry, or a list with one per layer. A layer's carry is `(c, h)`
            with `c`, `h` `[B, H]` for an `RNN`, or `((c_fwd, h_fwd), (c_bwd, h_bwd))` for a
            `Bidirectional`, as Flax's `initial_carry` takes and `return_carry=True` returns.

    Returns:
        `(h [D*L, B, H], c [D*L, B, H])`, ordered layer 0 forward, layer 0 backward, ...

    Raises:
        ValueError: the carries are not pairs of arrays.

    Examples:
        >>> c, h = jnp.zeros((2, 5)), jnp.ones((2, 5))
        >>> h0, c0 = hx_from_flax((c, h))
        >>> h0.shape, float(h0.sum())
        ((1, 2, 5), 10.0)
    """
    layers = list(carries) if isinstance(carries, list) else [carries]
    hs, cs = [], []
    for k, layer in enumerate(layers):
        if not isinstance(layer, (tuple, list)) or len(layer) != 2:
            raise ValueError(
                f"carry of layer {k} must be a pair (c, h) or a pair of pairs, "
                f"got {type(layer).__name__}"
            )
        directions = layer if isinstance(layer[0], (tuple, list)) else [layer]
        for direction in directions:
            c, h = direction  # Flax orders the carry (c, h)
            hs.append(jnp.asarray(h))
            cs.append(jnp.asarray(c))
    return jnp.stack(hs), jnp.stack(cs)


def hx_to_flax(hx: tuple[Any, Any], *, num_layers: int = 1, bidirectional: bool = False) -> Any:
    """jaxlstm's `(h_0, c_0)` as Flax carries, the inverse of `hx_from_flax`.

    Args:
        hx: `(h [D*L, B, H], c [D*L, B, H])`.
        num_layers: L.
        bidirectional: D = 2.

    Returns:
        One layer's carry when `num_layers == 1`, else a list of them: `(c, h)` per direction,
        `((c_fwd, h_fwd), (c_bwd, h_bwd))` when bidirectional.

    Raises:
        ValueError: `hx` does not hold `num_layers * D` states.
    """
    h, c = hx
    dirs = 2 if bidirectional else 1
    if h.shape[0] != num_layers * dirs or c.shape[0] != num_layers * dirs:
        raise ValueError(
            f"hx must hold num_layers * D = {num_layers * dirs} states, got h {tuple(h.shape)}, "
            f"c {tuple(c.shape)}"
        )
    layers = []
    for k in range(num_layers):
        carry = [(c[k * dirs + d], h[k * dirs + d]) for d in range(dirs)]
        layers.append(tuple(carry) if bidirectional else carry[0])
    return layers[0] if num_layers == 1 else layers
