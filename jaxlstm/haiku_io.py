"""Weights from and to Haiku's `hk.LSTM` (alone or stacked in `hk.DeepRNN`).

Haiku's layout: each `hk.LSTM` owns one `hk.Linear` named `<lstm>/linear` with `w`
`[I + H, 4H]` (rows: input features, then hidden features) and `b` `[4H]`; the column blocks
are the gates i, g, f, o (not torch's i, f, g, o), and the forget gate computes
`sigmoid(f + 1)`. `from_haiku` folds that +1 into `bias_ih` (`bias_hh` is zero), so the
result equals Haiku's up to rounding of the addition. Haiku is time-major
(`hk.dynamic_unroll(..., time_major=True)` by default), like torch's default.

Haiku is an optional dependency: this module never imports it; it reads and writes the plain
parameter dicts that `hk.transform(...).init` returns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm import nnx as jnnx
from jaxlstm._checks import require_positive_int
from jaxlstm.config import LSTMCellConfig, LSTMConfig, layer_names, param_names
from jaxlstm.state_dict import read_model, to_numpy

__all__ = ["from_haiku", "haiku_to_torch", "hx_from_haiku", "to_haiku", "torch_to_haiku"]

# Column blocks: Haiku (i, g, f, o) <-> torch (i, f, g, o). The permutation is its own inverse.
_SWAP_F_G = (0, 2, 1, 3)


def _reorder(a: np.ndarray) -> np.ndarray:
    """Swaps the f and g blocks of the last axis (4H)."""
    blocks = np.split(a, 4, axis=-1)
    return np.concatenate([blocks[j] for j in _SWAP_F_G], axis=-1)


def _module_sort_key(name: str) -> list[tuple[str, int]]:
    """Haiku numbers modules `lstm`, `lstm_1`, `lstm_2`, ...: order by those numbers."""
    key = []
    for segment in name.split("/"):
        m = re.fullmatch(r"(.*?)_(\d+)", segment)
        key.append((m.group(1), int(m.group(2))) if m else (segment, 0))
    return key


def _lstm_linears(
    params: Mapping[str, Any], hidden_size: int | None
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """`[(module name, w, b)]` of the `hk.LSTM` linears in `params`, in layer order."""
    found = []
    for name, entry in params.items():
        if name.split("/")[-1] != "linear" or "/" not in name or not isinstance(entry, Mapping):
            continue
        if "w" not in entry or "b" not in entry:
            continue
        w, b = to_numpy(entry["w"]), to_numpy(entry["b"])
        if (
            w.ndim != 2
            or b.shape != (w.shape[1],)
            or w.shape[1] % 4
            or w.shape[0] <= w.shape[1] // 4
        ):
            continue
        if hidden_size is not None and w.shape[1] != 4 * hidden_size:
            continue
        found.append((name, w, b))
    if not found:
        raise ValueError(
            "params hold no hk.LSTM parameters: expected entries '<lstm>/linear' with 'w' "
            f"[I + H, 4H] and 'b' [4H]{f' with H = {hidden_size}' if hidden_size else ''}, "
            "got keys "
            f"{sorted(params)[:8]}"
        )
    sizes = sorted({w.shape[1] // 4 for _, w, _ in found})
    if len(sizes) > 1:
        raise ValueError(
            f"params hold LSTMs of several hidden sizes {sizes}: pass hidden_size to choose, or "
            "pass only the LSTM's entries"
        )
    return sorted(found, key=lambda item: _module_sort_key(item[0]))


def haiku_to_torch(
    params: Mapping[str, Any], *, hidden_size: int | None = None
) -> tuple[dict[str, np.ndarray], LSTMConfig]:
    """Haiku `hk.LSTM`/`hk.DeepRNN` parameters as a torch `nn.LSTM` state_dict.

    Args:
        params: `hk.transform(...).init(...)`'s result, or the part holding the LSTMs:
            `{"lstm/linear": {"w": [I + H, 4H], "b": [4H]}, "lstm_1/linear": ...}`. Other
            entries are ignored; stacked LSTMs are ordered by Haiku's module numbering.
        hidden_size: H, to pick the LSTMs when other `.../linear` modules are present.

    Returns:
        `(state_dict, config)`: `{torch name: np.ndarray}` and the time-major config.

    Raises:
        TypeError: `params` is not a dict, `hidden_size` not an int.
        ValueError: no (or ambiguous) LSTM parameters, or a layer's input size is not H
            (`hk.deep_rnn_with_skip_connections` has no torch counterpart).

    Examples:
        >>> p = {"lstm/linear": {"w": np.zeros((3 + 2, 8)), "b": np.zeros(8)}}
        >>> sd, cfg = haiku_to_torch(p)
        >>> cfg.input_size, cfg.hidden_size, float(sd["bias_ih_l0"][2])
        (3, 2, 1.0)
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a Haiku parameter dict, got {type(params).__name__}")
    if hidden_size is not None:
        require_positive_int("hidden_size", hidden_size)
    linears = _lstm_linears(params, hidden_size)
    hidden = linears[0][1].shape[1] // 4
    input_size = linears[0][1].shape[0] - hidden
    for k, (name, w, _) in enumerate(linears[1:], start=1):
        if w.shape[0] != 2 * hidden:
            raise ValueError(
                f"layer {k} ({name!r}) has w of shape {w.shape}, "
                f"expected ({2 * hidden}, {4 * hidden}) "
                "(input H + hidden H): skip connections (hk.deep_rnn_with_skip_connections) have "
                "no torch counterpart"
            )
    config = LSTMConfig(input_size, hidden, len(linears))
    forget = np.zeros(4 * hidden)
    forget[hidden : 2 * hidden] = 1.0  # torch's f block
    state_dict = {}
    for k, (_, w, b) in enumerate(linears):
        in_k = w.shape[0] - hidden
        names = param_names(config, k, 0)
        state_dict[names["weight_ih"]] = _reorder(w[:in_k]).T.copy()
        state_dict[names["weight_hh"]] = _reorder(w[in_k:]).T.copy()
        state_dict[names["bias_ih"]] = (_reorder(b) + forget.astype(b.dtype)).astype(b.dtype)
        state_dict[names["bias_hh"]] = np.zeros_like(b)
    return state_dict, config


def from_haiku(
    params: Mapping[str, Any],
    *,
    hidden_size: int | None = None,
    batch_first: bool = False,
    rngs: Any = None,
) -> Any:
    """A `jaxlstm.LSTM` computing what Haiku's `hk.LSTM` (or `hk.DeepRNN` of them) computes.

    Haiku's forget-gate +1 is folded into `bias_ih`; gates are reordered to torch's.

    Args:
        params: Haiku parameters (see `haiku_to_torch`).
        hidden_size: H, to pick the LSTMs among other `.../linear` modules.
        batch_first: the layout of the returned module (Haiku's `dynamic_unroll` is
            time-major by default).
        rngs: accepted for symmetry with `from_torch` and unused: the weights come from
            `params` and Haiku's LSTMs have no dropout, so no random numbers are drawn.

    Returns:
        `jaxlstm.LSTM` with one layer per `hk.LSTM`. Translate Haiku states with
        `hx_from_haiku`.

    Raises:
        ValueError: see `haiku_to_torch`.

    Examples:
        >>> params = hk.transform(f).init(key, x)  # doctest: +SKIP
        >>> lstm = jaxlstm.from_haiku(params)  # doctest: +SKIP
    """
    import dataclasses

    del rngs  # no random numbers are needed: see the docstring
    state_dict, config = haiku_to_torch(params, hidden_size=hidden_size)
    return jnnx.from_params(state_dict, dataclasses.replace(config, batch_first=batch_first))


def torch_to_haiku(
    state_dict: Mapping[str, Any], config: LSTMConfig, *, name: str = "lstm"
) -> dict[str, dict[str, jax.Array]]:
    """A torch `nn.LSTM` state_dict as `hk.LSTM`/`hk.DeepRNN` parameters.

    Haiku's `hk.LSTM` holds one bias and no projection, and Haiku has no bidirectional LSTM:
    `bias_ih + bias_hh` become Haiku's `b` (minus the forget +1; the split is lost),
    `bias=False` becomes a zero bias, and `bidirectional` or `proj_size > 0` are errors.

    Args:
        state_dict: `{torch name: array}` matching `config.param_shapes()`.
        config: the LSTM's configuration.
        name: the LSTM module name; layers are `name`, `name_1`, `name_2`, ... as Haiku names
            `hk.LSTM`s created in a row (e.g. for `hk.DeepRNN`).

    Returns:
        `{"lstm/linear": {"w": [I + H, 4H], "b": [4H]}, "lstm_1/linear": ...}`.

    Raises:
        ValueError: `config.bidirectional` or `config.proj_size > 0`.
    """
    if config.bidirectional:
        raise ValueError(
            "Haiku has no bidirectional LSTM module: a bidirectional model cannot be exported "
            "to Haiku"
        )
    if config.proj_size > 0:
        raise ValueError(
            f"hk.LSTM has no projection: a model with proj_size={config.proj_size} cannot be "
            "exported to Haiku"
        )
    hidden = config.hidden_size
    out = {}
    for k in range(config.num_layers):
        names = param_names(config, k, 0)
        w_ih, w_hh = (
            to_numpy(state_dict[names["weight_ih"]]),
            to_numpy(state_dict[names["weight_hh"]]),
        )
        if config.bias:
            b = to_numpy(state_dict[names["bias_ih"]]) + to_numpy(state_dict[names["bias_hh"]])
        else:
            b = np.zeros(4 * hidden, w_ih.dtype)
        b = _reorder(b)
        b[2 * hidden : 3 * hidden] -= 1  # Haiku's f block; hk.LSTM adds the 1 back
        w = np.concatenate([_reorder(w_ih.T), _reorder(w_hh.T)], axis=0)
        out[f"{name}/linear" if k == 0 else f"{name}_{k}/linear"] = {
            "w": jnp.asarray(w),
            "b": jnp.asarray(b),
        }
    return out


def to_haiku(model: Any, *, name: str = "lstm") -> dict[str, dict[str, jax.Array]]:
    """Haiku parameters for `hk.LSTM` (one layer) or `hk.DeepRNN` (several) equal to `model`.

    Args:
        model: a `jaxlstm.LSTM` or `jaxlstm.LSTMCell`, or `{torch name: array}`.
        name: the LSTM module name (see `torch_to_haiku`).

    Returns:
        The parameter dict for `hk.transform(f).apply`, where `f` builds the `hk.LSTM`s in
        order (`hk.DeepRNN([hk.LSTM(H) for _ in range(L)])`).

    Raises:
        ValueError: bidirectional or projected models (see `torch_to_haiku`).
        TypeError: `model` is not a jaxlstm module or parameter dict.
    """
    weights = read_model(model)
    params, config = weights.params, weights.config
    if isinstance(config, LSTMCellConfig):  # one layer under torch's nn.LSTM names
        params = {layer: params[role] for role, layer in layer_names(config).items()}
        config = config.as_lstm()
    return torch_to_haiku(params, config, name=name)


def hx_from_haiku(state: Any) -> tuple[jax.Array, jax.Array]:
    """Haiku states (`hk.LSTMState(hidden, cell)`, or a tuple of them from `hk.DeepRNN`) as
    jaxlstm's `(h [L, B, H], c [L, B, H])`.

    Raises:
        TypeError: `state` has no `hidden`/`cell` fields.
    """
    states = [state] if hasattr(state, "hidden") else list(state)
    for k, s in enumerate(states):
        if not (hasattr(s, "hidden") and hasattr(s, "cell")):
            raise TypeError(
                f"state {k} must be an hk.LSTMState (hidden, cell), got {type(s).__name__}"
            )
    return jnp.stack([s.hidden for s in states]), jnp.stack([s.cell for s in states])
