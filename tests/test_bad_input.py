"""Bad input gets a clear error, never a wrong answer.

Every case is a row of a table: what is called, the exception type, and fragments that the
message must contain — the argument's name, the expected value and the actual value.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm import LSTMConfig

CFG = LSTMConfig(3, 5, num_layers=2)  # I=3, H=5, L=2, D=1
PARAMS = jaxlstm.init_params(jax.random.key(0), CFG)
X = jnp.ones((7, 2, 3))  # [T=7, B=2, I=3]


def expect(exc: type[Exception], fn, *fragments: str) -> None:
    """Asserts `fn()` raises `exc` with every fragment in its message."""
    with pytest.raises(exc) as info:
        fn()
    message = str(info.value)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"message {message!r} lacks {missing}"


# --- seq_lengths under jit --------------------------------------------------------------------


def test_concrete_seq_lengths_work_under_jit():
    """Regression: numpy seq_lengths closed over in a jitted function used to raise
    ConcretizationTypeError (the range check called int() on a traced min())."""
    lengths = np.array([4, 7])
    fn = jax.jit(lambda x: jaxlstm.lstm(PARAMS, x, config=CFG, seq_lengths=lengths))
    out, (h_n, _) = fn(X)
    eager, (h_eager, _) = jaxlstm.lstm(PARAMS, X, config=CFG, seq_lengths=lengths)
    np.testing.assert_allclose(out, eager, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(h_n, h_eager, rtol=1e-6, atol=1e-6)


def test_concrete_seq_lengths_still_checked_under_jit():
    lengths = np.array([0, 7])
    fn = jax.jit(lambda x: jaxlstm.lstm(PARAMS, x, config=CFG, seq_lengths=lengths))
    expect(ValueError, lambda: fn(X), "seq_lengths", "[1, T=7]", "from 0 to 7")
