"""The functional `torch.nn.LSTM`: parameter init and the stacked, bidirectional forward pass.

`lstm(params, x, hx, config=...)` is a pure function of arrays: it works under `jax.jit`,
`jax.grad` and `jax.vmap`, and knows nothing of Flax, torch, optax or files.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm._checks import (
    check_float_dtype,
    check_floating,
    check_params,
    is_concrete,
    split_state,
)
from jaxlstm.cell import state_dtype
from jaxlstm.config import LSTMConfig, param_names
from jaxlstm.layer import LayerWeights, lstm_layer

__all__ = ["check_params", "init_params", "lstm"]

Array = jax.Array


def uniform_params(
    key: Array, shapes: Mapping[str, tuple[int, ...]], hidden_size: int, dtype: Any = jnp.float32
) -> dict[str, Array]:
    """Torch's default initialisation of LSTMs and LSTM cells: every array U(-1/√H, 1/√H).

    The arrays are consecutive pieces of one stream of U(-1, 1) numbers, scaled by 1/√H. The
    stream is drawn in chunks of a fixed size by one compiled function, so building a model
    compiles nothing new after the first: drawn eagerly, each array of a new shape compiled
    its own random kernel, and building a model took seconds on a CPU. The values do not
    depend on whether `key` is traced (e.g. under `nnx.eval_shape` or `jax.jit`).

    Args:
        key: a PRNG key.
        shapes: `{name: shape}`, filled in this order.
        hidden_size: H, which sets the bound.
        dtype: the arrays' dtype (drawn in at least float32, then cast).

    Returns:
        `{name: array}` in the order of `shapes`.

    Raises:
        TypeError: `dtype` is not a floating-point dtype.
    """
    dtype = check_float_dtype("dtype (param_dtype) of the parameters", dtype)
    draw = jnp.promote_types(dtype, jnp.float32)
    sizes = [math.prod(shape) for shape in shapes.values()]
    chunks = [_uniform_chunk(key, i, draw) for i in range(-(-sum(sizes) // _CHUNK))]
    traced = isinstance(key, jax.core.Tracer)
    # Concrete: slice and scale on the host (no compilation); traced: the same arithmetic in jnp.
    xp = jnp if traced else np
    stream = xp.concatenate([c if traced else np.asarray(c) for c in chunks] or [xp.zeros(0, draw)])
    bound = xp.asarray(1.0 / math.sqrt(hidden_size), draw)
    out, offset = {}, 0
    for (name, shape), size in zip(shapes.items(), sizes, strict=True):
        piece = (stream[offset : offset + size] * bound).reshape(shape)
        out[name] = jnp.asarray(piece.astype(dtype))
        offset += size
    return out


_CHUNK = 1 << 14  # numbers per compiled draw


@functools.partial(jax.jit, static_argnums=2)
def _uniform_chunk(key: Array, index: Array, dtype: Any) -> Array:
    """U(-1, 1) numbers `[_CHUNK]`, the `index`-th chunk of `key`'s stream."""
    return jax.random.uniform(jax.random.fold_in(key, index), (_CHUNK,), dtype, -1.0, 1.0)


def init_params(key: Array, config: LSTMConfig, dtype: Any = jnp.float32) -> dict[str, Array]:
    """Torch's default initialisation: every parameter drawn from U(-1/√H, 1/√H).

    Args:
        key: a PRNG key.
        config: the LSTM's configuration.
        dtype: the parameters' dtype.

    Returns:
        `{torch name: array}` with the shapes of `config.param_shapes()`, in torch's order.

    Example:
        >>> params = init_params(jax.random.key(0), LSTMConfig(3, 5))
        >>> params["weight_ih_l0"].shape
        (20, 3)
    """
    if not isinstance(config, LSTMConfig):
        raise TypeError(f"config must be a jaxlstm.LSTMConfig, got {type(config).__name__}")
    return uniform_params(key, config.param_shapes(), config.hidden_size, dtype)


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


def _check_key(key: Any) -> None:
    typed = isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ()
    raw = hasattr(key, "dtype") and key.dtype == jnp.uint32 and tuple(key.shape) == (2,)
    if not (typed or raw):
        got = f"{type(key).__name__} with dtype {key.dtype} and shape {key.shape}" if hasattr(key, "dtype") else repr(key)
        raise TypeError(f"dropout_key must be a PRNG key (jax.random.key(...)) or None, got {got}")


def _dropout(key: Array, x: Array, rate: float) -> Array:
    if rate >= 1.0:
        return jnp.zeros_like(x)
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype))


def default_unroll() -> int:
    """Scan steps per loop iteration used when `unroll=None`: 1 on CPU, 8 on GPU.

    CPU (2 cores, fp32, `experiments/benchmark.py` configs, ms medians from one process, two
    rounds each; the machine was shared, so only differences beyond ~20% mean anything):

    | config, mode    | unroll 1   | unroll 2   | unroll 4   | compile s (1 / 2 / 4) |
    |-----------------|------------|------------|------------|-----------------------|
    | digits fwd      | 21, 21     | 23, 22     | 25, 23     | 0.4 / 0.5 / 0.8       |
    | digits fwd+bwd  | 56, 61     | 75, 80     | 43, 104    | 1.0 / 2.2 / 3.0       |
    | bidir fwd       | 660, 633   | 606, 686   | 710, 604   | 0.8 / 0.8 / 1.1       |
    | bidir fwd+bwd   | 1529, 1738 | 1736, 1683 | 1508, 1577 | 2.3 / 3.8 / 5.9       |

    Unrolling gives no consistent gain there (XLA:CPU has no per-iteration launch cost to
    amortise; each step's matmul dominates) but multiplies compile time by up to 2.5, which
    on a loaded machine brought the 2-layer bidirectional fwd+bwd to 8-9 s at unroll 4
    against 4 s at 1. On GPU, unrolling amortises per-iteration kernel launches; 8 is the
    issue's measured baseline there (not re-measured in this CPU-only work).
    """
    return 8 if jax.default_backend() == "gpu" else 1


def lstm(
    params: Mapping[str, Array],
    x: Array,
    hx: tuple[Array, Array] | None = None,
    *,
    config: LSTMConfig,
    seq_lengths: Array | None = None,
    dropout_key: Array | None = None,
    unroll: int | None = None,
    custom_vjp: bool = True,
    remat: bool = False,
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
        unroll: scan steps per loop iteration; None picks a default for the backend.
        custom_vjp: differentiate with the layer's hand-written backward pass (True, the
            default; 1.1–1.7× faster fwd+bwd on CPU). It supports every derivative that
            starts with reverse mode: `jax.grad` of `jax.grad`, Hessian-vector products as
            `jax.jvp` of `jax.grad`, and `jax.hessian`. Plain forward mode of `lstm` itself
            (`jax.jvp`, `jax.jacfwd`, `jax.linearize`) raises `TypeError: can't apply
            forward-mode autodiff (jvp) to a custom_vjp function`; pass False for it, which
            differentiates the plain scan (every mode, slower reverse mode).
        remat: save less for the backward pass: per layer, direction, step and sequence the
            recurrence then keeps `H + H_out` values (its states) instead of `5H + H_out`
            (also the four activated gates), and the backward pass recomputes each step's
            gates: two more small matmuls per reverse step (custom VJP) or through
            `jax.checkpoint` (`custom_vjp=False`). Results are identical up to float
            rounding; on CPU it cut a gradient's scratch memory by 20-31% for 16-36% more
            time (see the README's Performance section).

    Returns:
        `(out, (h_n, c_n))`: `out` `[T, B, D*H_out]` (batch-first: `[B, T, D*H_out]`;
        unbatched: `[T, D*H_out]`), `h_n` `[D*L, B, H_out]`, `c_n` `[D*L, B, H]` ordered
        layer 0 forward, layer 0 backward, layer 1 forward, ... `c_n` is at least float32.

    Raises:
        ValueError: a shape does not match the configuration, or concrete seq_lengths are
            outside [1, T].
        TypeError: x is not floating point, hx is not a pair, seq_lengths is not integer,
            custom_vjp or remat is not a bool.

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
    if unroll is not None and (isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1):
        raise ValueError(f"unroll must be a positive int or None, got {unroll!r}")
    for name, flag in (("custom_vjp", custom_vjp), ("remat", remat)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    if dropout_key is not None:
        _check_key(dropout_key)
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
    unroll = default_unroll() if unroll is None else unroll
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
            weights, layer_input, h0[k], c0[k], mask=mask, unroll=unroll, custom_vjp=custom_vjp, remat=remat
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
