"""One LSTM step, with torch's equations and gate order (i, f, g, o).

    i  = σ(W_ii x + b_ii + W_hi h + b_hi)
    f  = σ(W_if x + b_if + W_hf h + b_hf)
    g  = tanh(W_ig x + b_ig + W_hg h + b_hg)
    o  = σ(W_io x + b_io + W_ho h + b_ho)
    c' = f ⊙ c + i ⊙ g
    h' = o ⊙ tanh(c')            (then h' = W_hr h' when proj_size > 0)

The rows of the `4H` axis of every weight and bias are the blocks [i; f; g; o].
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from jaxlstm._checks import check_floating, check_params, check_shape, split_state

__all__ = ["cell_update", "lstm_cell", "state_dtype"]

Array = jax.Array


def state_dtype(compute_dtype: jnp.dtype) -> jnp.dtype:
    """The dtype of the cell state c: at least float32, so bf16 compute keeps an f32 state."""
    return jnp.promote_types(compute_dtype, jnp.float32)


@jax.custom_jvp
def tanh(x: Array) -> Array:
    """`jnp.tanh` whose derivative is one product, `(1 - y)(1 + y)`, as torch computes it.

    jax differentiates tanh as `t (1 - y) + t (1 - y) y`: two terms that cancel when the cell
    state saturates (|y| = 1) under a huge cotangent t. In reverse mode both terms are added
    to c's cotangent one at a time, so an O(1) contribution from the next step (through the
    forget gate) is rounded away between them, and the gradient is wrong (by 25% with hx of
    1e30, in float32 and float64 alike). One product is exactly zero there and loses nothing.

    Args:
        x: any shape.

    Returns:
        tanh(x), same shape and dtype.
    """
    return jnp.tanh(x)


@tanh.defjvp
def _tanh_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    y = jnp.tanh(primals[0])
    return y, tangents[0] * ((1 - y) * (1 + y))


def split_gates(a: Array) -> tuple[Array, Array, Array, Array]:
    """The i, f, g, o blocks of the last axis of `[..., 4H]`, each `[..., H]`."""
    i, f, g, o = jnp.split(a, 4, axis=-1)
    return i, f, g, o


def activate_gates(gates: Array) -> Array:
    """σ on the i, f, o blocks and tanh on the g block of `[..., 4H]` pre-activations.

    Computed as one tanh over all 4H columns, using σ(x) = ½ tanh(x/2) + ½: XLA fuses it into
    a single elementwise loop, where four slices with separate σ/tanh ran as four, which on a
    CPU doubled the time of a recurrent step (`python -m experiments.benchmark`). The
    identity is exact up to float rounding (≤ 1 ulp of 1, as far as torch's σ is from it).
    """
    blocks = gates.shape[-1] // 4
    half = jnp.asarray(0.5, gates.dtype)
    one = jnp.asarray(1.0, gates.dtype)
    zero = jnp.asarray(0.0, gates.dtype)
    # Columns of blocks i, f, o: ½ tanh(x/2) + ½; block g: 1 · tanh(1 · x) + 0.
    scale = jnp.repeat(jnp.stack([half, half, one, half]), blocks)
    shift = jnp.repeat(jnp.stack([half, half, zero, half]), blocks)
    return tanh(gates * scale) * scale + shift


def state_update(acts: Array, c: Array) -> tuple[Array, Array]:
    """`c' = f c + i g`, `h = o tanh(c')` from activated gates `[..., 4H]` and `c` `[..., H]`.

    Returns:
        `(h, c')`, both `[..., H]` in the dtype of `acts` and `c` (not yet projected).
    """
    i, f, g, o = split_gates(acts)
    c_new = f * c + i * g
    return o * tanh(c_new), c_new


def cell_update(gates: Array, c: Array) -> tuple[Array, Array]:
    """The gate nonlinearities and state update of one step, the cell's equations in one place.

    Args:
        gates: `[..., 4H]` pre-activations `W_ih x + b_ih + W_hh h + b_hh`, blocks i, f, g, o.
        c: `[..., H]` previous cell state (its dtype is the state dtype).

    Returns:
        `(h, c')`: `h` `[..., H]` in the gates' dtype (not yet projected), `c'` `[..., H]` in
        c's dtype.
    """
    h, c_new = state_update(activate_gates(gates.astype(c.dtype)), c)
    return h.astype(gates.dtype), c_new


def lstm_cell(
    params: Mapping[str, Array],
    x: Array,
    hx: tuple[Array, Array] | None = None,
) -> tuple[Array, Array]:
    """One step of `torch.nn.LSTMCell` (or of one direction of one `nn.LSTM` layer).

    Args:
        params: `weight_ih` `(4H, I)`, `weight_hh` `(4H, H_out)`, optionally `bias_ih` and
            `bias_hh` `(4H,)` (both or neither) and `weight_hr` `(P, H)`.
        x: `[B, I]` or unbatched `[I]`.
        hx: `(h, c)` with `h` `[B, H_out]`, `c` `[B, H]` (unbatched: `[H_out]`, `[H]`), or None
            for zeros.

    Returns:
        `(h', c')` shaped like `hx`. `c'` is kept in at least float32.

    Raises:
        ValueError: a parameter is missing, unexpected or mis-shaped (all are listed), or a
            shape of x or hx does not match the parameters.
        TypeError: params is not a mapping, x is not floating point, or hx is not a pair.

    Example:
        >>> p = {"weight_ih": jnp.ones((8, 3)), "weight_hh": jnp.ones((8, 2))}
        >>> h, c = lstm_cell(p, jnp.zeros((5, 3)))
        >>> h.shape, c.shape
        ((5, 2), (5, 2))
    """
    _check_cell_params(params)
    w_ih, w_hh = params["weight_ih"], params["weight_hh"]
    w_hr = params.get("weight_hr")
    hidden = w_ih.shape[0] // 4
    out_size = w_hh.shape[1]
    x = jnp.asarray(x)
    check_floating("x", x)
    if x.ndim not in (1, 2):
        raise ValueError(f"x must be [B, I] or unbatched [I], got shape {x.shape}")
    check_shape("x", x, (*x.shape[:-1], w_ih.shape[1]))
    batch = x.shape[:-1]
    dtype = jnp.result_type(x, w_ih, w_hh)
    if hx is None:
        h = jnp.zeros((*batch, out_size), dtype)
        c = jnp.zeros((*batch, hidden), state_dtype(dtype))
    else:
        h, c = split_state(hx)
        check_shape("hx[0] (h)", h, (*batch, out_size))
        check_shape("hx[1] (c)", c, (*batch, hidden))
        h, c = h.astype(dtype), c.astype(state_dtype(dtype))
    gates = x.astype(dtype) @ w_ih.astype(dtype).T + h @ w_hh.astype(dtype).T
    if "bias_ih" in params:
        gates = gates + (params["bias_ih"] + params["bias_hh"]).astype(dtype)
    h_new, c_new = cell_update(gates, c)
    if w_hr is not None:
        h_new = h_new @ w_hr.astype(dtype).T
    return h_new, c_new


def _check_cell_params(params: Mapping[str, Array]) -> None:
    """Raises unless `params` are a cell's, with shapes consistent with `weight_ih`'s `(4H, I)`."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping {{torch name: array}}, got {type(params).__name__}")
    w_ih = params.get("weight_ih")
    if w_ih is None or jnp.ndim(w_ih) != 2 or jnp.shape(w_ih)[0] % 4:
        got = "missing" if w_ih is None else f"shape {tuple(jnp.shape(w_ih))}"
        raise ValueError(f"params['weight_ih'] must have shape (4H, I), got {got}")
    gates, input_size = jnp.shape(w_ih)
    hidden = gates // 4
    w_hr = params.get("weight_hr")
    proj = jnp.shape(w_hr)[0] if w_hr is not None and jnp.ndim(w_hr) == 2 else 0
    expected = {"weight_ih": (gates, input_size), "weight_hh": (gates, proj or hidden)}
    if "bias_ih" in params or "bias_hh" in params:
        expected |= {"bias_ih": (gates,), "bias_hh": (gates,)}
    if w_hr is not None:
        expected["weight_hr"] = (proj, hidden)
    check_params(params, expected)
