"""One LSTM step, forward and backward: torch's equations and gate order (i, f, g, o).

    i  = σ(W_ii x + b_ii + W_hi h + b_hi)
    f  = σ(W_if x + b_if + W_hf h + b_hf)
    g  = tanh(W_ig x + b_ig + W_hg h + b_hg)
    o  = σ(W_io x + b_io + W_ho h + b_ho)
    c' = f ⊙ c + i ⊙ g
    h' = o ⊙ tanh(c')            (then h' = W_hr h' when proj_size > 0)

The rows of the `4H` axis of every torch weight and bias are the blocks [i; f; g; o]. This
module is the one home of that math: `lstm_cell` (public, one step of `nn.LSTMCell`), the
layer's forward scan and its hand-written backward scan all call `step` and `step_bwd`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm._checks import check_floating, check_params, check_shape, split_state

__all__ = [
    "CellWeights",
    "gate_activations",
    "lstm_cell",
    "state_dtype",
    "step",
    "step_bwd",
    "tanh",
]

Array = jax.Array


def state_dtype(compute_dtype: jnp.dtype) -> jnp.dtype:
    """The dtype of the cell state c: at least float32, so bf16 compute keeps an f32 state."""
    return jnp.promote_types(compute_dtype, jnp.float32)


# tanh(x) = x + x·u·Q(u) with u = x², for |x| < _SMALL. Q's coefficients were fitted by least
# squares on Chebyshev nodes in float64; the fit's relative error (1.5e-8) is below float32's
# rounding, so the polynomial is as accurate as its float32 evaluation.
_SMALL = 0.625
_TANH_Q = (
    -0.333333283662796,
    0.13332782685756683,
    -0.05385247617959976,
    0.02100355364382267,
    -0.006104837171733379,
)


def _tanh_small(x: Array) -> Array:
    """tanh(x) for |x| < 0.625 as an odd polynomial (float32 accuracy)."""
    u = x * x
    q = jnp.asarray(_TANH_Q[-1], x.dtype)
    for coefficient in _TANH_Q[-2::-1]:
        q = q * u + jnp.asarray(coefficient, x.dtype)
    return x + x * (u * q)


def _sigmoid_of_minus_2abs(x: Array) -> Array:
    """σ(−2|x|) = e / (1 + e) with e = exp(−2|x|) ≤ 1: accurate to a few ulp relatively."""
    e = jnp.exp(-2 * jnp.abs(x))
    return e / (1 + e)


def _float32_or_narrower(x: Array) -> bool:
    return jnp.finfo(x.dtype).bits <= 32


def _tanh(x: Array) -> Array:
    """tanh with float32 accuracy close to correct rounding (see `tanh`)."""
    if not _float32_or_narrower(x):
        return jnp.tanh(x)
    sign = jnp.copysign(jnp.asarray(1, x.dtype), x)
    # sign · (1 − 2t) with t used once: XLA then keeps the whole expression in one fused loop
    # (a value with several users is computed by a kernel of its own and stored).
    return jnp.where(
        jnp.abs(x) < _SMALL, _tanh_small(x), sign - 2 * sign * _sigmoid_of_minus_2abs(x)
    )


@jax.custom_jvp
def tanh(x: Array) -> Array:
    """tanh, accurate in float32, with the derivative `(1 - y)(1 + y)` as one product.

    Accuracy: XLA:CPU's float32 `tanh` is a fast approximation, several ulp from the correctly
    rounded value where torch's is within half an ulp. An LSTM applies tanh to its cell state
    at every step and the difference accumulates: on trained networks, jaxlstm's float32
    outputs were further from a float64 reference than torch's. Here tanh is an odd
    polynomial near 0 and `1 − 2σ(−2|x|)` elsewhere (one `exp`, one division), within about
    one and a half ulp (tests/test_cell.py holds the bounds; the README the measurements).
    float64 uses `jnp.tanh`.

    Derivative: jax differentiates tanh as `t (1 - y) + t (1 - y) y`: two terms that cancel
    when the cell state saturates (|y| = 1) under a huge cotangent t. In reverse mode both
    terms are added to c's cotangent one at a time, so an O(1) contribution from the next
    step (through the forget gate) is rounded away between them, and the gradient is wrong.
    One product is exactly zero there and loses nothing.

    Args:
        x: any shape.

    Returns:
        tanh(x), same shape and dtype.
    """
    return _tanh(x)


@tanh.defjvp
def _tanh_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    y = _tanh(primals[0])
    return y, tangents[0] * ((1 - y) * (1 + y))


def _g_block(gates: Array) -> Array:
    """`[4H]` of the gates' dtype: 1 on the g block's columns, 0 on the σ blocks' (i, f, o)."""
    blocks = gates.shape[-1] // 4
    return jnp.repeat(jnp.asarray([0, 0, 1, 0], gates.dtype), blocks)


def _gate_activations(gates: Array) -> Array:
    is_g = _g_block(gates).astype(bool)
    if not _float32_or_narrower(gates):
        return jnp.where(is_g, jnp.tanh(gates), jax.nn.sigmoid(gates))
    one, zero = jnp.asarray(1, gates.dtype), jnp.asarray(0, gates.dtype)
    # σ(z) = ½ + ½ tanh(z/2): every block is a tanh of y = z/2 (σ) or y = z (g).
    y = gates * jnp.where(is_g, one, jnp.asarray(0.5, gates.dtype))
    p = _tanh_small(y)
    near_zero = jnp.where(is_g, p, 0.5 + 0.5 * p)
    # Elsewhere every block is a + b·t with t = σ(−2|y|): tanh is sign·(1 − 2t); σ is 1 − t
    # above 0 (one rounding near 1) and t itself below, which keeps its relative precision
    # for a nearly closed gate. t has one user, so XLA keeps all of it in one fused loop.
    sign = jnp.copysign(one, y)
    a = jnp.where(is_g, sign, jnp.where(y > 0, one, zero))
    b = jnp.where(is_g, -2 * sign, jnp.where(y > 0, -one, one))
    return jnp.where(jnp.abs(y) < _SMALL, near_zero, a + b * _sigmoid_of_minus_2abs(y))


@jax.custom_jvp
def gate_activations(gates: Array) -> Array:
    """σ on the i, f, o blocks and tanh on the g block of `[..., 4H]` pre-activations.

    One elementwise expression over all 4H columns with one `exp` and one division per
    element, which XLA fuses into a single loop (four slices with their own σ or tanh ran as
    four). Accuracy matters here as in `tanh`: a trained network's forget gate can sit near
    0 or 1 against a cell state in the hundreds, so an error of a few ulp in σ becomes an
    absolute error of ~|c|·1e-7 in c at every step. In float32, σ is `½ + ½ tanh(z/2)` near
    0 (the polynomial of `tanh`), `1 − σ(−z)` above (one rounding near 1) and `e / (1 + e)`
    with `e = exp(z)` below, which keeps its relative precision for nearly closed gates; tanh
    of the g block is `tanh`'s. float64 uses `jax.nn.sigmoid` and `jnp.tanh`.

    Args:
        gates: `[..., 4H]` pre-activations, blocks i, f, g, o.

    Returns:
        `[..., 4H]` activated gates σ(i), σ(f), tanh(g), σ(o), same dtype.
    """
    return _gate_activations(gates)


@gate_activations.defjvp
def _gate_activations_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    acts = _gate_activations(primals[0])
    return acts, tangents[0] * gate_derivatives(acts)


def gate_derivatives(acts: Array) -> Array:
    """`[..., 4H]` derivatives of `gate_activations` at its outputs `acts`.

    a(1 − a) for σ and (1 + a)(1 − a) for tanh, as one 4H-wide expression.
    """
    return (acts + _g_block(acts)) * (1 - acts)


class Gates(NamedTuple):
    """The four activated gates of a step, each `[B, H]`: σ(i), σ(f), tanh(g), σ(o)."""

    i: Array
    f: Array
    g: Array
    o: Array


def split_gates(a: Array) -> Gates:
    """The i, f, g, o blocks of the last axis of `[..., 4H]`, each `[..., H]`."""
    return Gates(*jnp.split(a, 4, axis=-1))


class CellWeights(NamedTuple):
    """The weights of one cell (one direction of one layer), in the matmul layout `(in, out)`.

    Torch stores `weight_ih` as `(4H, I)`; a step computes `x @ weight_ih^T`. Holding the
    transposes once, per call and outside the time loop, makes every product of the step a
    plain `[B, in] @ [in, out]`.

    Attributes:
        kernel: `[I, 4H]`, torch's `weight_ih` transposed.
        recurrent_kernel: `[H_out, 4H]`, torch's `weight_hh` transposed.
        bias: `[4H]`, `bias_ih + bias_hh`, or None without bias.
        projection: `[H, P]`, torch's `weight_hr` transposed, or None without projection.
    """

    kernel: Array
    recurrent_kernel: Array
    bias: Array | None
    projection: Array | None

    @classmethod
    def from_params(
        cls,
        params: Mapping[str, Array],
        names: Mapping[str, str] | None = None,
        dtype: jnp.dtype | None = None,
    ) -> CellWeights:
        """A cell's weights from torch-named parameters.

        Args:
            params: `{torch name: array}`.
            names: role -> name, e.g. `{"weight_ih": "weight_ih_l1_reverse", ...}` from
                `jaxlstm.config.param_names`; None when the names are the roles (a cell's).
            dtype: cast every array to it (the compute dtype); None keeps theirs.

        Returns:
            The weights; a differentiable function of `params`.
        """
        names = names if names is not None else {role: role for role in params}
        cast = (lambda a: a) if dtype is None else (lambda a: a.astype(dtype))
        bias = None
        if "bias_ih" in names:
            bias = cast(params[names["bias_ih"]] + params[names["bias_hh"]])
        projection = cast(params[names["weight_hr"]]).T if "weight_hr" in names else None
        return cls(
            cast(params[names["weight_ih"]]).T, cast(params[names["weight_hh"]]).T, bias, projection
        )


class StepResult(NamedTuple):
    """What one forward step computes.

    Attributes:
        h: `[B, H_out]` the new hidden state (projected when there is a projection), in
            the compute dtype.
        c: `[B, H]` the new cell state, in the state dtype.
        gates: the activated gates, in the state dtype, each `[B, H]` (the backward pass
            reads them as four arrays: kernels reading column slices of one `[B, 4H]`
            array stacked over time compile without vector instructions on XLA:CPU).
        tanh_c: `[B, H]` tanh(c'), in the state dtype (kept for the backward pass, which
            would otherwise compute it again).
    """

    h: Array
    c: Array
    gates: Gates
    tanh_c: Array


def step(w: CellWeights, x: Array, h: Array, c: Array) -> StepResult:
    """One forward step.

    The gate pre-activations are `x @ kernel + h @ recurrent_kernel + bias`, both products
    inside the step. Computing `x @ kernel` for all steps before the loop instead (one large
    matmul) left each step a slice of that product to add, and XLA:CPU compiles the
    elementwise kernels that read such a slice without vector instructions; computed here,
    they read matmul outputs. One matmul over `[x, h]` would be faster still for small
    inputs, but it sums the two products in another order and measured less accurate than
    torch in float32 on trained networks.

    Args:
        w: the cell's weights.
        x: `[B, I]` the step's input, in the compute dtype.
        h: `[B, H_out]` the hidden state entering the step.
        c: `[B, H]` the cell state entering the step (its dtype is the state dtype).

    Returns:
        `StepResult(h', c', gates, tanh(c'))`.
    """
    gates = x @ w.kernel + h @ w.recurrent_kernel
    if w.bias is not None:
        gates = gates + w.bias
    acts = split_gates(gate_activations(gates.astype(c.dtype)))
    i, f, g, o = acts
    c_new = f * c + i * g
    tanh_c = tanh(c_new)
    h_new = (o * tanh_c).astype(h.dtype)
    if w.projection is not None:
        h_new = h_new @ w.projection
    return StepResult(h_new, c_new, acts, tanh_c)


class StepGrads(NamedTuple):
    """What one backward step computes.

    Attributes:
        gates: `[B, 4H]` the cotangent of the gate pre-activations, in the compute dtype
            (the weight, bias and input gradients are products of these over all steps).
        h: `[B, H_out]` the cotangent of the hidden state that entered the step.
        c: `[B, H]` the cotangent of the cell state that entered the step.
        h_raw: `[B, H]` the unprojected hidden state `o ⊙ tanh(c')` (for the projection's
            gradient `Σ h_raw^T dh`), or None without projection.
    """

    gates: Array
    h: Array
    c: Array
    h_raw: Array | None


def step_bwd(
    w: CellWeights, gates: Gates, tanh_c: Array, c_prev: Array, dh: Array, dc: Array
) -> StepGrads:
    """The backward of `step`: cotangents of its inputs from cotangents of its outputs.

    Args:
        w: the cell's weights.
        gates: the step's activated gates (`StepResult.gates`).
        tanh_c: `[B, H]` tanh of the cell state the step produced (`StepResult.tanh_c`).
        c_prev: `[B, H]` the cell state that entered the step.
        dh: `[B, H_out]` the cotangent of the step's output h (from the output at this step
            and from the next step), in the compute dtype.
        dc: `[B, H]` the cotangent of `c_new` from the next step, in the state dtype.

    Returns:
        `StepGrads(gates, h, c, h_raw)`.
    """
    dtype = dh.dtype
    i, f, g, o = gates
    tc = tanh_c
    h_raw = None
    dh_raw = dh
    if w.projection is not None:
        h_raw = (o * tc).astype(dtype)
        dh_raw = dh @ w.projection.T
    dh_raw = dh_raw.astype(tanh_c.dtype)
    dc_total = dc + dh_raw * o * (1 - tc * tc)
    # Per block: d loss / d activated gate times the activation's derivative (σ' = a(1 − a),
    # tanh' = (1 + a)(1 − a)), then the four side by side for the matmuls.
    d_gates = jnp.concatenate(
        [
            dc_total * g * (i * (1 - i)),
            dc_total * c_prev * (f * (1 - f)),
            dc_total * i * ((1 + g) * (1 - g)),
            dh_raw * tc * (o * (1 - o)),
        ],
        axis=-1,
    ).astype(dtype)
    return StepGrads(d_gates, d_gates @ w.recurrent_kernel.T, dc_total * f, h_raw)


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

    Examples:
        >>> p = {"weight_ih": jnp.ones((8, 3)), "weight_hh": jnp.ones((8, 2))}
        >>> h, c = lstm_cell(p, jnp.zeros((5, 3)))
        >>> h.shape, c.shape
        ((5, 2), (5, 2))
    """
    _check_cell_params(params)
    hidden, out_size = params["weight_ih"].shape[0] // 4, params["weight_hh"].shape[1]
    x = jnp.asarray(x)
    check_floating("x", x)
    if x.ndim not in (1, 2):
        raise ValueError(f"x must be [B, I] or unbatched [I], got shape {x.shape}")
    check_shape("x", x, (*x.shape[:-1], params["weight_ih"].shape[1]))
    batch = x.shape[:-1]
    dtype = jnp.result_type(x, *params.values())
    if hx is None:
        h = jnp.zeros((*batch, out_size), dtype)
        c = jnp.zeros((*batch, hidden), state_dtype(dtype))
    else:
        h, c = split_state(hx)
        check_shape("hx[0] (h)", h, (*batch, out_size))
        check_shape("hx[1] (c)", c, (*batch, hidden))
        h, c = h.astype(dtype), c.astype(state_dtype(dtype))
    w = CellWeights.from_params(params, dtype=dtype)
    result = step(w, x.astype(dtype), h, c)
    return result.h, result.c


def _check_cell_params(params: Mapping[str, Array]) -> None:
    """Raises unless `params` are a cell's, with shapes consistent with `weight_ih`'s `(4H, I)`."""
    if not isinstance(params, Mapping):
        raise TypeError(
            f"params must be a mapping {{torch name: array}}, got {type(params).__name__}"
        )
    w_ih = params.get("weight_ih")
    if w_ih is None or jnp.ndim(w_ih) != 2 or jnp.shape(w_ih)[0] % 4:
        got = "missing" if w_ih is None else f"shape {tuple(jnp.shape(w_ih))}"
        raise ValueError(f"params['weight_ih'] must have shape (4H, I), got {got}")
    gates, input_size = jnp.shape(w_ih)
    hidden = gates // 4
    w_hr = params.get("weight_hr")
    proj = jnp.shape(w_hr)[0] if w_hr is not None and jnp.ndim(w_hr) == 2 else 0
    expected: dict[str, tuple[int, ...]] = {
        "weight_ih": (gates, input_size),
        "weight_hh": (gates, proj or hidden),
    }
    if "bias_ih" in params or "bias_hh" in params:
        expected |= {"bias_ih": (gates,), "bias_hh": (gates,)}
    if w_hr is not None:
        expected["weight_hr"] = (proj, hidden)
    check_params(params, expected)
