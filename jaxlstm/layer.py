"""One LSTM layer over time: one `lax.scan` per direction (or one for both), length masking.

The input projection `x @ W_ih^T` is computed for all T·B rows at once before the loop; only
`h @ W_hh^T`, the bias `b_ih + b_hh` and the gate update stay inside the scan (the bias there
joins the gate fusion, where a separate pass over the `[T, B, 4H]` projections cost up to 30%
of a CPU forward pass). A bidirectional layer
can run its two directions in the same scan (the backward one reads the time axis reversed),
so it takes T sequential steps, not 2T; that is the default on GPU only. On CPU (2 cores, a
bidirectional layer with T=128, B=32, I=512, H=256, six rounds of one process) one scan took
337-430 ms forward and 812-1037 ms fwd+bwd against 305-395 and 557-933 ms for two scans, one
direction each: XLA:CPU runs the ops of a loop body one after another, so merging the
directions removes no sequential work, only loop iterations.

Variable lengths follow torch's packed-sequence semantics without packing: at a step past a
sequence's end the carry is left unchanged and the output is 0. For the forward direction the
carry therefore freezes at the last valid step; for the backward direction (which walks time
from T-1 down to 0) it stays at h0/c0 until it reaches the sequence's own last element. Padded
inputs are replaced by 0 before anything touches them, so NaN or huge padding cannot reach a
valid output or any gradient.

Gradients come from a `jax.custom_vjp` of the recurrence (`custom_vjp=True`, the default):
its backward pass is one reverse scan whose step does only the elementwise gate algebra and
`dgates @ W_hh`, emitting the per-step gate gradients; `dW_hh`, `dW_ih`, `dx` (and `dW_hr`)
are then single matmuls over all T·B rows after the loop, and `db` one sum. Autodiff of the
plain scan instead accumulates `dW_hh` with one small matmul and one `[4H, H_out]` add per
step. The forward pass keeps the activated gates `[T, B, 4H]` for the backward one;
`remat=True` keeps only the states and the reverse step recomputes its gates from x and h
(two more small matmuls per step): on CPU 20-31% less scratch memory for a gradient,
16-36% more time.

Higher order: the backward pass is itself differentiable JAX, so every derivative that starts
with reverse mode works — `grad` of `grad`, Hessian-vector products as `jvp` of `grad`, and
`jax.hessian` (`jacfwd` of `jacrev`). Plain forward mode of the layer itself (`jax.jvp`,
`jax.jacfwd`, `jax.linearize`) raises JAX's `TypeError: can't apply forward-mode autodiff
(jvp) to a custom_vjp function`; `custom_vjp=False` (autodiff of the plain scan) supports it.

Stacked layers run one after another (T·L sequential steps), not as a wavefront (layer l at
step t beside layer l+1 at step t-1): a CPU prototype gained ~20% on the forward pass of the
small 2-layer `digits` config but nothing measurable on `medium`, and its fwd+bwd (autodiff)
was no faster than this layer-by-layer custom VJP, while it would move layer l+1's input
projection back inside the loop. A bidirectional layer could not be wavefronted anyway: its
backward direction needs the previous layer's whole output sequence before its first step.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm.cell import activate_gates, split_gates, state_update, tanh
from jaxlstm.options import ScanOptions

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


def lstm_layer(
    weights: LayerWeights,
    x: Array,
    h0: Array,
    c0: Array,
    *,
    mask: Array | None = None,
    scan: ScanOptions,
) -> tuple[Array, Array, Array]:
    """Runs one layer (one or two directions) over a time-major sequence.

    Args:
        weights: the layer's parameters stacked over D directions, in the compute dtype.
        x: `[T, B, I_k]` input, time-major.
        h0: `[D, B, H_out]` initial hidden state per direction.
        c0: `[D, B, H]` initial cell state per direction (state dtype, at least float32).
        mask: `[T, B]` bool, True at valid steps (`t < length`), or None if all are valid.
        scan: resolved options (`ScanOptions.resolve()`: no None left).

    Returns:
        `(out, h_n, c_n)`: `out` `[T, B, D*H_out]` ([forward, backward] on the feature axis,
        0 at masked steps), `h_n` `[D, B, H_out]`, `c_n` `[D, B, H]`.
    """
    num_dirs = weights.w_ih.shape[0]
    if mask is not None:
        x = jnp.where(mask[..., None], x, jnp.zeros((), x.dtype))
    # Everything per direction is kept in scan-time order: the backward direction reads its
    # input (and mask) flipped in time. Flipping x [T, B, I] is cheaper than flipping the
    # projections [T, B, 4H], and per-direction 2-D matmuls run at full speed on XLA:CPU
    # where a batched `[D, ...]` dot does not.
    xs = (x, jnp.flip(x, axis=0))[:num_dirs]
    masks = None
    if mask is not None:
        masks = tuple(m[..., None] for m in (mask, jnp.flip(mask, axis=0))[:num_dirs])
    recurrence = _recurrence_custom_vjp if scan.custom_vjp else _recurrence
    unroll, remat = scan.unroll, scan.remat
    if scan.fuse_directions or num_dirs == 1:
        hs, c_n = recurrence(xs, *weights, h0, c0, masks, unroll, remat)
    else:
        hs, c_n = (), ()
        for d in range(num_dirs):
            one = slice(d, d + 1)
            h_d, c_d = recurrence(
                xs[one], *(None if w is None else w[one] for w in weights),
                h0[one], c0[one], None if masks is None else masks[one], unroll, remat,
            )
            hs, c_n = hs + h_d, c_n + c_d
    # A masked step repeats the carry, so the last step's h is the final one.
    h_n = jnp.stack([h[-1] for h in hs])
    c_n = jnp.stack(c_n)
    ys = list(hs) if masks is None else [jnp.where(m, h, jnp.zeros((), h.dtype)) for m, h in zip(masks, hs, strict=True)]
    if num_dirs == 2:
        ys[1] = jnp.flip(ys[1], axis=0)
    out = ys[0] if num_dirs == 1 else jnp.concatenate(ys, axis=-1)
    return out, h_n, c_n


def _project(x: Array, w: Array) -> Array:
    """`[T, B, K] x [N, K] -> [T, B, N]` as one `[T·B, K] @ [K, N]` matmul.

    Used for the input projections `x @ W_ih^T` (without the bias, which is added inside the
    recurrence's step, where it joins the gate fusion for free: a separate pass over the
    `[T, B, 4H]` projections cost up to 30% of a forward pass on CPU, bidir config of
    `python -m experiments.benchmark`), and in the backward pass for `dx = dgates @ W_ih`.
    """
    steps, batch, features = x.shape
    return (x.reshape(steps * batch, features) @ w.T).reshape(steps, batch, w.shape[0])


def _activated_gates(x_part: Array, h: Array, w_hh_t: Array, bias: Array | None, state_dtype) -> Array:
    """σ(i), σ(f), tanh(g), σ(o) `[B, 4H]` of one step in the state dtype.

    Args:
        x_part: `[B, 4H]` the step's input projection `x_t @ W_ih^T` (without bias).
        h: `[B, H_out]` the hidden state entering the step.
        w_hh_t: `[H_out, 4H]` one direction's `W_hh^T`.
        bias: `[4H]` (`b_ih + b_hh`) or None.
        state_dtype: the cell state's dtype.
    """
    gates = x_part + h @ w_hh_t
    if bias is not None:
        gates = gates + bias
    return activate_gates(gates.astype(state_dtype))


def _forward_scan(xg, w_hh, bias, w_hr, h0, c0, masks, unroll, keep, remat=False):
    """The recurrence over scan time, one `lax.scan` for all directions.

    Args:
        xg: D arrays `[T, B, 4H]`: input projections (without bias), in scan-time order.
        w_hh: `[D, 4H, H_out]`.
        bias: `[D, 4H]` (`b_ih + b_hh`) or None.
        w_hr: `[D, P, H]` or None.
        h0: `[D, B, H_out]`.
        c0: `[D, B, H]` (its dtype is the state dtype).
        masks: D bool arrays `[T, B, 1]` in scan-time order, or None.
        unroll: scan steps per loop iteration.
        keep: what else to return per step for a backward pass: `"none"`, `"states"` (the
            cell states) or `"gates"` (the cell states and the activated gates).
        remat: wrap the step in `jax.checkpoint`, so that autodiff of this scan saves only
            the carries per step and recomputes the rest (for `custom_vjp=False`).

    Returns:
        `(hs, c_n, cs, acts)`: per direction, the hidden states after every step
        `[T, B, H_out]` (a masked step repeats the previous carry), the final cell state
        `[B, H]`, the cell states after every step `[T, B, H]` (None for `keep="none"`), and
        the activated gates σ(i), σ(f), tanh(g), σ(o) `[T, B, 4H]` in the state dtype (None
        unless `keep="gates"`).
    """
    num_dirs = w_hh.shape[0]
    # Transposed once outside the loop so every step is a plain `[B, K] @ [K, N]` matmul.
    w_hh_t = jnp.swapaxes(w_hh, 1, 2)
    w_hr_t = None if w_hr is None else jnp.swapaxes(w_hr, 1, 2)

    def cell(d, h, c, xg_t, m_t):
        acts = _activated_gates(xg_t, h, w_hh_t[d], None if bias is None else bias[d], c.dtype)
        h_new, c_new = state_update(acts, c)
        h_new = h_new.astype(h.dtype)
        if w_hr_t is not None:
            h_new = h_new @ w_hr_t[d]
        if m_t is not None:
            h_new = jnp.where(m_t, h_new, h)
            c_new = jnp.where(m_t, c_new, c)
        return h_new, c_new, acts

    def step(carry, inputs):
        xg_t, m_t = inputs
        new = [cell(d, carry[0][d], carry[1][d], xg_t[d], None if m_t is None else m_t[d]) for d in range(num_dirs)]
        hs, cs, acts = (tuple(v) for v in zip(*new, strict=True))
        return (hs, cs), (hs, None if keep == "none" else cs, acts if keep == "gates" else None)

    if remat:
        step = jax.checkpoint(step, prevent_cse=False)
    init = (tuple(h0), tuple(c0))
    (_, c_n), (hs, cs, acts) = jax.lax.scan(step, init, (xg, masks), unroll=unroll)
    return hs, c_n, cs, acts


def _recurrence(xs, w_ih, w_hh, bias, w_hr, h0, c0, masks, unroll, remat):
    """The layer's recurrence, differentiated by JAX's autodiff (any mode, any order).

    Args:
        xs: D arrays `[T, B, I_k]`, each direction's input in its scan-time order.
        w_ih: `[D, 4H, I_k]`.
        w_hh, bias, w_hr, h0, c0, masks, unroll: as for `_forward_scan`.
        remat: as for `_forward_scan`.

    Returns:
        `(hs, c_n)`: per direction, `[T, B, H_out]` and `[B, H]`.
    """
    xg = tuple(_project(x, w_ih[d]) for d, x in enumerate(xs))
    hs, c_n, _, _ = _forward_scan(xg, w_hh, bias, w_hr, h0, c0, masks, unroll, "none", remat)
    return hs, c_n


@functools.partial(jax.custom_vjp, nondiff_argnums=(8, 9))
def _recurrence_custom_vjp(xs, w_ih, w_hh, bias, w_hr, h0, c0, masks, unroll, remat):
    """`_recurrence` with a hand-written backward pass (see the module docstring).

    `remat=True` keeps no gates for the backward pass: each reverse step recomputes its own
    from the step's input and the stored states (two more small matmuls per step).
    """
    return _recurrence(xs, w_ih, w_hh, bias, w_hr, h0, c0, masks, unroll, False)


def _recurrence_fwd(xs, w_ih, w_hh, bias, w_hr, h0, c0, masks, unroll, remat):
    xg = tuple(_project(x, w_ih[d]) for d, x in enumerate(xs))
    hs, c_n, cs, acts = _forward_scan(
        xg, w_hh, bias, w_hr, h0, c0, masks, unroll, "states" if remat else "gates"
    )
    return (hs, c_n), (xs, w_ih, w_hh, bias, w_hr, h0, c0, masks, hs, cs, acts)


def _shift_in(first: Array, seq: Array) -> Array:
    """`[first, seq[0], ..., seq[T-2]]`: the carry entering each step."""
    return jnp.concatenate([first[None], seq[:-1]], axis=0)


def _matmul_tb(a: Array, b: Array) -> Array:
    """`[T, B, M], [T, B, N] -> [M, N]`: `Σ_{t,b} a ⊗ b` as one `[M, T·B] @ [T·B, N]` matmul."""
    return a.reshape(-1, a.shape[-1]).T @ b.reshape(-1, b.shape[-1])


def _recurrence_bwd(unroll, remat, residuals, cotangents):
    """Reverse scan emitting per-step gate gradients, then the weight gradients as matmuls.

    At a masked step the carry passes through unchanged, so its cotangent does too and the
    step's gate gradient is 0 (selected with `where`, so nothing non-finite can leak).
    """
    xs, w_ih, w_hh, bias, w_hr, h0, c0, masks, hs, cs, acts = residuals
    d_hs, d_c_n = cotangents
    num_dirs = w_hh.shape[0]
    dtype = w_hh.dtype
    h_prev = tuple(_shift_in(h0[d], hs[d]) for d in range(num_dirs))
    c_prev = tuple(_shift_in(c0[d], cs[d]) for d in range(num_dirs))
    w_ih_t, w_hh_t = jnp.swapaxes(w_ih, 1, 2), jnp.swapaxes(w_hh, 1, 2)

    def gates_of(d, x_t, h_prev_t, c_prev_t):
        """remat: the forward step's activated gates, recomputed from its inputs."""
        return _activated_gates(x_t @ w_ih_t[d], h_prev_t, w_hh_t[d], None if bias is None else bias[d], c_prev_t.dtype)

    # 1 on the g block's columns, 0 on the σ blocks' (see the derivative in cell_bwd).
    hidden = cs[0].shape[-1]
    tanh_block = jnp.repeat(jnp.asarray([0, 0, 1, 0], cs[0].dtype), hidden)

    def cell_bwd(d, dh, dc, acts_t, c_t, c_prev_t, m_t):
        i, f, g, o = split_gates(acts_t)
        tc = tanh(c_t)
        h_raw = None if w_hr is None else (o * tc).astype(dtype)  # the unprojected h, for dW_hr
        dh_raw = dh if w_hr is None else dh @ w_hr[d]
        dh_raw = dh_raw.astype(c_t.dtype)
        dc_new = dc + dh_raw * o * (1 - tc * tc)
        # d loss / d activated gate, times the activation's derivative in one 4H-wide
        # expression (a (1 - a) for σ, (1 + a)(1 - a) for tanh), which XLA fuses into one loop.
        d_acts = jnp.concatenate([dc_new * g, dc_new * c_prev_t, dc_new * i, dh_raw * tc], axis=-1)
        dgates = (d_acts * (acts_t + tanh_block) * (1 - acts_t)).astype(dtype)
        dh_prev = dgates @ w_hh[d]
        dc_prev = dc_new * f
        dh_emit = dh
        if m_t is not None:
            dgates = jnp.where(m_t, dgates, jnp.zeros((), dtype))
            dh_emit = jnp.where(m_t, dh, jnp.zeros((), dh.dtype))
            dh_prev = jnp.where(m_t, dh_prev, dh)
            dc_prev = jnp.where(m_t, dc_prev, dc)
        return dh_prev, dc_prev, dgates, (dh_emit, h_raw) if w_hr is not None else None

    def step(carry, inputs):
        d_hs_t, acts_t, x_t, h_prev_t, c_t, c_prev_t, m_t = inputs
        new = [
            cell_bwd(
                d, carry[0][d] + d_hs_t[d], carry[1][d],
                gates_of(d, x_t[d], h_prev_t[d], c_prev_t[d]) if acts_t is None else acts_t[d],
                c_t[d], c_prev_t[d], None if m_t is None else m_t[d],
            )
            for d in range(num_dirs)
        ]
        dh, dc, dgates, proj = (tuple(v) for v in zip(*new, strict=True))
        return (dh, dc), (dgates, proj)

    # The final cell state's cotangent enters at the last step (masked steps pass it through).
    # With remat the step recomputes its gates from x and h (two more small matmuls per
    # step) rather than all steps' at once, which would bring the `[T, B, 4H]` gates back.
    init = (tuple(jnp.zeros_like(h) for h in h0), tuple(d_c_n))
    inputs = (d_hs, acts, xs if remat else None, h_prev if remat else None, cs, c_prev, masks)
    (dh0, dc0), (dgates, proj) = jax.lax.scan(step, init, inputs, reverse=True, unroll=unroll)
    # The input and weight gradients as single matmuls over all T·B rows.
    d_xs = tuple(_project(dgates[d], w_ih[d].T) for d in range(num_dirs))
    d_w_ih = jnp.stack([_matmul_tb(dgates[d], xs[d]) for d in range(num_dirs)]).astype(w_ih.dtype)
    d_w_hh = jnp.stack([_matmul_tb(dgates[d], h_prev[d]) for d in range(num_dirs)]).astype(w_hh.dtype)
    d_bias = None
    if bias is not None:
        d_bias = jnp.stack([g.sum(axis=(0, 1), dtype=bias.dtype) for g in dgates]).astype(bias.dtype)
    d_w_hr = None
    if w_hr is not None:
        d_w_hr = jnp.stack([_matmul_tb(dh_proj, h_raw) for dh_proj, h_raw in proj]).astype(w_hr.dtype)
    return d_xs, d_w_ih, d_w_hh, d_bias, d_w_hr, jnp.stack(dh0), jnp.stack(dc0), None


_recurrence_custom_vjp.defvjp(_recurrence_fwd, _recurrence_bwd)
