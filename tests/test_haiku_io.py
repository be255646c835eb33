"""jaxlstm.haiku_io: importers and exporters for Haiku's LSTMs, checked against Haiku itself."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm.config import LSTMConfig
from tests.harness import assert_close, precision, random_lstm

IN, H, T, B = 3, 5, 6, 4


def _randomize(tree, seed):
    """Random values everywhere (Haiku initialises biases to zero: test them too)."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [0.5 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(treedef, new)


def _x(seed=0, dtype=jnp.float32):
    """A time-major input `[T, B, I]`, Haiku's default layout."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal((T, B, IN)), dtype)


def _haiku_unroll(hk, layers, x, state):
    def f(x, state):
        core = hk.DeepRNN([hk.LSTM(H) for _ in range(layers)]) if layers > 1 else hk.LSTM(H)
        return hk.dynamic_unroll(core, x, state)

    return hk.without_apply_rng(hk.transform(f))


@pytest.mark.parametrize(
    ("layers", "dtype"),
    [(1, "float64"), (3, "float32")],
    ids=["hk.LSTM-float64", "hk.DeepRNN-float32"],
)
def test_from_haiku_matches_haiku(layers, dtype):
    hk = pytest.importorskip("haiku")
    with precision(dtype):
        _check_from_haiku(hk, layers, dtype)


def _check_from_haiku(hk, layers, dtype):
    jdtype = jnp.dtype(dtype)
    x = _x(dtype=jdtype)
    rng = np.random.default_rng(4)
    states = [
        hk.LSTMState(*(jnp.asarray(rng.standard_normal((B, H)), jdtype) for _ in range(2)))
        for _ in range(layers)
    ]
    state = states[0] if layers == 1 else tuple(states)
    f = _haiku_unroll(hk, layers, x, state)
    params = _randomize(f.init(jax.random.key(0), x, state), seed=5)
    assert params["lstm/linear"]["w"].dtype == jdtype
    want, final = f.apply(params, x, state)
    model = jaxlstm.from_haiku(params)
    assert (model.num_layers, model.input_size, model.hidden_size, model.batch_first) == (
        layers,
        IN,
        H,
        False,
    )
    got, (h_n, c_n) = model(x, jaxlstm.haiku_io.hx_from_haiku(state))
    want_h, want_c = jaxlstm.haiku_io.hx_from_haiku(final)
    # The +1 folded into the bias rounds differently from Haiku's `f + 1`: 1e-5 / 1e-10.
    assert_close(got, want, dtype, "out")
    assert_close(h_n, want_h, dtype, "h_n")
    assert_close(c_n, want_c, dtype, "c_n")


def test_to_haiku_runs_like_jaxlstm_and_picks_lstms_among_other_linears():
    hk = pytest.importorskip("haiku")
    model = random_lstm(LSTMConfig(IN, H, num_layers=2), 2)
    x = _x()
    want, (want_h, want_c) = model(x)
    params = jaxlstm.to_haiku(model)
    assert set(params) == {"lstm/linear", "lstm_1/linear"}
    state = tuple(hk.LSTMState(jnp.zeros((B, H)), jnp.zeros((B, H))) for _ in range(2))
    got, final = _haiku_unroll(hk, 2, x, state).apply(params, x, state)
    assert_close(got, want, "float32", "out")
    h_n, c_n = jaxlstm.haiku_io.hx_from_haiku(final)
    assert_close(h_n, want_h, "float32", "h_n")
    assert_close(c_n, want_c, "float32", "c_n")
    # Haiku's numbering orders layers (lstm_10 after lstm_2); a readout linear is ignored.
    many = {
        f"lstm_{k}/linear" if k else "lstm/linear": p
        for k, p in enumerate([params["lstm/linear"]] + [params["lstm_1/linear"]] * 10)
    }
    many = dict(sorted(many.items()))
    many["linear"] = {"w": jnp.zeros((H, 2)), "b": jnp.zeros(2)}
    many["mlp/~/linear"] = {"w": jnp.zeros((H + 7, 4 * (H + 1))), "b": jnp.zeros(4 * (H + 1))}
    with pytest.raises(ValueError, match="hidden_size"):
        jaxlstm.from_haiku(many)
    deep = jaxlstm.from_haiku(many, hidden_size=H)
    assert deep.num_layers == 11
    np.testing.assert_array_equal(
        np.asarray(deep.params["weight_ih_l0"]), np.asarray(model.params["weight_ih_l0"])
    )


def test_haiku_errors_say_what_cannot_be_held():
    with pytest.raises(ValueError, match="bidirectional"):
        jaxlstm.to_haiku(random_lstm(LSTMConfig(IN, H, bidirectional=True), 0))
    with pytest.raises(ValueError, match="no projection"):
        jaxlstm.to_haiku(random_lstm(LSTMConfig(IN, H, proj_size=2), 0))
    with pytest.raises(TypeError, match="params must be a Haiku parameter dict"):
        jaxlstm.from_haiku([np.zeros((8, 20))])
    with pytest.raises(ValueError, match="hidden_size"):
        jaxlstm.from_haiku({}, hidden_size=0)
    with pytest.raises(ValueError, match=r"no hk\.LSTM parameters"):
        jaxlstm.from_haiku({"linear": {"w": np.zeros((3, 8)), "b": np.zeros(8)}})
    skip = {
        "lstm/linear": {"w": np.zeros((IN + H, 4 * H)), "b": np.zeros(4 * H)},
        "lstm_1/linear": {"w": np.zeros((IN + 2 * H, 4 * H)), "b": np.zeros(4 * H)},
    }
    with pytest.raises(ValueError, match="skip connections"):
        jaxlstm.from_haiku(skip)
    # No bias: exported as Haiku's b = -1 on the forget block, which hk.LSTM's +1 cancels.
    params = jaxlstm.to_haiku(random_lstm(LSTMConfig(IN, H, bias=False), 0))
    b = np.asarray(params["lstm/linear"]["b"])
    np.testing.assert_array_equal(b[2 * H : 3 * H], -np.ones(H))
    np.testing.assert_array_equal(np.delete(b, np.s_[2 * H : 3 * H]), np.zeros(3 * H))
