"""Long sequences, extreme magnitudes, NaN, garbage in padding and bfloat16.

Every comparison is with `torch.nn.LSTM` on the same weights (tests/harness.py's problems and
runners), or with the float32 / clean-padding run of jaxlstm itself, with the tolerances of
`harness.TOLERANCES` (the entries "float32-long", "float32-extreme", "float32-outputs",
"float32-scaled" and "bfloat16" are documented there).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxlstm
from jaxlstm import LSTMConfig
from tests.harness import (
    TOLERANCES,
    assert_close,
    deviation,
    make_problem,
    precision,
    run_jax,
    run_torch,
)

# Every test here runs on both recurrence backends (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("backend")

pytest.importorskip("torch")


# --- T = 10,000 -------------------------------------------------------------------------------

# Largest allowed max|jax - torch| / max(1, max|torch|) over out, h_n, c_n and every gradient
# after 10,000 float32 steps (see TOLERANCES["float32-long"]).
LONG_TOLERANCE = TOLERANCES["float32-long"]["deviation"]


def test_ten_thousand_steps_forward_and_backward_match_torch():
    config = LSTMConfig(4, 8, bidirectional=True)
    problem = make_problem(
        config, batch=2, steps=10_000, with_hx=True, seq_lengths=None, dtype="float32", seed=0
    )  # no seq_lengths: torch's packed path takes ~150 s CPU at this length (5 s unpacked)
    expected = run_torch(problem)
    with precision("float32"):
        actual = run_jax(problem)
    errors = {name: deviation(actual[name], expected[name]) for name in expected}
    chex.assert_tree_all_finite(actual)
    worst = max(errors, key=errors.get)
    print(f"T=10,000 worst deviation: {errors[worst]:.3g} ({worst})")
    assert errors[worst] <= LONG_TOLERANCE, errors


# --- extreme magnitudes -----------------------------------------------------------------------

# Saturated gates: a pre-activation of size ~1e4 carries a float32 rounding error ~1e-3, so
# values may differ by that much where a gate sits near its transition (see
# TOLERANCES["float32-extreme"]). The point of these tests is the finiteness pattern.
EXTREME_TOLERANCE = TOLERANCES["float32-extreme"]["deviation"]

EXTREME_CASES = {
    "inputs-x1e4": dict(x_scale=1e4),
    "weights-x100": dict(param_scale=100.0),
    "inputs-x1e4-weights-x100": dict(x_scale=1e4, param_scale=100.0),
    "zeros": dict(x_scale=0.0, param_scale=0.0, hx_scale=0.0),
    "hx-1e6": dict(hx_scale=1e6),
    "hx-1e30": dict(hx_scale=1e30),
}


def _extreme_run(case: str) -> tuple[dict, dict]:
    """(torch, jaxlstm) outputs and gradients for one case of EXTREME_CASES."""
    config = LSTMConfig(3, 6, num_layers=2, bidirectional=True, proj_size=4)
    problem = make_problem(
        config,
        batch=3,
        steps=12,
        with_hx=True,
        seq_lengths=[12, 5, 9],
        dtype="float32",
        seed=1,
        **EXTREME_CASES[case],
    )
    expected = run_torch(problem)
    with precision("float32"):
        actual = run_jax(problem, fast_compile=True)
    return expected, actual


@pytest.mark.parametrize("case", EXTREME_CASES)
def test_extreme_magnitudes_stay_finite_where_torch_does(case):
    expected, actual = _extreme_run(case)
    for name in ("out", "h_n", "c_n"):
        assert np.isfinite(expected[name]).all(), f"torch itself is not finite for {name}"
        assert_close(actual[name], expected[name], "float32-extreme", name)
    for name in expected:
        # Gradients can overflow in torch too (hx of 1e30 times a weight); require jaxlstm to
        # be finite wherever torch is, and NaN exactly where torch is.
        torch_finite = np.isfinite(expected[name])
        chex.assert_tree_all_finite({f"{name} where torch is finite": actual[name][torch_finite]})
        np.testing.assert_array_equal(
            np.isnan(actual[name]), np.isnan(expected[name]), err_msg=name
        )
    finite = {name: np.isfinite(expected[name]) for name in expected}
    errors = {
        name: deviation(actual[name][finite[name]], expected[name][finite[name]])
        for name in expected
    }
    wrong = {name: f"{e:.3g}" for name, e in errors.items() if e > EXTREME_TOLERANCE}
    assert not wrong, f"gradients deviate from torch: {wrong}"


def test_saturated_cell_state_gradient_through_lstm_cell():
    """Regression (found by the hx ×1e30 case): two steps of the public cell, H = 1, float64.

    jax differentiates tanh(c) as t(1-y) + t(1-y)y; with |c| ~ 1e30 (y = ±1) and a huge
    cotangent t the two terms cancel only after the O(1) cotangent from c_{t+1} has been added
    to the first and rounded away. jaxlstm.cell.tanh's derivative is one product.

    Step 1: the forget and output gates are saturated open (bias 50), so c_1 = c_0 = -1e30 and
    h_1 = tanh(c_1) = -1 with tanh' = 0. Step 2: f_2 = σ(h_1) = σ(-1) is moderate, so
    dc_2/dc_0 = σ(f_1)·σ(f_2) = σ(-1) ≈ 0.269 (the path through h_1 contributes exactly 0);
    jax's tanh derivative lost it and gave 0.
    """
    with jax.enable_x64(True):
        x = jnp.zeros((1,))
        step1 = {
            "weight_ih": jnp.zeros((4, 1)),
            "weight_hh": jnp.zeros((4, 1)),
            "bias_ih": jnp.asarray([0.0, 50.0, 0.0, 50.0]),  # rows i, f, g, o
            "bias_hh": jnp.zeros(4),
        }
        step2 = step1 | {
            "weight_hh": jnp.asarray([[0.0], [1.0], [0.0], [0.0]]),
            "bias_ih": jnp.zeros(4),
        }

        def c2(c0):
            h1, c1 = jaxlstm.lstm_cell(step1, x, (jnp.zeros((1,)), c0))
            return jaxlstm.lstm_cell(step2, x, (h1, c1))[1][0]

        c0 = jnp.asarray([-1e30])
        np.testing.assert_allclose(jax.grad(c2)(c0)[0], jax.nn.sigmoid(-1.0), rtol=1e-12)


# --- NaN propagation --------------------------------------------------------------------------


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_nan_in_input_propagates_exactly_where_torch_does(with_lengths):
    config = LSTMConfig(3, 5, num_layers=2, bidirectional=True)
    lengths = [6, 5, 4] if with_lengths else None
    problem = make_problem(
        config, batch=3, steps=6, with_hx=False, seq_lengths=lengths, dtype="float32", seed=2
    )
    problem.x[2, 1, 0] = np.nan  # a valid step of sequence 1
    expected = run_torch(problem)
    with precision("float32"):
        actual = run_jax(problem, fast_compile=True)
    for name in ("out", "h_n", "c_n"):
        np.testing.assert_array_equal(
            np.isnan(actual[name]), np.isnan(expected[name]), err_msg=name
        )
        assert np.isnan(actual[name]).any(), f"NaN was masked away in {name}"
        finite = ~np.isnan(expected[name])
        assert_close(actual[name][finite], expected[name][finite], "float32-outputs", name)


# --- garbage in padding -----------------------------------------------------------------------

GARBAGE = {"nan": np.nan, "inf": np.inf, "huge": 1e30}
PADDING_CONFIGS = {
    "bidir-proj-2layers": LSTMConfig(3, 5, num_layers=2, bidirectional=True, proj_size=3),
    "batch-first-nobias": LSTMConfig(3, 5, bias=False, batch_first=True),
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
@pytest.mark.parametrize("config", PADDING_CONFIGS.values(), ids=PADDING_CONFIGS.keys())
def test_padding_garbage_reaches_no_output_state_or_gradient(config, garbage):
    lengths = [7, 2, 5]
    clean, dirty = (
        make_problem(
            config, batch=3, steps=7, with_hx=True, seq_lengths=lengths, dtype="float32", seed=3
        )
        for _ in range(2)
    )
    padded = np.arange(7)[:, None] >= np.array(lengths)[None, :]  # [T, B]
    if config.batch_first:
        padded = padded.T
    dirty.x[padded] = garbage
    with precision("float32"):
        want = run_jax(clean, fast_compile=True)
        got = run_jax(dirty, fast_compile=True)
    for name in want:
        chex.assert_tree_all_finite({f"{name} (padding {garbage})": got[name]})
        # Padded inputs are never read, so the results are not just close but identical.
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert np.all(got["grad x"][padded] == 0), "padded inputs must get zero gradient"
    expected = run_torch(dirty)  # torch never reads the padding of a packed sequence
    for name in expected:
        assert_close(got[name], expected[name], "float32-scaled", name)


def test_unbatched_padding_garbage_is_ignored():
    config = LSTMConfig(3, 4, bidirectional=True)
    clean, dirty = (
        make_problem(
            config, batch=None, steps=6, with_hx=True, seq_lengths=3, dtype="float32", seed=4
        )
        for _ in range(2)
    )
    dirty.x[3:] = np.nan
    with precision("float32"):
        want, got = run_jax(clean, fast_compile=True), run_jax(dirty, fast_compile=True)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# --- bfloat16 ---------------------------------------------------------------------------------

# bfloat16 keeps 8 significant bits in every matmul and in h; the cell state stays float32,
# so the rounding does not accumulate along the sequence (see TOLERANCES["bfloat16"]).
BF16_TOLERANCE = TOLERANCES["bfloat16"]["atol"]


def test_bfloat16_module_is_close_to_float32_and_keeps_the_cell_state_in_float32():
    config = LSTMConfig(6, 16, num_layers=2, bidirectional=True, batch_first=True)
    problem = make_problem(
        config,
        batch=4,
        steps=16,
        with_hx=False,
        seq_lengths=[16, 3, 9, 12],
        dtype="float32",
        seed=1,
    )
    ref = jaxlstm.nnx.from_params(problem.params, config)
    low = jaxlstm.nnx.from_params(problem.params, config, dtype=jnp.bfloat16)
    x, lengths = jnp.asarray(problem.x), jnp.asarray(problem.seq_lengths)
    run = nnx.jit(lambda model, x, lengths: model(x, seq_lengths=lengths))
    out, (h_n, c_n) = run(ref, x, lengths)
    out16, (h16, c16) = run(low, x, lengths)
    assert out16.dtype == jnp.bfloat16 and h16.dtype == jnp.bfloat16
    assert c16.dtype == jnp.float32, "the cell state must stay float32 under bf16 compute"
    for name, a, b in (("out", out16, out), ("h_n", h16, h_n), ("c_n", c16, c_n)):
        err = float(jnp.max(jnp.abs(a.astype(jnp.float32) - b)))
        print(f"bf16 {name}: max |bf16 - f32| = {err:.3g} (at most {BF16_TOLERANCE})")
        assert_close(a.astype(jnp.float32), b, "bfloat16", name)


def test_bfloat16_gradients_are_finite_and_close_to_float32():
    config = LSTMConfig(6, 16, num_layers=2)
    problem = make_problem(config, batch=4, steps=16, with_hx=False, dtype="float32", seed=0)
    params, x, _ = problem.jax_inputs()

    def loss(params, x):
        out, (_, c_n) = jaxlstm.lstm(params, x, config=config)
        return jnp.mean(out.astype(jnp.float32) ** 2) + jnp.mean(c_n**2)

    grad = jax.jit(jax.grad(loss))
    g32 = grad(params, x)
    g16 = grad(jax.tree.map(lambda p: p.astype(jnp.bfloat16), params), x.astype(jnp.bfloat16))
    for name in g32:
        assert g16[name].dtype == jnp.bfloat16
        a = np.asarray(g16[name].astype(jnp.float32))
        b = np.asarray(g32[name])
        chex.assert_tree_all_finite({name: a})
        relative = np.max(np.abs(a - b)) / np.max(np.abs(b))
        print(f"bf16 grad {name}: max |bf16 - f32| / max |f32| = {relative:.3g}")
        # Gradients are ~1e-2; bf16 keeps ~2-3 significant digits of each: a bound relative
        # to the largest gradient, not an equivalence tolerance.
        assert np.max(np.abs(a - b)) <= 0.05 * np.max(np.abs(b)) + 1e-4, name
