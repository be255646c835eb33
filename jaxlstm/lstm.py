"""The functional `torch.nn.LSTM`: parameter init and the stacked, bidirectional forward pass.

`lstm(params, x, hx, config=...)` is a pure function of arrays: it works under `jax.jit`,
`jax.grad` and `jax.vmap`, and knows nothing of Flax, torch, optax or files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm._checks import check_floating, check_key, check_params, is_concrete, split_state
from jaxlstm.cell import state_dtype
from jaxlstm.config import LSTMConfig, param_names
from jaxlstm.layer import LayerWeights, lstm_layer
from jaxlstm.options import ScanOptions

__all__ = ["lstm", "resolve_scan"]

Array = jax.Array


def resolve_scan(scan: ScanOptions | None) -> ScanOptions:
    """`scan` (None: the defaults) resolved against the current backend.

    Raises:
        TypeError: `scan` is not a `ScanOptions` or None.
    """
    if scan is None:
        scan = ScanOptions()
    if not isinstance(scan, ScanOptions):
        raise TypeError(f"scan must be a jaxlstm.ScanOptions or None, got {type(scan).__name__}")
    return scan.resolve()


def _check_seq_lengths(seq_lengths: Any, batch: int, steps: int, batched: bool) -> Array:
    lengths = jnp.asarray(seq_lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"seq_lengths must have an integer dtype, got {lengths.dtype}")
    expected = (batch,) if batched else ()
    if batched:
        if lengths.shape != expected:
            raise ValueError(
                f"seq_lengths must have shape (B,) = {expected}, one length per sequence of the "
                f"input, got {lengths.shape}"
            )
    elif lengths.shape not in ((), (1,)):
        raise ValueError(f"seq_lengths for unbatched input must be a scalar, got shape {lengths.shape}")
    if is_concrete(seq_lengths):
        # Read the values with numpy: under jit even a constant becomes a tracer once it has
        # gone through jnp (so `lengths.min()` could not be converted to an int).
        values = np.asarray(seq_lengths)
        lo, hi = int(values.min()), int(values.max())
        if lo < 1 or hi > steps:
            raise ValueError(
                f"seq_lengths must be in [1, T={steps}], got values from {lo} to {hi}"
            )
    return lengths.reshape(batch)


def _dropout(key: Array, x: Array, rate: float) -> Array:
    if rate >= 1.0:
        return jnp.zeros_like(x)
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype))


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
            (`jaxlstm.ScanOptions`: unroll, custom backward pass, remat, fused directions);
            None for the defaults. It changes speed and memory, not results.

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
        Traced `seq_lengths` (arguments of a `jax.jit`-ed, `vmap`-ed or differentiated
        function) have no values at trace time, so their range cannot be checked and an
        out-of-range length raises nothing: a length ≤ 0 gives a sequence with no valid step
        (`out` all 0, `h_n`/`c_n` equal to `h_0`/`c_0`, zero gradients) and a length > T acts
        as T. `jaxlstm.checked.lstm` checks the values inside the compiled program with
        `jax.experimental.checkify` and returns the error to throw.

    Example:
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
    x = jnp.asarray(x)
    given_shape = x.shape
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
    if not batched:
        x = x[:, None]
    elif config.batch_first:
        x = jnp.swapaxes(x, 0, 1)
    steps, batch = x.shape[0], x.shape[1]
    if steps == 0:
        raise ValueError(f"input must have at least one time step (T >= 1), got shape {given_shape}")
    num_states = config.num_layers * config.num_directions
    h_shape = (num_states, batch, config.output_size)
    c_shape = (num_states, batch, config.hidden_size)

    dtype = jnp.result_type(x, *params.values())
    sdtype = state_dtype(dtype)
    if hx is None:
        h0 = jnp.zeros(h_shape, dtype)
        c0 = jnp.zeros(c_shape, sdtype)
    else:
        h0, c0 = split_state(hx, labels=("hx h_0", "hx c_0"))
        for label, value, shape, size in (("h_0", h0, h_shape, "H_out"), ("c_0", c0, c_shape, "H")):
            want = shape if batched else (shape[0], shape[2])
            dims = f"(D*L, B, {size})" if batched else f"(D*L, {size})"
            if value.ndim != len(want):
                kind = "3-D for batched input" if batched else "2-D for unbatched input"
                raise ValueError(f"hx {label} must be {kind} with shape {dims} = {want}, got shape {value.shape}")
            if tuple(value.shape) != want:
                raise ValueError(
                    f"hx {label} must have shape {dims} = {want} (input batch B={batch}), got {value.shape}"
                )
        if not batched:
            h0, c0 = h0[:, None], c0[:, None]
        h0, c0 = h0.astype(dtype), c0.astype(sdtype)

    mask = None
    if seq_lengths is not None:
        lengths = _check_seq_lengths(seq_lengths, batch, steps, batched)
        mask = jnp.arange(steps)[:, None] < lengths[None, :]

    num_dirs = config.num_directions
    h0 = h0.reshape(config.num_layers, num_dirs, batch, config.output_size)
    c0 = c0.reshape(config.num_layers, num_dirs, batch, config.hidden_size)
    layer_input = x.astype(dtype)
    h_n, c_n = [], []
    for k in range(config.num_layers):
        names = [param_names(config, k, d) for d in range(num_dirs)]
        stack = lambda role, names=names: jnp.stack([params[n[role]].astype(dtype) for n in names])  # noqa: E731
        weights = LayerWeights(
            w_ih=stack("weight_ih"),
            w_hh=stack("weight_hh"),
            bias=(
                jnp.stack([(params[n["bias_ih"]] + params[n["bias_hh"]]).astype(dtype) for n in names])
                if config.bias
                else None
            ),
            w_hr=stack("weight_hr") if config.proj_size > 0 else None,
        )
        layer_input, h_k, c_k = lstm_layer(
            weights, layer_input, h0[k], c0[k], mask=mask, scan=scan
        )
        h_n.append(h_k)
        c_n.append(c_k)
        if k < config.num_layers - 1 and dropout_key is not None and config.dropout > 0:
            layer_input = _dropout(jax.random.fold_in(dropout_key, k), layer_input, config.dropout)

    out = layer_input
    h_n = jnp.concatenate(h_n, axis=0)
    c_n = jnp.concatenate(c_n, axis=0)
    if not batched:
        return out[:, 0], (h_n[:, 0], c_n[:, 0])
    if config.batch_first:
        out = jnp.swapaxes(out, 0, 1)
    return out, (h_n, c_n)
