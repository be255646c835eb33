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

from jaxlstm._checks import check_floating, check_shape, split_state

__all__ = ["cell_update", "lstm_cell", "state_dtype"]

Array = jax.Array


def state_dtype(compute_dtype: jnp.dtype) -> jnp.dtype:
    """The dtype of the cell state c: at least float32, so bf16 compute keeps an f32 state."""
    return jnp.promote_types(compute_dtype, jnp.float32)


def cell_update(gates: Array, c: Array) -> tuple[Array, Array]:
    """The gate nonlinearities and state update, shared by the cell and the scanned layer.

    Args:
        gates: `[..., 4H]` pre-activations `W_ih x + b_ih + W_hh h + b_hh`, blocks i, f, g, o.
        c: `[..., H]` previous cell state (its dtype is the state dtype).

    Returns:
        `(h, c')`: `h` `[..., H]` in the gates' dtype (not yet projected), `c'` `[..., H]` in
        c's dtype.
    """
    i, f, g, o = jnp.split(gates.astype(c.dtype), 4, axis=-1)
    c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c_new)
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
        ValueError: a shape does not match the parameters.
        TypeError: x is not floating point, or hx is not a pair.

    Example:
        >>> p = {"weight_ih": jnp.ones((8, 3)), "weight_hh": jnp.ones((8, 2))}
        >>> h, c = lstm_cell(p, jnp.zeros((5, 3)))
        >>> h.shape, c.shape
        ((5, 2), (5, 2))
    """
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
