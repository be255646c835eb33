"""The functional core: config, init, the scan against the Python loop, jit/grad/vmap, dropout."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxlstm
from jaxlstm import LSTMConfig
from tests.harness import assert_close, reference_lstm

CONFIGS = {
    "plain": LSTMConfig(3, 5),
    "L2-bi": LSTMConfig(3, 5, num_layers=2, bidirectional=True),
    "L3-proj-bf": LSTMConfig(3, 5, num_layers=3, proj_size=2, batch_first=True),
    "L2-bi-proj-nobias": LSTMConfig(3, 5, num_layers=2, bidirectional=True, proj_size=4, bias=False),
}


def _inputs(config, key=0, T=6, B=4):
    k1, k2, k3, k4 = jax.random.split(jax.random.key(key), 4)
    params = jaxlstm.init_params(k1, config)
    x = jax.random.normal(k2, (B, T, config.input_size) if config.batch_first else (T, B, config.input_size))
    n = config.num_layers * config.num_directions
    hx = (jax.random.normal(k3, (n, B, config.output_size)), jax.random.normal(k4, (n, B, config.hidden_size)))
    return params, x, hx


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("lengths", [None, [6, 1, 3, 6]], ids=["full", "lengths"])
def test_scan_equals_python_loop_over_cell(name, lengths):
    config = CONFIGS[name]
    params, x, hx = _inputs(config)
    seq = None if lengths is None else np.array(lengths)
    out, (h_n, c_n) = jaxlstm.lstm(params, x, hx, config=config, seq_lengths=seq)
    r_out, (r_h, r_c) = reference_lstm(params, x, hx, config=config, seq_lengths=seq)
    assert_close(out, r_out, what="out")
    assert_close(h_n, r_h, what="h_n")
    assert_close(c_n, r_c, what="c_n")


def test_padded_outputs_are_exactly_zero():
    config = CONFIGS["L2-bi"]
    params, x, hx = _inputs(config)
    lengths = np.array([6, 1, 3, 6])
    out, _ = jaxlstm.lstm(params, x, hx, config=config, seq_lengths=lengths)
    for b, n in enumerate(lengths):
        assert np.all(np.asarray(out[n:, b]) == 0.0)
        assert np.all(np.asarray(out[:n, b]) != 0.0)


def test_jit_equals_eager_and_does_not_retrace():
    config = CONFIGS["L2-bi"]
    params, x, hx = _inputs(config)
    traces = []

    def f(params, x, hx, lengths):
        traces.append(1)
        return jaxlstm.lstm(params, x, hx, config=config, seq_lengths=lengths)

    jf = jax.jit(f)
    lengths = jnp.array([6, 2, 3, 1])
    eager = f(params, x, hx, lengths)
    first = jf(params, x, hx, lengths)
    second = jf(params, jnp.flip(x, 0), hx, jnp.array([1, 2, 3, 4]))
    assert len(traces) == 2, "the second jitted call with the same shapes retraced"
    chex.assert_trees_all_close(eager, first, atol=1e-6, rtol=1e-6)
    assert second[0].shape == first[0].shape


def test_vmap_over_batches_of_sequences():
    config = CONFIGS["plain"]
    params, x, _ = _inputs(config)
    xs = jnp.stack([x, 2 * x, -x])  # [3, T, B, I]
    vmapped = jax.vmap(lambda x: jaxlstm.lstm(params, x, config=config)[0])(xs)
    looped = jnp.stack([jaxlstm.lstm(params, xi, config=config)[0] for xi in xs])
    assert_close(vmapped, looped)


def test_vmap_over_params():
    """An ensemble: vmap over independently initialised parameter sets."""
    config = CONFIGS["L2-bi"]
    params = jax.vmap(lambda k: jaxlstm.init_params(k, config))(jax.random.split(jax.random.key(0), 3))
    x = jax.random.normal(jax.random.key(1), (6, 2, 3))
    outs = jax.vmap(lambda p: jaxlstm.lstm(p, x, config=config)[0])(params)
    first = jax.tree.map(lambda a: a[1], params)
    assert_close(outs[1], jaxlstm.lstm(first, x, config=config)[0])


def test_init_params_shapes_bounds_and_order():
    config = LSTMConfig(7, 16, num_layers=2, bidirectional=True, proj_size=5)
    params = jaxlstm.init_params(jax.random.key(0), config)
    assert list(params) == list(config.param_shapes())
    assert list(params)[:5] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_hr_l0"]
    assert params["weight_ih_l1"].shape == (64, 10)  # I_1 = D * P
    assert params["weight_hh_l0_reverse"].shape == (64, 5)
    for v in params.values():
        assert float(jnp.abs(v).max()) <= 0.25
    np.testing.assert_array_equal(
        params["weight_ih_l0"], jaxlstm.init_params(jax.random.key(0), config)["weight_ih_l0"]
    )


def test_config_matches_torch_state_dict_keys_and_shapes():
    torch = pytest.importorskip("torch")
    for kwargs in (dict(), dict(num_layers=3, bidirectional=True, proj_size=2, bias=False)):
        module = torch.nn.LSTM(4, 6, **kwargs)
        config = LSTMConfig(4, 6, **kwargs)
        assert config.param_shapes() == {k: tuple(v.shape) for k, v in module.state_dict().items()}
        assert LSTMConfig.from_state_dict(module.state_dict()) == config


def test_dropout_between_layers_train_and_eval():
    model = jaxlstm.LSTM(3, 8, num_layers=3, dropout=0.5, rngs=nnx.Rngs(0, dropout=1))
    x = jax.random.normal(jax.random.key(0), (5, 2, 3))
    a, _ = model(x)
    b, _ = model(x)
    assert not np.allclose(a, b), "training mode must draw a fresh dropout mask per call"
    model.eval()
    c, _ = model(x)
    d, _ = model(x)
    np.testing.assert_array_equal(c, d)
    no_dropout = jaxlstm.lstm(model.params, x, config=model.config)[0]
    np.testing.assert_array_equal(c, no_dropout)
    model.train()
    e, _ = model(x)
    assert not np.allclose(e, c)


def test_dropout_reproducible_from_key_and_rate_one():
    config = LSTMConfig(3, 4, num_layers=2, dropout=0.3)
    params, x, _ = _inputs(config)
    key = jax.random.key(7)
    a = jaxlstm.lstm(params, x, config=config, dropout_key=key)[0]
    b = jaxlstm.lstm(params, x, config=config, dropout_key=key)[0]
    np.testing.assert_array_equal(a, b)
    with pytest.warns(UserWarning, match="dropout"):
        LSTMConfig(3, 4, dropout=0.5)  # one layer: torch warns too
    full = LSTMConfig(3, 4, num_layers=2, dropout=1.0)
    out, _ = jaxlstm.lstm(params, x, config=full, dropout_key=key)
    # layer 1 sees only zeros, so its output is that of a zero input
    zero_in = jaxlstm.lstm(
        {k[:-1] + "0": v for k, v in params.items() if k.endswith("l1")},
        jnp.zeros((6, 4, 4)),
        config=LSTMConfig(4, 4),
    )[0]
    assert_close(out, zero_in)


def test_module_params_are_torch_named_nnx_params():
    model = jaxlstm.LSTM(12, 10, num_layers=2, bidirectional=True, proj_size=3, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    names = set(state.keys()) if hasattr(state, "keys") else set(dict(state))
    assert names == set(model.config.param_shapes())
    assert isinstance(model.weight_hr_l1_reverse, nnx.Param)
    assert model.hidden_size == 10 and model.num_layers == 2 and model.proj_size == 3


def test_bf16_compute_keeps_f32_cell_state():
    model = jaxlstm.LSTM(3, 8, num_layers=2, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (5, 2, 3))
    out, (h_n, c_n) = model(x)
    assert out.dtype == jnp.bfloat16 and h_n.dtype == jnp.bfloat16
    assert c_n.dtype == jnp.float32
    ref, _ = jaxlstm.lstm(model.params, x, config=model.config)
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=3e-2)


def test_unbatched_input_gives_unbatched_output():
    model = jaxlstm.LSTM(3, 5, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (6, 3))
    out, (h_n, c_n) = model(x)
    assert out.shape == (6, 10) and h_n.shape == (4, 5) and c_n.shape == (4, 5)
    batched, (bh, bc) = model(x[:, None])
    np.testing.assert_array_equal(c_n, bc[:, 0])
    np.testing.assert_array_equal(out, batched[:, 0])
    np.testing.assert_array_equal(h_n, bh[:, 0])


def _dropout_lstm(seed: int) -> jaxlstm.LSTM:
    return jaxlstm.LSTM(3, 4, num_layers=2, dropout=0.5, batch_first=True, rngs=nnx.Rngs(seed))


def test_dropout_masks_are_reproducible_from_the_key():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 3)), jnp.float32)
    run = nnx.jit(lambda m, x: m(x)[0])  # carries the advanced RNG count back into the module
    a, b = _dropout_lstm(0), _dropout_lstm(0)
    a1, a2 = run(a, x), run(a, x)
    b1, b2 = run(b, x), run(b, x)
    np.testing.assert_array_equal(a1, b1)
    np.testing.assert_array_equal(a2, b2)
    assert not np.array_equal(a1, a2), "each call must draw a new mask"
    c1 = _dropout_lstm(1)  # other weights and other masks
    c1.set_params(a.params)
    assert not np.array_equal(run(c1, x), a1)
    a.eval()
    e1, e2 = run(a, x), run(a, x)
    np.testing.assert_array_equal(e1, e2)
    assert not np.array_equal(e1, a1)


def test_functional_dropout_is_a_function_of_the_key():
    cfg = jaxlstm.LSTMConfig(3, 6, num_layers=2, dropout=0.5)
    params = jaxlstm.init_params(jax.random.key(0), cfg)
    x = jnp.ones((4, 2, 3))
    run = jax.jit(lambda k: jaxlstm.lstm(params, x, config=cfg, dropout_key=k)[0])
    np.testing.assert_array_equal(run(jax.random.key(7)), run(jax.random.key(7)))
    assert not np.array_equal(run(jax.random.key(7)), run(jax.random.key(8)))
