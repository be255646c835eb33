"""One LSTM layer over time: `lax.scan` over `cell.step`, length masking, a hand-written VJP.

Per-direction values travel as tuples with one entry per direction (forward first): the
weights (`cell.CellWeights`), the initial and final states, and, in scan-time order, the
inputs and masks. The backward direction reads its input flipped in time.

Each step computes `x_t @ kernel + h @ recurrent_kernel + bias` (see `cell.step` for why the
input projection is not hoisted out of the loop) and the gate update. On a CPU the recurrence
runs in jaxlstm's native kernel instead (`options.runs_native` decides): there the input
projection of all steps is one XLA matmul and the kernel runs the steps, forward and backward.
A bidirectional layer can run its two directions in one scan (`ScanOptions.fuse_directions`),
or one scan each.

Variable lengths follow torch's packed-sequence semantics without packing: at a step past a
sequence's end the carry is left unchanged and the output is 0. For the forward direction the
carry therefore freezes at the last valid step; for the backward direction (which walks time
from T-1 down to 0) it stays at h0/c0 until it reaches the sequence's own last element. Padded
inputs are replaced by 0 before anything touches them, so NaN or huge padding cannot reach a
valid output or any gradient.

Gradients (`ScanOptions.custom_vjp`, the default): a `jax.custom_vjp` whose backward pass is one
reverse scan of `cell.step_bwd`, emitting per-step gate gradients; the gradients of the
kernels, the input and the projection are then single matmuls over all T·B rows, and the
bias's one sum. Autodiff of the plain scan would instead accumulate the recurrent kernel's
gradient with a small matmul and a `[H_out, 4H]` add per step. The forward pass keeps the
activated gates for the backward pass, or with `ScanOptions.remat` only the states, the
reverse step then recomputing its gates. The backward pass is itself differentiable, so
every derivative that starts with reverse mode works (`grad` of `grad`, `jvp` of `grad`,
`jax.hessian`). JAX cannot run forward mode (`jax.jvp`, `jax.jacfwd`, `jax.linearize`)
through a `custom_vjp`: when the layer is traced under forward mode it differentiates the
plain scan instead. A function compiled before forward mode reaches it (`jax.jvp(jax.jit(f))`)
was traced without autodiff and holds the custom VJP: it needs `ScanOptions(custom_vjp=False)`.

Stacked layers run one after another (T·L sequential steps), not as a wavefront (layer l at
step t beside layer l+1 at step t-1): a bidirectional layer's backward direction needs the
previous layer's whole output before its first step, and a wavefront would move each layer's
input projection back inside the loop.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm import native
from jaxlstm.cell import CellWeights, StepResult, split_gates, step, step_bwd
from jaxlstm.options import ScanOptions, runs_native

__all__ = ["lstm_layer"]

Array = jax.Array
PerDirection = tuple  # one entry per direction, forward first


def lstm_layer(
    weights: tuple[CellWeights, ...],
    x: Array,
    h0: tuple[Array, ...],
    c0: tuple[Array, ...],
    *,
    mask: Array | None,
    scan: ScanOptions,
) -> tuple[Array, tuple[Array, ...], tuple[Array, ...]]:
    """Runs one layer, one direction or two, over a time-major sequence.

    Args:
        weights: per direction, the weights in the compute dtype.
        x: `[T, B, I_k]` input, time-major.
        h0: per direction, `[B, H_out]` initial hidden state.
        c0: per direction, `[B, H]` initial cell state (state dtype, at least float32).
        mask: `[T, B]` bool, True at valid steps (`t < length`), or None if all are valid.
        scan: resolved options (`ScanOptions.resolve()`: no None left).

    Returns:
        `(out, h_n, c_n)`: `out` `[T, B, D*H_out]` ([forward, backward] on the feature axis,
        0 at masked steps); per direction `h_n` `[B, H_out]` and `c_n` `[B, H]`.
    """
    num_dirs = len(weights)
    if mask is not None:
        x = jnp.where(mask[..., None], x, jnp.zeros((), x.dtype))
    # Flipping x [T, B, I] is cheaper than flipping the projections [T, B, 4H].
    xs = (x, jnp.flip(x, axis=0))[:num_dirs]
    masks = (
        None if mask is None else (mask[..., None], jnp.flip(mask, axis=0)[..., None])[:num_dirs]
    )
    groups = [tuple(range(num_dirs))] if scan.fuse_directions else [(d,) for d in range(num_dirs)]
    h_by_dir: dict[int, Array] = {}
    c_by_dir: dict[int, Array] = {}
    for group in groups:
        x_g, w_g, h0_g, c0_g, m_g = (
            _pick(values, group) for values in (xs, weights, h0, c0, masks)
        )
        group_hs, group_c = _recurrence(x_g, w_g, h0_g, c0_g, m_g, scan)
        for d, h_d, c_d in zip(group, group_hs, group_c, strict=True):
            h_by_dir[d], c_by_dir[d] = h_d, c_d
    hs = [h_by_dir[d] for d in range(num_dirs)]
    c_n = [c_by_dir[d] for d in range(num_dirs)]
    # A masked step repeats the carry, so the last step's h is the final one.
    h_n = tuple(h[-1] for h in hs)
    ys = (
        hs
        if masks is None
        else [jnp.where(m, h, jnp.zeros((), h.dtype)) for m, h in zip(masks, hs, strict=True)]
    )
    if num_dirs == 2:
        ys[1] = jnp.flip(ys[1], axis=0)
    out = ys[0] if num_dirs == 1 else jnp.concatenate(ys, axis=-1)
    return out, h_n, tuple(c_n)


def _pick(values: tuple | None, directions: tuple[int, ...]) -> tuple | None:
    """The entries of a per-direction tuple for the given directions (None stays None)."""
    return None if values is None else tuple(values[d] for d in directions)


def _unroll(scan: ScanOptions) -> int:
    """`scan.unroll` of resolved options, which `ScanOptions.resolve()` has made an int."""
    if scan.unroll is None:
        raise ValueError("lstm_layer needs resolved scan options (ScanOptions.resolve())")
    return scan.unroll


def _recurrence(xs, weights, h0, c0, masks, scan: ScanOptions):
    """The recurrence of one scan: the native kernel, the custom VJP, or the plain scan.

    Which one runs is decided by `options.runs_native` (native) and here (the custom VJP
    unless told otherwise or under forward mode, which JAX runs through no `custom_vjp`).

    Returns:
        `(hs, c_n)`: per direction, `[T, B, H_out]` hidden states in scan-time order (a
        masked step repeats the carry) and the final `[B, H]` cell state.
    """
    forward_mode = _traced_for_forward_mode((xs, weights, h0, c0))
    if runs_native(scan, xs[0].dtype, forward_mode=forward_mode):
        return _recurrence_native(xs, weights, h0, c0, masks, scan)
    if scan.custom_vjp and not forward_mode:
        try:
            return _recurrence_custom_vjp(xs, weights, h0, c0, masks, scan)
        except TypeError as e:
            # Eager forward mode that the check above missed: JAX refuses it while tracing,
            # before anything is computed, so the plain scan can take over.
            if "forward-mode autodiff" not in str(e):
                raise
    return _recurrence_plain(xs, weights, h0, c0, masks, scan)


def _autodiff_traces(tree) -> list[tuple[str, bool]]:
    """`(kind, is_vjp)` of every autodiff trace among the tracers of `tree`.

    `jax.jvp`, `jax.jacfwd` and `jax.linearize` trace with a `JVPTrace` or a
    `LinearizeTrace` that is not building a VJP, reverse mode with a `LinearizeTrace` that
    is. These are JAX's internal names: if they change, nothing is recognised, and the
    callers' fallbacks fail with JAX's own error, never with a wrong result.
    """
    found = []
    for leaf in jax.tree.leaves(tree):
        trace = getattr(leaf, "_trace", None) if isinstance(leaf, jax.core.Tracer) else None
        kind = type(trace).__name__
        if kind in ("JVPTrace", "LinearizeTrace"):
            found.append((kind, kind == "LinearizeTrace" and getattr(trace, "is_vjp", True)))
    return found


def _traced_for_forward_mode(tree) -> bool:
    """Whether any array of `tree` is being traced by forward-mode autodiff.

    JAX runs no forward mode through a `custom_vjp`, and under `jax.jit` it reports that only
    when lowering, too late to switch. So the layer looks at its inputs' tracers while it is
    traced.
    """
    return any(not is_vjp for _, is_vjp in _autodiff_traces(tree))


def _differentiated(tree) -> bool:
    """Whether `tree` is being traced by any autodiff: inside a `custom_vjp`'s rules, a
    derivative of the derivative (`grad` of `grad`, `jax.hessian`), which the native kernel
    cannot give."""
    return bool(_autodiff_traces(tree))


def _project(x: Array, kernel: Array) -> Array:
    """`[T, B, K] @ [K, N] -> [T, B, N]` as one `[T·B, K] @ [K, N]` matmul."""
    steps, batch, features = x.shape
    return (x.reshape(steps * batch, features) @ kernel).reshape(steps, batch, kernel.shape[-1])


def _forward_scan(weights, xs, h0, c0, masks, scan: ScanOptions, *, for_backward: bool):
    """The recurrence over scan time, one `lax.scan` for the given directions.

    Args:
        weights: per direction, `CellWeights`.
        xs: per direction, `[T, B, I_k]` inputs in scan-time order.
        h0, c0: per direction, `[B, H_out]` and `[B, H]` (c0's dtype is the state dtype).
        masks: per direction, bool `[T, B, 1]` in scan-time order, or None.
        scan: unroll, and `remat` (with `for_backward`: keep no gates; without: wrap the step
            in `jax.checkpoint`, so that autodiff of this scan saves only the carries).
        for_backward: also return what the hand-written backward pass needs.

    Returns:
        `(hs, c_n, cs, kept)`: per direction, hidden states after every step `[T, B, H_out]`,
        the final cell state `[B, H]`, and with `for_backward` the cell states after every
        step `[T, B, H]` and (unless `scan.remat`) the pairs `(activated gates, tanh(c))`,
        each `[T, B, H]`, that the backward steps need; None where not kept.
    """
    keep_gates = for_backward and not scan.remat

    def masked_step(w: CellWeights, x_t, h, c, m_t) -> StepResult:
        new = step(w, x_t, h, c)
        if m_t is None:
            return new
        return new._replace(h=jnp.where(m_t, new.h, h), c=jnp.where(m_t, new.c, c))

    def body(carry, inputs):
        x_t, m_t = inputs
        new = [
            masked_step(w, x_t[d], carry[0][d], carry[1][d], None if m_t is None else m_t[d])
            for d, w in enumerate(weights)
        ]
        hs, cs = tuple(r.h for r in new), tuple(r.c for r in new)
        kept = (
            hs,
            cs if for_backward else None,
            tuple((r.gates, r.tanh_c) for r in new) if keep_gates else None,
        )
        return (hs, cs), kept

    if scan.remat and not for_backward:
        body = jax.checkpoint(body, prevent_cse=False)
    (_, c_n), (hs, cs, kept) = jax.lax.scan(
        body, (tuple(h0), tuple(c0)), (xs, masks), unroll=_unroll(scan)
    )
    return hs, c_n, cs, kept


def _recurrence_plain(xs, weights, h0, c0, masks, scan: ScanOptions):
    """The recurrence, differentiated by JAX's autodiff (any mode, any order)."""
    with jax.named_scope("recurrence"):
        hs, c_n, _, _ = _forward_scan(weights, xs, h0, c0, masks, scan, for_backward=False)
    return hs, c_n


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _recurrence_custom_vjp(xs, weights, h0, c0, masks, scan: ScanOptions):
    """`_recurrence_plain` with a hand-written backward pass (see the module docstring)."""
    return _recurrence_plain(xs, weights, h0, c0, masks, scan)


def _recurrence_fwd(xs, weights, h0, c0, masks, scan: ScanOptions):
    with jax.named_scope("recurrence"):
        hs, c_n, cs, kept = _forward_scan(weights, xs, h0, c0, masks, scan, for_backward=True)
    return (hs, c_n), (xs, weights, h0, c0, masks, hs, cs, kept)


def _shift_in(first: Array, seq: Array) -> Array:
    """`[first, seq[0], ..., seq[T-2]]`: the carry entering each step."""
    return jnp.concatenate([first[None], seq[:-1]], axis=0)


def _sum_tb(a: Array, b: Array) -> Array:
    """`[T, B, M], [T, B, N] -> [M, N]`: `Σ_{t,b} a ⊗ b` as one `[M, T·B] @ [T·B, N]` matmul."""
    return a.reshape(-1, a.shape[-1]).T @ b.reshape(-1, b.shape[-1])


def _reverse_scan(weights, xs, h_prev, c_prev, kept, masks, d_hs, d_c_n, scan: ScanOptions):
    """The reverse scan of `cell.step_bwd` over every direction of one scan.

    `kept` holds, per direction, the forward steps' `(gates, tanh(c))`, or is None with
    remat, when each reverse step recomputes them from its input and the stored states.

    At a masked step the carry passed through unchanged, so its cotangent does too and the
    step's gate gradient is 0 (selected with `where`, so nothing non-finite can leak).

    Returns:
        `(dh0, dc0, d_gates, projection_terms)`: per direction, the cotangents of h0 and c0,
        the gate gradients `[T, B, 4H]`, and with a projection the per-step pairs
        `(dh [T, B, P], h_raw [T, B, H])` whose products give its gradient (else None).
    """

    def one(w: CellWeights, dh, dc, x_t, kept_t, h_prev_t, c_prev_t, m_t):
        if kept_t is None:  # remat: the forward step's gates, recomputed from its inputs
            recomputed = step(w, x_t, h_prev_t, c_prev_t)
            kept_t = (recomputed.gates, recomputed.tanh_c)
        gates_t, tanh_c_t = kept_t
        g = step_bwd(w, gates_t, tanh_c_t, c_prev_t, dh, dc)
        d_gates, dh_prev, dc_prev, dh_emit = g.gates, g.h, g.c, dh
        if m_t is not None:
            d_gates = jnp.where(m_t, d_gates, jnp.zeros((), d_gates.dtype))
            dh_emit = jnp.where(m_t, dh, jnp.zeros((), dh.dtype))
            dh_prev = jnp.where(m_t, dh_prev, dh)
            dc_prev = jnp.where(m_t, dc_prev, dc)
        return dh_prev, dc_prev, d_gates, None if g.h_raw is None else (dh_emit, g.h_raw)

    def body(carry, inputs):
        d_hs_t, x_t, kept_t, h_prev_t, c_prev_t, m_t = inputs
        new = [
            one(
                w,
                carry[0][d] + d_hs_t[d],
                carry[1][d],
                None if x_t is None else x_t[d],
                None if kept_t is None else kept_t[d],
                h_prev_t[d],
                c_prev_t[d],
                None if m_t is None else m_t[d],
            )
            for d, w in enumerate(weights)
        ]
        dh, dc, d_gates, proj = (tuple(v) for v in zip(*new, strict=True))
        return (dh, dc), (d_gates, proj)

    # The final cell state's cotangent enters at the last step (masked steps pass it through).
    init = (tuple(jnp.zeros_like(h[0]) for h in h_prev), tuple(d_c_n))
    inputs = (d_hs, xs if scan.remat else None, kept, h_prev, c_prev, masks)
    (dh0, dc0), (d_gates, proj) = jax.lax.scan(
        body, init, inputs, reverse=True, unroll=_unroll(scan)
    )
    return dh0, dc0, d_gates, proj


def _recurrence_bwd(scan: ScanOptions, residuals, cotangents):
    """Reverse scan emitting per-step gate gradients, then the weight gradients as matmuls."""
    xs, weights, h0, c0, masks, hs, cs, kept = residuals
    d_hs, d_c_n = cotangents
    with jax.named_scope("recurrence_bwd"):
        h_prev = tuple(_shift_in(h, s) for h, s in zip(h0, hs, strict=True))
        c_prev = tuple(_shift_in(c, s) for c, s in zip(c0, cs, strict=True))
        dh0, dc0, d_gates, proj = _reverse_scan(
            weights, xs, h_prev, c_prev, kept, masks, d_hs, d_c_n, scan
        )
    d_xs, d_weights = _gradient_products(weights, xs, h0, hs, d_gates, proj)
    return d_xs, d_weights, dh0, dc0, None


def _recurrent_kernel_grad(h0: Array, hs: Array, d_gates: Array) -> Array:
    """`Σ_t h_{t-1}ᵀ d_gates_t` `[H_out, 4H]` with `h_{-1} = h0`, as `h0ᵀ g_0 + Σ_{t≥1}`: two
    products instead of one over a shifted copy of `hs` (`[T, B, H_out]` written again)."""
    rest = _sum_tb(hs[:-1], d_gates[1:]) if hs.shape[0] > 1 else 0
    return h0.T @ d_gates[0] + rest


def _gradient_products(weights, xs, h0, hs, d_gates, proj):
    """The input and weight gradients from the gate gradients, each one large matmul.

    Args:
        weights, xs: per direction, as given to the recurrence.
        h0: per direction, `[B, H_out]` the initial hidden state.
        hs: per direction, `[T, B, H_out]` the hidden state after every step.
        d_gates: per direction, `[T, B, 4H]` the gate gradients.
        proj: per direction, `(dh [T, B, P], h_raw [T, B, H])` with a projection, else None.

    Returns:
        `(d_xs, d_weights)`: per direction, `[T, B, I_k]` and `CellWeights` of gradients.
    """
    with jax.named_scope("gradient_products"):
        d_xs = tuple(_project(g, w.kernel.T) for g, w in zip(d_gates, weights, strict=True))
        d_weights = tuple(
            CellWeights(
                kernel=_sum_tb(x, g).astype(w.kernel.dtype),
                recurrent_kernel=_recurrent_kernel_grad(h_0, h, g).astype(w.recurrent_kernel.dtype),
                bias=None
                if w.bias is None
                else g.sum(axis=(0, 1), dtype=w.bias.dtype).astype(w.bias.dtype),
                projection=None
                if w.projection is None
                else _sum_tb(p[1], p[0]).astype(w.projection.dtype),
            )
            for w, x, h_0, h, g, p in zip(weights, xs, h0, hs, d_gates, proj, strict=True)
        )
    return d_xs, d_weights


_recurrence_custom_vjp.defvjp(_recurrence_fwd, _recurrence_bwd)


# --- the native CPU kernel ----------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _recurrence_native(xs, weights, h0, c0, masks, scan: ScanOptions):
    """`_recurrence_plain` run by the native kernel (`jaxlstm.native`), one call per direction.

    The input projection `x @ kernel` of all steps is one XLA matmul before the kernel; the
    kernel adds the bias and runs the steps. Its backward pass is the kernel's reverse
    recurrence, then the same gradient products as the XLA path's. Where the rules themselves
    are differentiated (`grad` of `grad`, `jax.hessian`), they run the XLA scans instead,
    which are differentiable.
    """
    hs, c_n = _native_forward(xs, weights, h0, c0, masks, keep=False)
    return hs, c_n


def _native_forward(xs, weights, h0, c0, masks, *, keep: bool) -> tuple[tuple[Array, ...], ...]:
    """`native.forward` for every direction, its outputs regrouped per output: `(hs, c_n)`,
    with `keep` `(hs, c_n, cs, gates, tanh_c)`, each a tuple with one entry per direction."""
    per_direction = [
        native.forward(
            _project(x, w.kernel), w.bias, *_kernel_weights(w), h, c, _time_batch(m), keep=keep
        )
        for x, w, h, c, m in zip(xs, weights, h0, c0, _per_direction(masks, len(xs)), strict=True)
    ]
    return tuple(zip(*per_direction, strict=True))


def _per_direction(masks, count: int) -> tuple:
    return (None,) * count if masks is None else masks


def _time_batch(mask: Array | None) -> Array | None:
    """A `[T, B, 1]` mask as the kernel's `[T, B]`."""
    return None if mask is None else mask[..., 0]


def _kernel_weights(w: CellWeights) -> tuple[Array, Array | None]:
    """`(W_hh [4H, H_out], W_hr [P, H] or None)`: torch's layout, the kernel's."""
    return w.recurrent_kernel.T, None if w.projection is None else w.projection.T


class _NativeResiduals(NamedTuple):
    """What the native forward keeps for its backward pass (per direction where a tuple)."""

    xs: tuple
    weights: tuple
    h0: tuple
    c0: tuple
    masks: tuple | None
    hs: tuple
    cs: tuple
    gates: tuple  # [T, B, 4H] activated
    tanh_c: tuple


def _recurrence_native_fwd(xs, weights, h0, c0, masks, scan: ScanOptions):
    if _differentiated((xs, weights, h0, c0)):
        return _recurrence_fwd(xs, weights, h0, c0, masks, scan)
    hs, c_n, cs, gates, tanh_c = _native_forward(xs, weights, h0, c0, masks, keep=True)
    residuals = _NativeResiduals(xs, weights, h0, c0, masks, hs, cs, gates, tanh_c)
    return (hs, c_n), residuals


def _recurrence_native_bwd(scan: ScanOptions, residuals, cotangents):
    if not isinstance(residuals, _NativeResiduals):  # the XLA forward ran: its backward too
        return _recurrence_bwd(scan, residuals, cotangents)
    r = residuals
    d_hs, d_c_n = cotangents
    if _differentiated((r, d_hs, d_c_n)):
        kept = tuple((split_gates(g), t) for g, t in zip(r.gates, r.tanh_c, strict=True))
        xla = (r.xs, r.weights, r.h0, r.c0, r.masks, r.hs, r.cs, kept)
        return _recurrence_bwd(scan, xla, cotangents)
    masks = _per_direction(r.masks, len(r.xs))
    d_gates, dh0, dc0, proj = [], [], [], []
    with jax.named_scope("recurrence_bwd"):
        for d, w in enumerate(r.weights):
            g, dh, dc, dh_emit = native.backward(
                *_kernel_weights(w),
                r.gates[d],
                r.tanh_c[d],
                r.cs[d],
                r.c0[d],
                _time_batch(masks[d]),
                d_hs[d],
                d_c_n[d],
            )
            d_gates.append(g)
            dh0.append(dh)
            dc0.append(dc)
            proj.append(None if dh_emit is None else (dh_emit, _h_raw(r.gates[d], r.tanh_c[d])))
    d_xs, d_weights = _gradient_products(r.weights, r.xs, r.h0, r.hs, d_gates, proj)
    return d_xs, d_weights, tuple(dh0), tuple(dc0), None


def _h_raw(gates: Array, tanh_c: Array) -> Array:
    """`[T, B, H]` the unprojected hidden states `o ⊙ tanh(c)` from `[T, B, 4H]` gates."""
    return split_gates(gates).o * tanh_c


_recurrence_native.defvjp(_recurrence_native_fwd, _recurrence_native_bwd)
