"""Weights between PyTorch and jaxlstm's modules, `flax.nnx` (`jaxlstm.LSTM`/`LSTMCell`) and
`flax.linen` (`jaxlstm.linen.LSTM`/`LSTMCell`).

Every function takes any source `jaxlstm.state_dict` reads: a torch `nn.Module` (TorchScript
included) or a model holding LSTMs, a `state_dict` or a checkpoint dict nesting one, or a
path (`.pt .pth .bin .ckpt .jit`, `.safetensors`, an orbax directory). Reading never runs
code from a file and never needs torch; torch is needed only to pass torch objects.

`read_state_dict` and `to_numpy` are re-exported here from `jaxlstm.state_dict`, their home.

Modes: a module ported from a torch or TorchScript module is in eval mode exactly when the
torch LSTM was (`training` False); one ported from weights alone (a state_dict, a checkpoint
file, `.safetensors`, orbax) is in eval mode, dropout off, as a ported checkpoint is mostly
used for inference: call `.train()` to train it.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxlstm import linen as jlinen
from jaxlstm import nnx as jnnx
from jaxlstm._checks import check_float_dtype
from jaxlstm.config import LSTMCellConfig, LSTMConfig
from jaxlstm.state_dict import (
    LoadResult,
    LSTMWeights,
    StateDictError,
    find_lstms,
    match_state_dict,
    read_lstm,
    read_state_dict,
    to_numpy,
)

__all__ = [
    "OVERRIDES",
    "LoadResult",
    "find_lstms",
    "from_torch",
    "linen_from_torch",
    "linen_load_torch_state_dict",
    "linen_torch_state_dict",
    "load_torch_state_dict",
    "read_state_dict",
    "to_numpy",
    "torch_state_dict",
]

OVERRIDES = ("batch_first", "dropout", "dtype", "param_dtype")
"""What the weights cannot tell, settable by `from_torch(..., **overrides)`."""


def _configured(weights: LSTMWeights, overrides: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """`(config, params)` of `weights` with the overrides applied.

    Raises:
        TypeError: an unknown override, or a `param_dtype` that is not floating point.
        ValueError: `batch_first`/`dropout` given for an LSTM cell, or invalid values.
    """
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise TypeError(
            f"from_torch() got unknown keyword argument(s) {', '.join(map(repr, unknown))}; the "
            f"overrides it takes are {', '.join(OVERRIDES)} (the rest comes from the weights)"
        )
    config, params = weights.config, weights.params
    flags = {k: overrides[k] for k in ("batch_first", "dropout") if k in overrides}
    if flags and isinstance(config, LSTMCellConfig):
        raise ValueError(
            f"{', '.join(flags)} apply to an nn.LSTM, but the weights under prefix "
            f"{weights.prefix!r} "
            "are an nn.LSTMCell's"
        )
    if flags:
        config = dataclasses.replace(config, **flags)
    if "param_dtype" in overrides:
        dtype = check_float_dtype("param_dtype", overrides["param_dtype"])
        params = {k: v.astype(dtype) for k, v in params.items()}
    elif any(v.dtype == np.float16 for v in params.values()):
        # float16 recurrences lose too much over long sequences: float32 unless asked for
        params = {k: v.astype(np.float32) for k, v in params.items()}
    for note in weights.notes:
        warnings.warn(
            f"porting {weights.prefix or 'the LSTM'!r}: {note}", UserWarning, stacklevel=3
        )
    return config, params


def from_torch(
    source: Any, *, prefix: str | None = None, rngs: Any = None, **overrides: Any
) -> Any:
    """A `jaxlstm.LSTM` or `jaxlstm.LSTMCell` holding the weights of a torch LSTM.

    The configuration is inferred from the weights; for a module source (torch or
    TorchScript, in memory or an archive) `batch_first` and `dropout` come from the module.
    The weights' dtype becomes `param_dtype`, except float16 weights, which are ported as
    float32 unless `param_dtype` asks for another dtype. Weight-dropped LSTMs (AWD-LSTM)
    are ported with their raw weights, dynamically quantized ones (qint8, float16) with
    their dequantized weights, as float models; a `UserWarning` says so. Look-alikes
    (peephole or layer-normalised LSTMs, subclasses overriding `forward`) are refused.

    Args:
        source: a torch `nn.LSTM`/`nn.LSTMCell` or a model holding one (TorchScript
            included), a `state_dict` or a checkpoint dict nesting one at any depth, or a
            path (see the module docstring).
        prefix: the LSTM's key prefix (as `find_lstms` lists it, e.g.
            `"model_state.encoder.lstm."`); None takes the one LSTM of the source.
        rngs: `nnx.Rngs` for the dropout stream (default `nnx.Rngs(0)`).
        **overrides: what weights cannot tell: `batch_first`, `dropout` (LSTM only),
            `dtype` (compute dtype), `param_dtype` (the parameters are cast to it).

    Returns:
        The module, in eval mode when the torch module was or when the source is weights
        alone, else in train mode (see the module docstring).

    Raises:
        TypeError: an unknown override (the message lists the allowed ones), a bad `rngs`
            or `source` type.
        StateDictError (a ValueError): no LSTM in the source (the message says what was
            found), several and `prefix` None (each prefix listed with its
            configuration), or an unreadable file (the message says what the file is).
        FileNotFoundError: the path does not exist.

    Examples:
        >>> lstm = from_torch(torch.nn.LSTM(3, 5, num_layers=2))  # doctest: +SKIP
        >>> lstm = from_torch("ckpt.pt", prefix="model.lstm.", batch_first=True)  # doctest: +SKIP
    """
    weights = read_lstm(source, prefix=prefix)
    config, params = _configured(weights, overrides)
    model = jnnx.from_params(params, config, dtype=overrides.get("dtype"), rngs=rngs)
    if weights.training:
        model.train()
    else:
        model.eval()
    return model


def _check_module(model: Any) -> None:
    """Raises TypeError unless `model` is a `jaxlstm.LSTM` or `jaxlstm.LSTMCell`."""
    if not isinstance(model, (jnnx.LSTM, jnnx.LSTMCell)):
        raise TypeError(
            f"model must be a jaxlstm.LSTM or jaxlstm.LSTMCell, got {type(model).__name__}"
        )


def load_torch_state_dict(
    model: Any, source: Any, *, prefix: str = "", strict: bool = True
) -> LoadResult:
    """Loads torch weights into a `jaxlstm.LSTM` or `jaxlstm.LSTMCell`, in place.

    Either every value is loaded or, on an error, none is.

    Args:
        model: the module to load into.
        source: a state_dict, a checkpoint dict nesting one, a torch module, or a path (see
            the module docstring).
        prefix: the LSTM's key prefix in the source, e.g. `"lstm."` or
            `"model_state.encoder.lstm."` (as `find_lstms` lists it).
        strict: if True (torch's default), missing or unexpected keys under `prefix` are
            errors.

    Returns:
        `LoadResult(missing_keys, unexpected_keys)`.

    Raises:
        TypeError: `model` is not a jaxlstm module, or `source` of no accepted type.
        StateDictError (a ValueError): keys, shapes or dtypes do not match (all problems in
            one message, with the prefix to pass when the keys are elsewhere); a bad file.
        FileNotFoundError: the path does not exist.

    Examples:
        >>> load_torch_state_dict(lstm, "classifier.pt", prefix="lstm.")  # doctest: +SKIP
    """
    _check_module(model)
    values, result = match_state_dict(source, model.param_shapes(), prefix=prefix, strict=strict)
    model.set_params(values)
    return result


def torch_state_dict(model: Any) -> dict[str, np.ndarray]:
    """The model's parameters as `{torch name: np.ndarray}`, in torch's order.

    `torch_module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})` accepts it.

    Raises:
        TypeError: `model` is not a jaxlstm module.
    """
    _check_module(model)
    return {
        k: np.array(v) for k, v in model.params.items()
    }  # copies: writable, as torch.from_numpy wants


# ----------------------------------------------------------------------------- flax.linen


def _split_variables(variables: Any) -> tuple[dict[str, Any], bool]:
    """`(params, wrapped)`: the torch-named params, and whether they sat under `"params"`."""
    if not isinstance(variables, Mapping):
        raise TypeError(f"variables must be a linen variables dict, got {type(variables).__name__}")
    wrapped = "params" in variables
    params = dict(variables["params"]) if wrapped else dict(variables)
    bad = [k for k, v in params.items() if not hasattr(v, "shape")]
    if bad or not ("weight_ih_l0" in params or "weight_ih" in params):
        raise ValueError(
            "variables must hold jaxlstm.linen parameters under torch names (e.g. 'weight_ih_l0' "
            "or 'weight_ih'), as `{'params': {...}}` or the params dict itself; got keys "
            f"{sorted(params)[:6]}"
        )
    return params, wrapped


def linen_load_torch_state_dict(
    variables: Mapping[str, Any], source: Any, *, prefix: str = "", strict: bool = True
) -> tuple[dict[str, Any], LoadResult]:
    """Returns `variables` with their parameters replaced by torch weights.

    `load_torch_state_dict` for `jaxlstm.linen` modules. Linen parameters are immutable
    pytrees, so a new tree is returned; shapes and dtypes come from `variables` (e.g.
    `model.init`'s result) and values are cast to the existing dtypes.

    Args:
        variables: `{"params": {torch name: array}}` of a `jaxlstm.linen.LSTM`/`LSTMCell`,
            or the params dict itself.
        source: see `load_torch_state_dict`.
        prefix: the LSTM's key prefix in the source, e.g. `"lstm."`.
        strict: if True, missing or unexpected keys are errors; if False, missing parameters
            keep their values in `variables`.

    Returns:
        `(new_variables, LoadResult(missing_keys, unexpected_keys))`, `new_variables` shaped
        like `variables` (other collections are kept).

    Raises:
        TypeError: `variables` or `source` has the wrong type.
        ValueError: `variables` holds no jaxlstm parameters; keys, shapes or dtypes do not
            match (a `StateDictError`, all problems in one message); a bad file.
        FileNotFoundError: the path does not exist.

    Examples:
        >>> model = jaxlstm.linen.LSTM(10)  # doctest: +SKIP
        >>> variables = model.init(jax.random.key(0), jnp.zeros((5, 2, 3)))  # doctest: +SKIP
        >>> variables, _ = linen_load_torch_state_dict(variables, torch_lstm)  # doctest: +SKIP
    """
    params, wrapped = _split_variables(variables)
    shapes = {k: tuple(v.shape) for k, v in params.items()}
    values, result = match_state_dict(source, shapes, prefix=prefix, strict=strict)
    new_params = {
        k: jnp.asarray(values[k], dtype=v.dtype) if k in values else v for k, v in params.items()
    }
    if not wrapped:
        return new_params, result
    return {**variables, "params": new_params}, result


def linen_torch_state_dict(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A `jaxlstm.linen` module's parameters as `{torch name: np.ndarray}`.

    In torch's order; `torch_module.load_state_dict({k: torch.from_numpy(v) ...})` accepts it.

    Args:
        variables: `{"params": {torch name: array}}` or the params dict itself.

    Raises:
        TypeError, ValueError: `variables` is not a jaxlstm.linen parameter tree.
    """
    params, _ = _split_variables(variables)
    try:
        weights = read_lstm(params, prefix="")
    except StateDictError as e:
        raise ValueError(f"variables do not hold one consistent LSTM or LSTM cell: {e}") from None
    return {
        k: np.array(v) for k, v in weights.params.items()
    }  # writable copies, as torch.from_numpy wants


def linen_from_torch(
    source: Any, *, prefix: str | None = None, **overrides: Any
) -> tuple[Any, dict[str, Any]]:
    """A `jaxlstm.linen` module and its variables from torch weights (`from_torch` for linen).

    The linen counterpart of `from_torch`, with the same sources, prefix, overrides and
    modes; the mode is the module's `deterministic` attribute (True for eval mode).

    Returns:
        `(model, {"params": {torch name: array}})`.

    Raises:
        TypeError: an unknown override or a bad `source` type, as in `from_torch`.
        StateDictError (a ValueError): no LSTM in the source, several and `prefix` None, or
            an unreadable file, as in `from_torch`.
        FileNotFoundError: the path does not exist.

    Examples:
        >>> model, variables = linen_from_torch(torch.nn.LSTM(3, 5, num_layers=2))  # doctest: +SKIP
        >>> out, (h_n, c_n) = model.apply(variables, x)  # doctest: +SKIP
    """
    weights = read_lstm(source, prefix=prefix)
    config, params = _configured(weights, overrides)
    model, variables = jlinen.from_params(params, config, dtype=overrides.get("dtype"))
    if isinstance(config, LSTMConfig):
        model = model.clone(deterministic=not weights.training)
    return model, variables
