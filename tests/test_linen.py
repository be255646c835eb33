"""jaxlstm.linen: same outputs as the nnx modules given the same parameters, torch IN/O."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import jaxlstm
import jaxlstm.linen as jl
from tests.harness import assert_close, random_lstm

CONFIGS = {
    "uni": dict(),
    "bi_2layers": dict(num_layers=2, bidirectional=True),
    "proj_batch_first": dict(num_layers=2, proj_size=3, batch_first=True),
    "no_bias_bi_proj": dict(bias=False, bidirectional=True, proj_size=2),
}
IN, H, T, B = 3, 5, 6, 4


def _input(cfg, seed=0):
    rng = np.random.default_rng(seed)
    shape = (B, T, IN) if cfg.get("batch_first") else (T, B, IN)
    return jnp.asarray(rng.standard_normal(shape), jnp.float32)


def _hx(cfg, seed=1):
    rng = np.random.default_rng(seed)
    states = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)
    h = rng.standard_normal((states, B, cfg.get("proj_size") or H))
    c = rng.standard_normal((states, B, H))
    return jnp.asarray(h, jnp.float32), jnp.asarray(c, jnp.float32)


@pytest.mark.parametrize("name", ["uni", "no_bias_bi_proj"])
def test_linen_params_have_torch_names_and_init_bounds(name):
    cfg = CONFIGS[name]
    variables = jl.LSTM(H, **cfg).init(jax.random.key(0), _input(cfg))
    expected = jaxlstm.LSTMConfig(IN, H, **cfg).param_shapes()
    shapes = {k: tuple(v.shape) for k, v in variables["params"].items()}
    assert shapes == expected
    bound = 1 / np.sqrt(H)
    for k, v in variables["params"].items():
        assert np.abs(np.asarray(v)).max() <= bound, k
        assert np.std(np.asarray(v)) > 0.1 * bound, k  # really random, not zeros


@pytest.mark.parametrize(
    ("name", "seq"),
    [("uni", False), ("bi_2layers", True), ("proj_batch_first", True), ("no_bias_bi_proj", False)],
    ids=["uni", "bi_2layers-seq_lengths", "proj_batch_first-seq_lengths", "no_bias_bi_proj"],
)
def test_linen_and_nnx_give_identical_outputs(name, seq):
    cfg = CONFIGS[name]
    nnx_model = random_lstm(jaxlstm.LSTMConfig(IN, H, **cfg), 3)
    x, hx = _input(cfg), _hx(cfg)
    lengths = jnp.array([6, 1, 4, 3]) if seq else None
    linen_model = jl.LSTM(H, **cfg)
    variables = {"params": nnx_model.params}
    got = linen_model.apply(variables, x, hx, seq_lengths=lengths)
    want = nnx_model(x, hx, seq_lengths=lengths)
    # Same parameters, same core function: bitwise equal.
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_linen_unbatched_and_jit_match_nnx():
    nnx_model = random_lstm(jaxlstm.LSTMConfig(IN, H, 2), 0)
    variables = {"params": nnx_model.params}
    x = _input({})[:, 0]
    got = jax.jit(jl.LSTM(H, 2).apply)(variables, x)
    want = nnx_model(x)
    assert got[0].shape == (T, H)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert_close(g, w, "float32")  # jit may fuse differently: written tolerance 1e-5


@pytest.mark.parametrize("bias", [True, False])
def test_linen_cell_matches_nnx_cell(bias):
    nnx_cell = jaxlstm.LSTMCell(IN, H, bias=bias, rngs=nnx.Rngs(1))
    cell = jl.LSTMCell(H, bias=bias)
    x = _input({})[0]
    hx = (x[:, :1] * jnp.ones((B, H)), -x[:, :1] * jnp.ones((B, H)))
    variables = cell.init(jax.random.key(0), x)
    assert {k: v.shape for k, v in variables["params"].items()} == nnx_cell.param_shapes()
    got = cell.apply({"params": nnx_cell.params}, x, hx)
    want = nnx_cell(x, hx)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_linen_dtype_bf16_compute_keeps_f32_state():
    model = jl.LSTM(H, dtype=jnp.bfloat16)
    x = _input({})
    variables = model.init(jax.random.key(0), x)
    assert variables["params"]["weight_ih_l0"].dtype == jnp.float32
    out, (_, c_n) = model.apply(variables, x)
    assert out.dtype == jnp.bfloat16 and c_n.dtype == jnp.float32
    full, _ = jl.LSTM(H).apply(variables, x)
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(full), atol=3e-2)


def test_linen_dropout_follows_deterministic():
    model = jl.LSTM(H, num_layers=2, dropout=0.5)
    x = _input({})
    variables = model.init(jax.random.key(0), x, deterministic=True)
    plain, _ = jl.LSTM(H, num_layers=2).apply(variables, x)
    off, _ = model.apply(variables, x, deterministic=True)
    np.testing.assert_array_equal(np.asarray(off), np.asarray(plain))
    on1, _ = model.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(5)})
    on3, _ = model.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(6)})
    assert not np.allclose(np.asarray(on1), np.asarray(off))
    assert not np.allclose(np.asarray(on1), np.asarray(on3))
    # The attribute works like nn.Dropout's; leaving both unset is an error only with dropout.
    attr, _ = jl.LSTM(H, num_layers=2, dropout=0.5, deterministic=True).apply(variables, x)
    np.testing.assert_array_equal(np.asarray(attr), np.asarray(plain))
    with pytest.raises(ValueError, match="deterministic"):
        model.apply(variables, x)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(hidden_size=0), ValueError, "hidden_size"),
        (dict(hidden_size=4, proj_size=4), ValueError, "proj_size"),
        (dict(hidden_size=4, bidirectional=1), TypeError, "bidirectional"),
        (dict(hidden_size=4, dropout=2.0), ValueError, "dropout"),
    ],
    ids=["zero_hidden", "proj_too_big", "bidirectional_not_bool", "dropout_range"],
)
def test_linen_invalid_arguments_fail_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        jl.LSTM(**kwargs)


def test_linen_wrong_input_size_after_init_fails():
    model = jl.LSTM(H)
    variables = model.init(jax.random.key(0), _input({}))
    with pytest.raises(Exception, match="weight_ih_l0"):
        model.apply(variables, jnp.zeros((T, B, IN + 1)))


def test_linen_inside_a_parent_module():
    class Tagger(nn.Module):
        @nn.compact
        def __call__(self, x):
            out, _ = jl.LSTM(H, bidirectional=True, name="lstm")(x)
            return nn.Dense(2, name="head")(out)

    x = _input({})
    variables = Tagger().init(jax.random.key(0), x)
    assert variables["params"]["lstm"]["weight_hh_l0_reverse"].shape == (4 * H, H)
    assert Tagger().apply(variables, x).shape == (T, B, 2)
