"""The functional `torch.nn.LSTM`: the stacked, bidirectional forward pass as a pure function.

`lstm(params, x, hx, config=...)` is a pure function of arrays: it works under `jax.jit`,
`jax.grad` and `jax.vmap`, and knows nothing of Flax, torch, optax or files. It runs in named
stages: the input's layout in, the initial state, the lengths' mask, then per layer its
weights and the layer over time (with dropout between layers), and the layout out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm._checks import check_floating, check_key, check_params, is_concrete, split_state
from jaxlstm.cell import CellWeights, state_dtype
from jaxlstm.config import LSTMConfig, param_names
from jaxlstm.layer import lstm_layer
from jaxlstm.options import ScanOptions, resolve_scan

__all__ = ["lstm"]

Array = jax.Array


def lstm(
    params: Mapping[str, Array],
    x: Array,
    hx: tuple[Array, Array] | None = None,
    *,
    config: LSTMConfig,
    seq_lengths: Array | None = None,
    dropout_key: Array | None = None,
    scan: ScanOptions | None = None,
) -> tuple[Array, tuple[Array, Array]]:
    """The forward pass of `torch.nn.LSTM`, as a pure function.

    Args:
        params: `{torch name: array}` with the shapes of `config.param_shapes()`.
        x: `[T, B, I]`, or `[B, T, I]` with `config.batch_first`, or unbatched `[T, I]`.
        hx: `(h_0, c_0)` with `h_0` `[D*L, B, H_out]` and `c_0` `[D*L, B, H]` (unbatched:
            `[D*L, H_out]`, `[D*L, H]`; never batch-first), or None for zeros.
        config: the structural arguments.
        seq_lengths: `[B]` integer lengths in [1, T] in any order (unbatched: a scalar), as
            `pack_padded_sequence(..., enforce_sorted=False)` would take. Steps at or past a
            length give 0 in `out`, and `h_n`/`c_n` hold each sequence's last valid state.
            Values are checked only when concrete (not under `jit`); see `jaxlstm.checked`.
        dropout_key: a PRNG key enabling dropout of rate `config.dropout` on the outputs of
            every layer but the last (training mode); None disables dropout.
        scan: how the recurrence runs over time and is differentiated
            (`jaxlstm.ScanOptions`: unroll, hand-written backward pass, remat, fused
            directions); None for the defaults. It changes speed and memory, not results.

    Returns:
        `(out, (h_n, c_n))`: `out` `[T, B, D*H_out]` (batch-first: `[B, T, D*H_out]`;
        unbatched: `[T, D*H_out]`), `h_n` `[D*L, B, H_out]`, `c_n` `[D*L, B, H]` ordered
        layer 0 forward, layer 0 backward, layer 1 forward, ... `c_n` is at least float32.

    Raises:
        ValueError: a shape does not match the configuration, or concrete seq_lengths are
            outside [1, T].
        TypeError: x is not floating point, hx is not a pair, seq_lengths is not integer,
            dropout_key is not a PRNG key, scan is not a ScanOptions.

    Note:
        Every derivative works: reverse mode (`jax.grad`, `grad` of `grad`, `jax.hessian`)
        through the hand-written backward pass by default, forward mode (`jax.jvp`,
        `jax.jacfwd`, `jax.linearize`) through autodiff of the plain scan when `lstm` is
        traced under it. Forward mode of a function compiled before it reaches `lstm`
        (`jax.jvp(jax.jit(f), ...)`) needs `ScanOptions(custom_vjp=False)`. Traced
        `seq_lengths` (arguments of a `jax.jit`-ed, `vmap`-ed or differentiated function)
        have no values at trace time, so an out-of-range length raises nothing: a length
        ≤ 0 gives a sequence with no valid step (`out` all 0, `h_n`/`c_n` equal to
        `h_0`/`c_0`, zero gradients) and a length > T acts as T. `jaxlstm.checked.lstm`
        checks the values inside the compiled program.

    Examples:
        >>> cfg = LSTMConfig(3, 5, num_layers=2)
        >>> params = init_params(jax.random.key(0), cfg)
        >>> out, (h_n, c_n) = lstm(params, jnp.zeros((7, 2, 3)), config=cfg)
        >>> out.shape, h_n.shape
        ((7, 2, 5), (2, 2, 5))
    """
    if not isinstance(config, LSTMConfig):
        raise TypeError(f"config must be a jaxlstm.LSTMConfig, got {type(config).__name__}")
    check_params(params, config.param_shapes())
    scan = resolve_scan(scan)
    if dropout_key is not None:
        check_key("dropout_key", dropout_key)
    inputs = _layout_in(x, config)
    dtype = jnp.result_type(inputs.x, *params.values())
    h0, c0 = _initial_state(hx, config, inputs, dtype)
    mask = None if seq_lengths is None else _lengths_mask(seq_lengths, inputs)
    layer_input = inputs.x.astype(dtype)
    h_n: list[Array] = []
    c_n: list[Array] = []
    for k in range(config.num_layers):
        with jax.named_scope(f"layer_{k}"):
            weights = layer_weights(params, config, k, dtype)
            states = slice(k * config.num_directions, (k + 1) * config.num_directions)
            layer_input, h_k, c_k = lstm_layer(
                weights, layer_input, tuple(h0[states]), tuple(c0[states]), mask=mask, scan=scan
            )
        h_n += h_k
        c_n += c_k
        if k < config.num_layers - 1 and dropout_key is not None and config.dropout > 0:
            layer_input = _dropout(jax.random.fold_in(dropout_key, k), layer_input, config.dropout)
    return _layout_out(layer_input, jnp.stack(h_n), jnp.stack(c_n), config, inputs)


class _Inputs(NamedTuple):
    """The input in the layout the layers take, and what is needed to undo it.

    Attributes:
        x: `[T, B, I]`, time-major and batched.
        batched: whether the caller's input had a batch axis.
        given_shape: the caller's shape, for error messages.
    """

    x: Array
    batched: bool
    given_shape: tuple[int, ...]

    @property
    def steps(self) -> int:
        return self.x.shape[0]

    @property
    def batch(self) -> int:
        return self.x.shape[1]


def _layout_in(x: Any, config: LSTMConfig) -> _Inputs:
    """Stage 1: the input as `[T, B, I]`, checked.

    Raises:
        TypeError: x is not floating point.
        ValueError: x has the wrong rank, feature size or no time step.
    """
    x = jnp.asarray(x)
    check_floating("input", x)
    if x.ndim not in (2, 3):
        raise ValueError(
            f"input must be 3-D [T, B, I] ([B, T, I] with batch_first) or unbatched 2-D "
            f"[T, I], got shape {x.shape}"
        )
    if x.shape[-1] != config.input_size:
        raise ValueError(
            f"input.size(-1) must be equal to input_size={config.input_size}, got shape {x.shape}"
        )
    batched = x.ndim == 3
    given_shape = tuple(x.shape)
    if not batched:
        x = x[:, None]
    elif config.batch_first:
        x = jnp.swapaxes(x, 0, 1)
    if x.shape[0] == 0:
        raise ValueError(
            f"input must have at least one time step (T >= 1), got shape {given_shape}"
        )
    return _Inputs(x, batched, given_shape)


def _initial_state(
    hx: Any, config: LSTMConfig, inputs: _Inputs, dtype: Any
) -> tuple[list[Array], list[Array]]:
    """Stage 2: `(h0, c0)` as D·L arrays `[B, H_out]` and `[B, H]`, zeros when `hx` is None.

    Raises:
        TypeError: hx is not a pair of floating-point arrays.
        ValueError: a shape does not match `(D*L, B, H_out)` / `(D*L, B, H)`.
    """
    num_states = config.num_layers * config.num_directions
    h_shape = (num_states, inputs.batch, config.output_size)
    c_shape = (num_states, inputs.batch, config.hidden_size)
    sdtype = state_dtype(dtype)
    if hx is None:
        h0, c0 = jnp.zeros(h_shape, dtype), jnp.zeros(c_shape, sdtype)
    else:
        h0, c0 = split_state(hx, labels=("hx h_0", "hx c_0"))
        for label, value, shape, size in (("h_0", h0, h_shape, "H_out"), ("c_0", c0, c_shape, "H")):
            _check_state_shape(label, value, shape, size, inputs)
        if not inputs.batched:
            h0, c0 = h0[:, None], c0[:, None]
        h0, c0 = h0.astype(dtype), c0.astype(sdtype)
    return list(h0), list(c0)


def _check_state_shape(
    label: str, value: Array, shape: tuple[int, ...], size: str, inputs: _Inputs
) -> None:
    want = shape if inputs.batched else (shape[0], shape[2])
    dims = f"(D*L, B, {size})" if inputs.batched else f"(D*L, {size})"
    if value.ndim != len(want):
        kind = "3-D for batched input" if inputs.batched else "2-D for unbatched input"
        raise ValueError(
            f"hx {label} must be {kind} with shape {dims} = {want}, got shape {value.shape}"
        )
    if tuple(value.shape) != want:
        raise ValueError(
            f"hx {label} must have shape {dims} = {want} (input batch B={inputs.batch}), "
            f"got {value.shape}"
        )


def _lengths_mask(seq_lengths: Any, inputs: _Inputs) -> Array:
    """Stage 3: the `[T, B]` bool mask of valid steps, `t < length`.

    Raises:
        TypeError: seq_lengths is not integer.
        ValueError: its shape does not fit the input, or concrete values are outside [1, T].
    """
    lengths = jnp.asarray(seq_lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"seq_lengths must have an integer dtype, got {lengths.dtype}")
    if inputs.batched and lengths.shape != (inputs.batch,):
        raise ValueError(
            f"seq_lengths must have shape (B,) = {(inputs.batch,)}, one length per sequence of the "
            f"input, got {lengths.shape}"
        )
    if not inputs.batched and lengths.shape not in ((), (1,)):
        raise ValueError(
            f"seq_lengths for unbatched input must be a scalar, got shape {lengths.shape}"
        )
    if is_concrete(seq_lengths):
        # Read the values with numpy: under jit even a constant becomes a tracer once it has
        # gone through jnp (so `lengths.min()` could not be converted to an int).
        values = np.asarray(seq_lengths)
        lo, hi = int(values.min()), int(values.max())
        if lo < 1 or hi > inputs.steps:
            raise ValueError(
                f"seq_lengths must be in [1, T={inputs.steps}], got values from {lo} to {hi}"
            )
    return jnp.arange(inputs.steps)[:, None] < lengths.reshape(inputs.batch)[None, :]


def layer_weights(
    params: Mapping[str, Array], config: LSTMConfig, layer: int, dtype: Any
) -> tuple[CellWeights, ...]:
    """Stage 4: layer `layer`'s weights per direction, in the compute dtype.

    Returns:
        `(forward,)` or `(forward, backward)` `CellWeights`.
    """
    return tuple(
        CellWeights.from_params(params, param_names(config, layer, d), dtype)
        for d in range(config.num_directions)
    )


def _dropout(key: Array, x: Array, rate: float) -> Array:
    """Inverted dropout: zero each element with probability `rate`, scale the rest by 1/(1-rate)."""
    if rate >= 1.0:
        return jnp.zeros_like(x)
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype))


def _layout_out(
    out: Array, h_n: Array, c_n: Array, config: LSTMConfig, inputs: _Inputs
) -> tuple[Array, tuple[Array, Array]]:
    """Stage 6: `out` in the caller's layout; `h_n`, `c_n` `[D*L, B, *]` (unbatched `[D*L, *]`)."""
    if not inputs.batched:
        return out[:, 0], (h_n[:, 0], c_n[:, 0])
    if config.batch_first:
        out = jnp.swapaxes(out, 0, 1)
    return out, (h_n, c_n)
