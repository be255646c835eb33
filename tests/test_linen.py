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
from jaxlstm.torch_io import write_safetensors
from tests.conftest import assert_close
from tests.interop_helpers import random_lstm

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


# ----------------------------------------------------------------------------------- torch IN/O


@pytest.mark.parametrize("name", list(CONFIGS))
def test_linen_load_torch_state_dict_matches_torch(name):
    torch = pytest.importorskip("torch")
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    t = torch.nn.LSTM(IN, H, **cfg)
    model = jl.LSTM(H, **cfg)
    x, hx = _input(cfg), _hx(cfg)
    variables = model.init(jax.random.key(0), x)
    variables, result = jl.load_torch_state_dict(variables, t.state_dict())
    assert result == ([], [])
    out, (h_n, c_n) = model.apply(variables, x, hx)
    with torch.no_grad():
        t_out, (t_h, t_c) = t(torch.from_numpy(np.array(x)), tuple(torch.from_numpy(np.array(a)) for a in hx))
    for got, want in ((out, t_out), (h_n, t_h), (c_n, t_c)):
        assert_close(got, want.numpy(), "float32")  # atol = rtol = 1e-5
    sd = jl.torch_state_dict(variables)
    assert list(sd) == list(t.state_dict())
    assert all(v.flags.writeable for v in sd.values())  # torch.from_numpy warns on read-only arrays
    for k, v in t.state_dict().items():
        np.testing.assert_array_equal(sd[k], v.numpy())
    t2 = torch.nn.LSTM(IN, H, **cfg)
    t2.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})


def test_linen_from_torch_and_cell():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    t = torch.nn.LSTM(IN, H, num_layers=2, batch_first=True, bidirectional=True)
    model, variables = jl.from_torch(t)
    assert model.batch_first and model.bidirectional and model.num_layers == 2
    x = _input({"batch_first": True})
    with torch.no_grad():
        want = t(torch.from_numpy(np.array(x)))[0].numpy()
    assert_close(model.apply(variables, x)[0], want, "float32")

    tc = torch.nn.LSTMCell(IN, H)
    cell, cvars = jl.from_torch(tc)
    xc = _input({})[0]
    with torch.no_grad():
        th, tcs = tc(torch.from_numpy(np.array(xc)))
    h, c = cell.apply(cvars, xc)
    assert_close(h, th.numpy(), "float32")
    assert_close(c, tcs.numpy(), "float32")
    assert list(jl.torch_state_dict(cvars)) == list(tc.state_dict())
    with pytest.raises(TypeError, match=r"torch\.nn\.LSTM"):
        jl.from_torch(torch.nn.GRU(3, 4))


def test_linen_load_from_file_with_prefix_and_bare_params(tmp_path):
    model = jl.LSTM(H, 2)
    x = _input({})
    variables = model.init(jax.random.key(0), x)
    source = jaxlstm.init_params(jax.random.key(7), jaxlstm.LSTMConfig(IN, H, 2))
    whole = {f"encoder.lstm.{k}": np.asarray(v) for k, v in source.items()}
    whole["head.weight"] = np.zeros((2, H), np.float32)
    path = tmp_path / "model.safetensors"
    write_safetensors(path, whole)
    params, result = jl.load_torch_state_dict(variables["params"], path, prefix="encoder.lstm.")
    assert result == ([], [])
    assert set(params) == set(source)
    for k in source:
        np.testing.assert_array_equal(np.asarray(params[k]), np.asarray(source[k]))
    want = jaxlstm.lstm(source, x, config=jaxlstm.LSTMConfig(IN, H, 2))
    got = model.apply({"params": params}, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_linen_load_errors_name_keys_and_strict_false_keeps_values():
    model = jl.LSTM(H, 2)
    variables = model.init(jax.random.key(0), _input({}))
    sd = {k: np.asarray(v) for k, v in variables["params"].items()}
    bad = dict(sd, weight_hh_l1=np.zeros((4 * H, H + 1), np.float32))
    with pytest.raises(ValueError, match=r"weight_hh_l1: expected \(20, 5\), got \(20, 6\)"):
        jl.load_torch_state_dict(variables, bad)
    partial = {k: v + 1 for k, v in sd.items() if k != "bias_hh_l1"}
    with pytest.raises(ValueError, match=r"missing keys.*bias_hh_l1"):
        jl.load_torch_state_dict(variables, partial)
    new, result = jl.load_torch_state_dict(variables, partial, strict=False)
    assert result.missing_keys == ["bias_hh_l1"]
    np.testing.assert_array_equal(np.asarray(new["params"]["bias_hh_l1"]), sd["bias_hh_l1"])
    np.testing.assert_array_equal(np.asarray(new["params"]["bias_ih_l1"]), sd["bias_ih_l1"] + 1)
    with pytest.raises(ValueError, match="torch names"):
        jl.load_torch_state_dict({"params": {"cell": {}}}, sd)
    with pytest.raises(TypeError, match="state_dict_or_path"):
        jl.load_torch_state_dict(variables, 3)
