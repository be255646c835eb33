"""jaxlstm.linen: same outputs as the nnx modules and the core given the same parameters,
from_params, dropout, dtypes and construction errors."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import jaxlstm
import jaxlstm.linen as jl
from jaxlstm import LSTMCellConfig, LSTMConfig
from tests.harness import (
    assert_close,
    expect,
    make_problem,
    precision,
    random_lstm,
    random_params,
)

CONFIGS = {
    "uni": dict(),
    "bi_2layers": dict(num_layers=2, bidirectional=True),
    "proj_batch_first": dict(num_layers=2, proj_size=3, batch_first=True),
    "no_bias_bi_proj": dict(bias=False, bidirectional=True, proj_size=2),
}
IN, H, T, B = 3, 5, 6, 4


def _problem(cfg, seed=0, batch=B, lengths=None):
    """A float32 problem of `LSTMConfig(IN, H, **cfg)` with an initial state."""
    return make_problem(
        LSTMConfig(IN, H, **cfg),
        batch=batch,
        steps=T,
        with_hx=True,
        seq_lengths=lengths,
        dtype="float32",
        seed=seed,
    )


def _input(cfg, seed=0):
    return jnp.asarray(_problem(cfg, seed).x)


def _assert_equal_trees(got, want):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


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
    p = _problem(cfg, lengths=[6, 1, 4, 3] if seq else None)
    _, x, hx = p.jax_inputs()
    lengths = None if p.seq_lengths is None else jnp.asarray(p.seq_lengths)
    linen_model = jl.LSTM(H, **cfg)
    variables = {"params": nnx_model.params}
    got = linen_model.apply(variables, x, hx, seq_lengths=lengths)
    want = nnx_model(x, hx, seq_lengths=lengths)
    # Same parameters, same core function: bitwise equal.
    _assert_equal_trees(got, want)


def test_linen_unbatched_and_jit_match_nnx():
    nnx_model = random_lstm(jaxlstm.LSTMConfig(IN, H, 2), 0)
    variables = {"params": nnx_model.params}
    x = jnp.asarray(_problem({}, batch=None).x)  # [T, I]
    got = jax.jit(jl.LSTM(H, 2).apply)(variables, x)
    want = nnx_model(x)
    chex.assert_shape(got[0], (T, H))
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert_close(g, w, "float32")  # jit may fuse differently: written tolerance 1e-5


@pytest.mark.parametrize("bias", [True, False])
def test_linen_cell_matches_nnx_cell(bias):
    config = LSTMCellConfig(IN, H, bias=bias)
    nnx_cell = random_lstm(config, 1)
    cell = jl.LSTMCell(H, bias=bias)
    _, x, hx = make_problem(config, batch=B, with_hx=True, dtype="float32", seed=0).jax_inputs()
    variables = cell.init(jax.random.key(0), x)
    assert {k: v.shape for k, v in variables["params"].items()} == nnx_cell.param_shapes()
    got = cell.apply({"params": nnx_cell.params}, x, hx)
    want = nnx_cell(x, hx)
    _assert_equal_trees(got, want)


def test_linen_dtype_bf16_compute_keeps_f32_state():
    model = jl.LSTM(H, dtype=jnp.bfloat16)
    x = _input({})
    variables = model.init(jax.random.key(0), x)
    assert variables["params"]["weight_ih_l0"].dtype == jnp.float32
    out, (_, c_n) = model.apply(variables, x)
    assert out.dtype == jnp.bfloat16 and c_n.dtype == jnp.float32
    full, _ = jl.LSTM(H).apply(variables, x)
    assert_close(out.astype(jnp.float32), full, "bfloat16", "out")


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
    chex.assert_shape(variables["params"]["lstm"]["weight_hh_l0_reverse"], (4 * H, H))
    chex.assert_shape(Tagger().apply(variables, x), (T, B, 2))


# --- from_params ---------------------------------------------------------------------------------

FROM_PARAMS_CASES = {
    "bi-proj-bf-lengths": (
        LSTMConfig(IN, H, num_layers=2, bidirectional=True, proj_size=2, batch_first=True),
        [6, 2, 5, 1],
    ),
    "nobias-float64": (LSTMConfig(IN, H, bias=False), None),
}


@pytest.mark.parametrize("case", FROM_PARAMS_CASES)
def test_linen_from_params_reproduces_the_core(case):
    config, lengths = FROM_PARAMS_CASES[case]
    dtype = "float64" if case.endswith("float64") else "float32"
    p = make_problem(
        config, batch=B, steps=T, with_hx=True, seq_lengths=lengths, dtype=dtype, seed=4
    )
    with precision(dtype):
        params, x, hx = p.jax_inputs()
        module, variables = jl.from_params(p.params, config)
        assert isinstance(module, jl.LSTM) and module.config(IN) == config
        assert module.param_dtype == jnp.dtype(dtype)
        assert list(variables["params"]) == list(config.param_shapes())
        _assert_equal_trees(variables["params"], params)
        got = module.apply(variables, x, hx, seq_lengths=p.seq_lengths)
        want = jaxlstm.lstm(params, x, hx, config=config, seq_lengths=p.seq_lengths)
    _assert_equal_trees(got, want)


def test_linen_from_params_of_a_cell_config_is_a_cell():
    config = LSTMCellConfig(IN, H, bias=False)
    p = make_problem(config, batch=B, with_hx=True, dtype="float32", seed=5)
    params, x, hx = p.jax_inputs()
    module, variables = jl.from_params(p.params, config, dtype=jnp.bfloat16)
    assert isinstance(module, jl.LSTMCell) and module.config(IN) == config
    assert module.dtype == jnp.bfloat16
    _assert_equal_trees(variables["params"], params)
    low = {k: v.astype(jnp.bfloat16) for k, v in params.items()}
    _assert_equal_trees(
        module.apply(variables, x, hx), jaxlstm.lstm_cell(low, x.astype(jnp.bfloat16), hx)
    )


def test_linen_from_params_errors():
    config = LSTMConfig(IN, H)
    params = random_params(config)
    expect(
        ValueError,
        lambda: jl.from_params({**params, "weight_hr_l0": np.zeros((2, H))}, config),
        "params do not match the configuration",
        "unexpected keys ['weight_hr_l0']",
    )
    expect(
        TypeError,
        lambda: jl.from_params(params, {"hidden_size": H}),
        "config",
        "LSTMConfig or LSTMCellConfig",
        "got dict",
    )
