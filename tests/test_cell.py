"""jaxlstm.cell: lstm_cell against torch.nn.LSTMCell (jitted and not), the accuracy and the
derivatives of its float32 activations, derivatives against finite differences, and its
bad-input errors."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import jaxlstm
from jaxlstm import LSTMCellConfig, LSTMConfig
from jaxlstm.config import layer_names, param_names
from tests.harness import (
    assert_close,
    check_grads_rev2,
    expect,
    make_problem,
    output_names,
    precision,
    run_jax,
    run_torch,
)

# --- against torch.nn.LSTMCell, through the harness -------------------------------------------


def _cell_problem(dtype, bias=True, batched=True, with_hx=True, seed=0):
    return make_problem(
        LSTMCellConfig(10, 20, bias=bias),
        batch=3 if batched else None,
        with_hx=with_hx,
        dtype=dtype,
        seed=seed,
    )


def _assert_matches_torch(got, want, dtype):
    assert got.keys() == want.keys()
    for name in want:
        chex.assert_shape(got[name], want[name].shape)
        assert_close(got[name], want[name], dtype, name)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("with_hx", [True, False], ids=["hx", "nohx"])
def test_cell_matches_torch_with_grads(dtype, bias, batched, with_hx):
    """h', c' and the gradients of every parameter, x, h and c, op by op."""
    pytest.importorskip("torch")
    problem = _cell_problem(dtype, bias, batched, with_hx)
    want = run_torch(problem)
    got = run_jax(problem, jit=False)
    assert set(output_names(problem.config)) < set(got)
    _assert_matches_torch(got, want, dtype)


class CellMatchesTorchTest(chex.TestCase):
    """`lstm_cell` jitted and op by op against `torch.nn.LSTMCell`, outputs and gradients."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("float32-hx-batched-bias", "float32", True, True),
        ("float64-nohx-unbatched-nobias", "float64", False, False),
    )
    def test_lstm_cell_matches_torch(self, dtype, with_hx, batched):
        pytest.importorskip("torch")
        problem = _cell_problem(dtype, bias=batched, batched=batched, with_hx=with_hx, seed=1)
        want = run_torch(problem)
        with precision(dtype):
            got = run_jax(problem, self.variant(jaxlstm.lstm_cell), jit=False)
        _assert_matches_torch(got, want, dtype)


def test_cell_step_equals_one_step_lstm():
    """A cell's weights run through lstm() for T=1 give the cell's output, bit for bit.

    Both compiled: op by op, the cell's elementwise operations round differently from the
    fused loop body by an ulp for about half the draws of weights and inputs.
    """
    cell = LSTMCellConfig(4, 5)
    params, x, _ = make_problem(cell, batch=2, with_hx=False, dtype="float32", seed=3).jax_inputs()
    layer = {layer_names(cell)[k]: v for k, v in params.items()}
    h, c = jax.jit(jaxlstm.lstm_cell)(params, x)
    run = jax.jit(lambda p, x: jaxlstm.lstm(p, x, config=cell.as_lstm()))
    out, (h_n, c_n) = run(layer, x[None])
    np.testing.assert_array_equal(h, h_n[0])
    np.testing.assert_array_equal(c, c_n[0])
    np.testing.assert_array_equal(h, out[0])


# --- derivatives against finite differences (float64) ------------------------------------------


def _projected_cell_problem():
    """One step of a one-layer LSTM with a projection: lstm_cell with `weight_hr`."""
    config = LSTMConfig(3, 4, proj_size=2)
    p = make_problem(config, batch=2, steps=1, with_hx=True, dtype="float64", seed=0)
    roles = {name: role for role, name in param_names(config, 0, 0).items()}
    params = {roles[k]: v for k, v in p.params.items()}
    return params, p.x[0], p.hx[0][0], p.hx[1][0]


def _unbatched_cell_problem():
    p = make_problem(
        LSTMCellConfig(3, 4, bias=False), batch=None, with_hx=True, dtype="float64", seed=0
    )
    return p.params, p.x, *p.hx


CELL_CASES = {"bias-proj": _projected_cell_problem, "no-bias-unbatched": _unbatched_cell_problem}


@pytest.mark.parametrize("case", CELL_CASES.values(), ids=CELL_CASES.keys())
def test_lstm_cell_grads(case):
    """First and second order reverse mode against central differences."""
    with precision("float64"):
        params, x, h, c = jax.tree.map(jnp.asarray, case())

        def f(params, x, h, c):
            return jaxlstm.lstm_cell(params, x, (h, c))

        check_grads_rev2(f, (params, x, h, c))


# --- bad input: (call, exception, fragments naming argument, expected, got) --------------------

CELL = {"weight_ih": jnp.ones((20, 3)), "weight_hh": jnp.ones((20, 5))}  # I=3, H=5


def cell_call(x, hx=None, params=CELL):
    return lambda: jaxlstm.lstm_cell(params, x, hx)


CALL_CASES = {
    "cell x wrong I": (cell_call(jnp.ones((2, 4))), ValueError, "x", "(2, 3)", "got (2, 4)"),
    "cell x rank 3": (
        cell_call(jnp.ones((1, 2, 3))),
        ValueError,
        "x",
        "[B, I]",
        "got shape (1, 2, 3)",
    ),
    "cell x int": (
        cell_call(jnp.ones((2, 3), jnp.int32)),
        TypeError,
        "x",
        "floating-point",
        "got int32",
    ),
    "cell hx bare array": (
        cell_call(jnp.ones((2, 3)), jnp.zeros((2, 5))),
        TypeError,
        "hx",
        "tuple (h_0, c_0)",
        "got a bare ArrayImpl of shape (2, 5)",
    ),
    "cell hx batch mismatch": (
        cell_call(jnp.ones((2, 3)), (jnp.zeros((3, 5)), jnp.zeros((2, 5)))),
        ValueError,
        "hx[0] (h)",
        "(2, 5)",
        "got (3, 5)",
    ),
    "cell hx int": (
        cell_call(jnp.ones((2, 3)), (jnp.zeros((2, 5), jnp.int32), jnp.zeros((2, 5)))),
        TypeError,
        "hx[0] (h)",
        "floating-point",
        "got int32",
    ),
    "cell params missing weight_hh": (
        cell_call(jnp.ones((2, 3)), params={"weight_ih": CELL["weight_ih"]}),
        ValueError,
        "params",
        "missing keys ['weight_hh']",
    ),
    "cell params one bias, weight_hh mis-shaped": (
        cell_call(
            jnp.ones((2, 3)),
            params=CELL | {"weight_hh": jnp.ones((20, 4)), "bias_ih": jnp.ones(20)},
        ),
        ValueError,
        "params",
        "missing keys ['bias_hh']",
        "weight_hh: expected (20, 5), got (20, 4)",
    ),
    "cell params weight_ih not 4H rows": (
        cell_call(jnp.ones((2, 3)), params={"weight_ih": jnp.ones((7, 3))}),
        ValueError,
        "params['weight_ih']",
        "(4H, I)",
        "got shape (7, 3)",
    ),
    "cell params not a mapping": (
        cell_call(jnp.ones((2, 3)), params=[CELL["weight_ih"]]),
        TypeError,
        "params",
        "mapping",
        "got list",
    ),
}


@pytest.mark.parametrize("case", CALL_CASES.values(), ids=CALL_CASES.keys())
def test_call_argument_errors(case):
    fn, exc, *fragments = case
    expect(exc, fn, *fragments)


# --- float32 accuracy of the activations ---------------------------------------------------------


def _ulps(got, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in units of the float32 spacing at `exact`."""
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(np.asarray(got, np.float64) - exact) / spacing


def test_float32_tanh_and_gate_activations_are_within_about_an_ulp():
    from jaxlstm.cell import gate_activations, tanh

    x = np.concatenate(
        [np.linspace(-30, 30, 600_001), np.random.default_rng(0).standard_normal(200_000) * 0.5]
    ).astype(np.float32)
    exact_tanh = np.tanh(x.astype(np.float64))
    exact_sigmoid = 1 / (1 + np.exp(-x.astype(np.float64)))
    # H = 1: the columns are i, f, g, o
    columns = np.asarray(jax.jit(gate_activations)(np.repeat(x[:, None], 4, axis=1)))
    # tanh's worst case on a GPU: XLA:GPU's float32 exp is less accurate than XLA:CPU's
    # (an H200 gave max 1.78, mean 0.131 ulp); its sigmoids are held to CPU's bounds.
    tanh_worst = 1.5 if jax.default_backend() == "cpu" else 2.0
    misses = []
    for what, got, exact, worst, mean in (
        ("tanh", jax.jit(tanh)(x), exact_tanh, tanh_worst, 0.15),
        ("tanh of the g block", columns[:, 2], exact_tanh, tanh_worst, 0.15),
        ("sigmoid of the i block", columns[:, 0], exact_sigmoid, 2.5, 0.3),
        ("sigmoid of the o block", columns[:, 3], exact_sigmoid, 2.5, 0.3),
    ):
        ulps = _ulps(got, exact)
        if not (ulps.max() <= worst and ulps.mean() <= mean):
            misses.append(f"{what}: max {ulps.max():.2f}, mean {ulps.mean():.3f} ulp")
    assert not misses, "; ".join(misses)  # every block's numbers, not only the first miss
    # A nearly closed gate keeps its relative precision (1/2 tanh(x/2) + 1/2 had none left).
    closed = np.linspace(-80, -15, 1001, dtype=np.float32)
    got = np.asarray(jax.jit(gate_activations)(np.repeat(closed[:, None], 4, axis=1)))[:, 1]
    exact = 1 / (1 + np.exp(-closed.astype(np.float64)))
    assert np.max(np.abs(got - exact) / exact) < 4e-7


def test_gate_activation_derivatives_come_from_the_outputs():
    from jaxlstm.cell import gate_activations

    with precision("float64"):
        z = jax.random.normal(jax.random.key(0), (3, 8), jnp.float64) * 4  # H = 2
        jac = jax.vmap(jax.jacfwd(gate_activations))(z)
        a = gate_activations(z)
        g_block = np.repeat([0, 0, 1, 0], 2)
        want = np.where(g_block, (1 + a) * (1 - a), a * (1 - a))
        np.testing.assert_allclose(np.diagonal(jac, axis1=1, axis2=2), want, rtol=1e-12)
        assert np.count_nonzero(jac - jnp.stack([jnp.diag(w) for w in want])) == 0
        np.testing.assert_allclose(
            a, np.where(g_block, np.tanh(z), 1 / (1 + np.exp(-z))), rtol=1e-14
        )
