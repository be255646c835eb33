"""One LSTM layer over time: both directions in one `lax.scan`, with length masking.

The input projection `x @ W_ih^T + b_ih + b_hh` is computed for all T·B rows at once before
the loop; only `h @ W_hh^T` and the gate update stay inside the scan. A bidirectional layer
runs its two directions in the same scan (the backward one reads the time axis reversed), so
it takes T sequential steps, not 2T.

Variable lengths follow torch's packed-sequence semantics without packing: at a step past a
sequence's end the carry is left unchanged and the output is 0. For the forward direction the
carry therefore freezes at the last valid step; for the backward direction (which walks time
from T-1 down to 0) it stays at h0/c0 until it reaches the sequence's own last element. Padded
inputs are replaced by 0 before anything touches them, so NaN or huge padding cannot reach a
valid output or any gradient.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm.cell import cell_update

__all__ = ["LayerWeights", "lstm_layer"]

Array = jax.Array


class LayerWeights(NamedTuple):
    """One layer's parameters, stacked over its D directions (forward first).

    Attributes:
        w_ih: `[D, 4H, I_k]`.
        w_hh: `[D, 4H, H_out]`.
        bias: `[D, 4H]` (`b_ih + b_hh`), or None for `bias=False`.
        w_hr: `[D, P, H]`, or None without projection.
    """

    w_ih: Array
    w_hh: Array
    bias: Array | None
    w_hr: Array | None


def _reverse_backward(a: Array) -> Array:
    """Flips the time axis (0) of the backward direction (axis 1, index 1) of `[T, D, ...]`."""
    if a.shape[1] == 1:
        return a
    return jnp.stack([a[:, 0], jnp.flip(a[:, 1], axis=0)], axis=1)


def lstm_layer(
    weights: LayerWeights,
    x: Array,
    h0: Array,
    c0: Array,
    *,
    mask: Array | None = None,
    unroll: int = 1,
) -> tuple[Array, Array, Array]:
    """Runs one layer (one or two directions) over a time-major sequence.

    Args:
        weights: the layer's parameters stacked over D directions, in the compute dtype.
        x: `[T, B, I_k]` input, time-major.
        h0: `[D, B, H_out]` initial hidden state per direction.
        c0: `[D, B, H]` initial cell state per direction (state dtype, at least float32).
        mask: `[T, B]` bool, True at valid steps (`t < length`), or None if all are valid.
        unroll: scan steps per loop iteration (`jax.lax.scan`'s `unroll`).

    Returns:
        `(out, h_n, c_n)`: `out` `[T, B, D*H_out]` ([forward, backward] on the feature axis,
        0 at masked steps), `h_n` `[D, B, H_out]`, `c_n` `[D, B, H]`.
    """
    num_dirs = weights.w_ih.shape[0]
    if mask is not None:
        x = jnp.where(mask[..., None], x, jnp.zeros((), x.dtype))
    # [T, B, I] x [D, 4H, I] -> [T, D, B, 4H], one large matmul outside the loop.
    xg = jnp.einsum("tbi,dgi->tdbg", x, weights.w_ih)
    if weights.bias is not None:
        xg = xg + weights.bias[:, None, :]
    xg = _reverse_backward(xg)
    step_mask = None
    if mask is not None:
        step_mask = _reverse_backward(jnp.broadcast_to(mask[:, None, :], (mask.shape[0], num_dirs, mask.shape[1])))
        step_mask = step_mask[..., None]

    def step(carry, inputs):
        h, c = carry
        xg_t, m_t = inputs
        gates = xg_t + jnp.einsum("dbh,dgh->dbg", h, weights.w_hh)
        h_new, c_new = cell_update(gates, c)
        if weights.w_hr is not None:
            h_new = jnp.einsum("dbh,dph->dbp", h_new, weights.w_hr)
        if m_t is None:
            return (h_new, c_new), h_new
        y = jnp.where(m_t, h_new, jnp.zeros((), h_new.dtype))
        return (jnp.where(m_t, h_new, h), jnp.where(m_t, c_new, c)), y

    (h_n, c_n), ys = jax.lax.scan(step, (h0, c0), (xg, step_mask), unroll=unroll)
    ys = _reverse_backward(ys)  # [T, D, B, H_out], both directions in natural time order
    out = jnp.concatenate([ys[:, d] for d in range(num_dirs)], axis=-1)
    return out, h_n, c_n
