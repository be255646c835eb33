"""tests/harness.py: its checks can fail (a check that cannot fail checks nothing)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm import LSTMCellConfig, LSTMConfig
from tests.harness import (
    TOLERANCES,
    assert_close,
    check_grads_rev2,
    make_problem,
    precision,
    state_shapes,
)


@jax.custom_jvp
def _sin_wrong_first_order(x):
    return jnp.sin(x)


_sin_wrong_first_order.defjvp(lambda p, t: (jnp.sin(p[0]), 1.01 * jnp.cos(p[0]) * t[0]))


@jax.custom_jvp
def _sin_wrong_second_order(x):
    return jnp.sin(x)


# Right first derivative, but its own derivative is 0 instead of -sin.
_sin_wrong_second_order.defjvp(
    lambda p, t: (jnp.sin(p[0]), jnp.cos(jax.lax.stop_gradient(p[0])) * t[0])
)


@pytest.mark.parametrize(
    "fn, which",
    [(_sin_wrong_first_order, "VJP"), (_sin_wrong_second_order, "VJP of VJP")],
    ids=["first-order", "second-order"],
)
def test_check_grads_rev2_detects_a_wrong_derivative(fn, which):
    with precision("float64"):
        x = jnp.linspace(0.1, 1.0, 4)
        check_grads_rev2(jnp.sin, (x,))  # the right one passes
        with pytest.raises(AssertionError, match=which):
            check_grads_rev2(fn, (x,))


def test_assert_close_fails_beyond_each_kind_of_tolerance():
    expected = {"a": np.array([100.0, 0.5])}
    # Elementwise: atol + rtol * |expected|.
    assert_close({"a": expected["a"] + [5e-4, 0.0]}, expected, "float32")
    with pytest.raises(AssertionError):
        assert_close({"a": expected["a"] + [0.0, 5e-4]}, expected, "float32")
    # Scaled: relative to max(1, max |expected|) of the whole array.
    limit = TOLERANCES["float32-scaled"]["deviation"]
    assert_close({"a": expected["a"] + [0.0, 0.9 * limit * 100]}, expected, "float32-scaled")
    with pytest.raises(AssertionError, match=r"\['a'\]: deviation"):
        assert_close({"a": expected["a"] + [0.0, 1.1 * limit * 100]}, expected, "float32-scaled")


def test_make_problem_shapes_for_an_lstm_and_a_cell():
    lstm = LSTMConfig(3, 5, num_layers=2, bidirectional=True, proj_size=2, batch_first=True)
    p = make_problem(lstm, batch=4, steps=6, with_hx=True, dtype="float64", seed=0)
    assert p.x.shape == (4, 6, 3) and p.g_out.shape == (4, 6, 4)
    assert [a.shape for a in p.hx] == [(4, 4, 2), (4, 4, 5)] == list(state_shapes(lstm, 4))
    assert {a.dtype for a in (p.x, *p.hx, p.g_out, p.g_h, p.g_c)} == {np.dtype("float64")}
    cell = make_problem(LSTMCellConfig(3, 5), batch=None, with_hx=True, dtype="float32", seed=0)
    assert cell.x.shape == (3,) and [a.shape for a in cell.hx] == [(5,), (5,)]
    assert cell.g_out is None and cell.g_h.shape == (5,)
    with pytest.raises(ValueError, match="one step"):
        make_problem(LSTMCellConfig(3, 5), batch=2, steps=4, with_hx=False, dtype="float32", seed=0)
