"""Gradients checked against finite differences in float64 (what torch's gradcheck does).

`jax.test_util.check_grads` with orders 1 and 2 in reverse mode, through the public
functions (`jaxlstm.lstm_cell`, `jaxlstm.lstm`), so whatever path `lstm` takes — a custom
VJP included — is the one checked. Plus the Hessian-vector product, both reverse-over-reverse
(must work) and forward-over-reverse (works, or raises an error that says why).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_vjp

import jaxlstm
from jaxlstm import LSTMConfig

# Central differences with step EPS in float64 have an error ~EPS² · (third derivative);
# the checks compare the directional derivatives with this tolerance.
EPS = 1e-4
TOL = 1e-6


# XLA's backend optimisation level 0: the programs are the same, only LLVM's optimisation of
# them is skipped, which halves the compile time that dominates these tiny float64 checks.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _compiled(fn, *example):
    return jax.jit(fn).lower(*example).compile(compiler_options=FAST_COMPILE)


def check_grads_rev2(f, args):
    """What `check_grads(f, args, order=2, modes=["rev"])` checks, with three compiled programs.

    The same two checks (`jax.test_util.check_vjp`) jax's order-2 reverse check makes: the
    VJP of `f` against central differences of `f`, then the VJP of
    `f_vjp(*args) = vjp(f, *args)(f(*args))` against central differences of `f_vjp`. Here
    `f`, its VJP and the VJP of `f_vjp` are each compiled once (op by op, or jitting `f`
    alone and letting jax differentiate through it, costs several times more on CPU).
    """
    args = tuple(args)
    f_c = _compiled(f, *args)
    out = f_c(*args)
    vjp_c = _compiled(lambda args, ct: jax.vjp(f, *args)[1](ct), args, out)

    def f_vjp(*args):
        return vjp_c(args, f_c(*args))

    def f_vjp_traceable(*args):
        out, vjp = jax.vjp(f, *args)
        return vjp(out)

    vjp2_c = _compiled(lambda args, ct: jax.vjp(f_vjp_traceable, *args)[1](ct), args, f_vjp(*args))
    tol = dict(eps=EPS, atol=TOL, rtol=TOL)
    check_vjp(f_c, lambda *a: (f_c(*a), lambda ct: vjp_c(a, ct)), args, err_msg="VJP", **tol)
    check_vjp(f_vjp, lambda *a: (f_vjp(*a), lambda ct: vjp2_c(a, ct)), args, err_msg="VJP of VJP", **tol)


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _uniform(rng, shape, scale=0.5):
    return jnp.asarray(rng.uniform(-scale, scale, shape))


CELL_CASES = {
    "bias-proj": dict(bias=True, proj=2),
    "no-bias-unbatched": dict(bias=False, proj=0, unbatched=True),
}


@pytest.mark.parametrize("case", CELL_CASES.values(), ids=CELL_CASES.keys())
def test_lstm_cell_grads(case):
    rng = np.random.default_rng(0)
    I, H, B = 3, 4, 2
    h_out = case["proj"] or H
    params = {"weight_ih": _uniform(rng, (4 * H, I)), "weight_hh": _uniform(rng, (4 * H, h_out))}
    if case["bias"]:
        params |= {"bias_ih": _uniform(rng, (4 * H,)), "bias_hh": _uniform(rng, (4 * H,))}
    if case["proj"]:
        params["weight_hr"] = _uniform(rng, (case["proj"], H))
    batch = () if case.get("unbatched") else (B,)
    x = _uniform(rng, (*batch, I), 1.0)
    h = _uniform(rng, (*batch, h_out), 1.0)
    c = _uniform(rng, (*batch, H), 1.0)

    def f(params, x, h, c):
        return jaxlstm.lstm_cell(params, x, (h, c))

    check_grads_rev2(f, (params, x, h, c))


# Each case costs ~5 CPU-seconds (three compilations, the second-order one dominating), so
# the cases are few and each covers several features: one layer without and with
# seq_lengths and proj_size, and the full stacked bidirectional LSTM.
LSTM_CASES = {
    "layer": dict(config=LSTMConfig(3, 4), lengths=None),
    "layer-proj-lengths": dict(config=LSTMConfig(3, 4, proj_size=2), lengths=[1, 5, 4]),
    "stacked-bidir-proj-lengths-nobias": dict(
        config=LSTMConfig(3, 4, num_layers=2, bidirectional=True, proj_size=3, batch_first=True, bias=False),
        lengths=[2, 5, 4],
    ),
}


def _lstm_problem(config: LSTMConfig, seed: int = 0):
    rng = np.random.default_rng(seed)
    T, B = 5, 3
    params = {k: _uniform(rng, s) for k, s in config.param_shapes().items()}
    x = _uniform(rng, (B, T, config.input_size) if config.batch_first else (T, B, config.input_size), 1.0)
    n = config.num_layers * config.num_directions
    h0 = _uniform(rng, (n, B, config.output_size), 1.0)
    c0 = _uniform(rng, (n, B, config.hidden_size), 1.0)
    return params, x, h0, c0


@pytest.mark.parametrize("case", LSTM_CASES.values(), ids=LSTM_CASES.keys())
def test_lstm_grads(case):
    config = case["config"]
    lengths = None if case["lengths"] is None else np.array(case["lengths"])
    params, x, h0, c0 = _lstm_problem(config)

    def f(params, x, h0, c0):
        return jaxlstm.lstm(params, x, (h0, c0), config=config, seq_lengths=lengths)

    check_grads_rev2(f, (params, x, h0, c0))


HVP_CONFIG = LSTMConfig(3, 4, num_layers=2, bidirectional=True, proj_size=2)
HVP_LENGTHS = np.array([5, 3, 4])


def _hvp_problem():
    params, x, h0, c0 = _lstm_problem(HVP_CONFIG, seed=1)
    rng = np.random.default_rng(2)
    weights = _uniform(rng, (5, 3, 2 * HVP_CONFIG.output_size), 1.0)

    def loss(params):
        out, (h_n, c_n) = jaxlstm.lstm(params, x, (h0, c0), config=HVP_CONFIG, seq_lengths=HVP_LENGTHS)
        return jnp.sum(jnp.tanh(out) * weights) + jnp.sum(h_n**2) + jnp.sum(jnp.sin(c_n))

    v = {k: _uniform(rng, a.shape, 1.0) for k, a in params.items()}
    grad = _compiled(jax.grad(loss), params)
    # The reference: a central difference of the (compiled, checked above) gradient along v.
    step = 1e-5
    plus = grad(jax.tree.map(lambda p, d: p + step * d, params, v))
    minus = grad(jax.tree.map(lambda p, d: p - step * d, params, v))
    expected = jax.tree.map(lambda a, b: (a - b) / (2 * step), plus, minus)
    return loss, params, v, expected


def _assert_tree_close(actual, expected):
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_hessian_vector_product_reverse_over_reverse():
    loss, params, v, expected = _hvp_problem()
    grad = jax.grad(loss)
    hvp = _compiled(jax.grad(lambda p: sum(jnp.vdot(g, v[k]) for k, g in grad(p).items())), params)
    _assert_tree_close(hvp(params), expected)


def test_hessian_vector_product_forward_over_reverse():
    """Forward-over-reverse, the cheap HVP, runs through the custom VJP and matches."""
    loss, params, v, expected = _hvp_problem()
    hvp = _compiled(lambda p: jax.jvp(jax.grad(loss), (p,), (v,))[1], params)(params)
    _assert_tree_close(hvp, expected)


# --- the checks themselves can fail -----------------------------------------------------------


@jax.custom_jvp
def _sin_wrong_first_order(x):
    return jnp.sin(x)


_sin_wrong_first_order.defjvp(lambda p, t: (jnp.sin(p[0]), 1.01 * jnp.cos(p[0]) * t[0]))


@jax.custom_jvp
def _sin_wrong_second_order(x):
    return jnp.sin(x)


# Right first derivative, but its own derivative is 0 instead of -sin.
_sin_wrong_second_order.defjvp(lambda p, t: (jnp.sin(p[0]), jnp.cos(jax.lax.stop_gradient(p[0])) * t[0]))


@pytest.mark.parametrize(
    "fn, which",
    [(_sin_wrong_first_order, "VJP"), (_sin_wrong_second_order, "VJP of VJP")],
    ids=["first-order", "second-order"],
)
def test_check_grads_rev2_detects_a_wrong_derivative(fn, which):
    x = jnp.linspace(0.1, 1.0, 4)
    check_grads_rev2(jnp.sin, (x,))  # the right one passes
    with pytest.raises(AssertionError, match=which):
        check_grads_rev2(fn, (x,))
