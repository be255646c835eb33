"""jaxlstm.initializers: init_params (torch's default, or Flax-convention initializers, one key
per parameter) and torch_uniform, directly and through the nnx and linen modules."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxlstm
import jaxlstm.linen
from jaxlstm import LSTMCellConfig, LSTMConfig
from jaxlstm.initializers import torch_uniform
from tests.harness import expect, precision

KEY = jax.random.key(0)
PROJ = LSTMConfig(3, 5, num_layers=2, bidirectional=True, proj_size=2)


def test_init_params_shapes_bounds_and_order():
    config = LSTMConfig(7, 16, num_layers=2, bidirectional=True, proj_size=5)
    params = jaxlstm.init_params(jax.random.key(0), config)
    assert list(params) == list(config.param_shapes())
    first = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_hr_l0"]
    assert list(params)[:5] == first
    assert params["weight_ih_l1"].shape == (64, 10)  # I_1 = D * P
    assert params["weight_hh_l0_reverse"].shape == (64, 5)
    for v in params.values():
        assert float(jnp.abs(v).max()) <= 0.25
    np.testing.assert_array_equal(
        params["weight_ih_l0"], jaxlstm.init_params(jax.random.key(0), config)["weight_ih_l0"]
    )


# --- Flax's convention: kernels drawn as (in, out) and stored transposed ------------------------


class Spy:
    """An initializer recording the shape and dtype of every call, returning distinct values
    (0, 1, 2, ... in the shape asked for) so that a transposition shows."""

    def __init__(self):
        self.calls: list[tuple[tuple[int, ...], jnp.dtype]] = []
        self.keys: list[jax.Array] = []

    def __call__(self, key, shape, dtype=jnp.float32):
        self.calls.append((tuple(shape), jnp.dtype(dtype)))
        self.keys.append(key)
        return jnp.arange(math.prod(shape), dtype=dtype).reshape(shape)


def test_initializers_get_flax_shapes_and_kernels_are_stored_transposed():
    spies = {role: Spy() for role in ("kernel", "recurrent", "bias", "projection")}
    params = jaxlstm.init_params(
        KEY,
        PROJ,
        kernel_init=spies["kernel"],
        recurrent_kernel_init=spies["recurrent"],
        bias_init=spies["bias"],
        projection_init=spies["projection"],
    )
    f32 = jnp.dtype(jnp.float32)
    # (in, out) for kernels: (I_k, 4H), (H_out, 4H), (H, P); biases (4H,), two per direction.
    assert spies["kernel"].calls == [((3, 20), f32)] * 2 + [((4, 20), f32)] * 2
    assert spies["recurrent"].calls == [((2, 20), f32)] * 4
    assert spies["bias"].calls == [((20,), f32)] * 8
    assert spies["projection"].calls == [((5, 2), f32)] * 4
    for name, value in params.items():
        torch_shape = PROJ.param_shapes()[name]
        assert value.shape == torch_shape, name
        drawn = jnp.arange(math.prod(torch_shape), dtype=jnp.float32)
        if name.startswith("weight"):
            drawn = drawn.reshape(torch_shape[::-1]).T  # drawn (in, out), stored (out, in)
        np.testing.assert_array_equal(value, drawn.reshape(torch_shape), err_msg=name)


def test_lecun_normal_sees_the_fan_in_of_each_kernel():
    # Every kernel's std is 1/sqrt(fan_in), fan_in being the input features of Flax's
    # (in, out): I for weight_ih, P for weight_hh, H for weight_hr. Reading torch's
    # (out, in) layout instead would give 4H, 4H and P: 0.0625, 0.0625, 0.25 here.
    config = LSTMConfig(400, 64, proj_size=16)
    init = jax.nn.initializers.lecun_normal()
    params = jaxlstm.init_params(
        KEY, config, kernel_init=init, recurrent_kernel_init=init, projection_init=init
    )
    for name, fan_in in (("weight_ih_l0", 400), ("weight_hh_l0", 16), ("weight_hr_l0", 64)):
        std = float(np.std(np.asarray(params[name])))
        assert abs(std / (1 / math.sqrt(fan_in)) - 1) < 0.05, f"{name}: std {std:.4f}"
    # The biases keep torch's default, U(-1/8, 1/8).
    assert float(jnp.abs(params["bias_ih_l0"]).max()) <= 1 / 8


def test_each_initializer_sets_only_its_parameters():
    default = jaxlstm.init_params(KEY, PROJ)
    roles = {
        "kernel_init": "weight_ih",
        "recurrent_kernel_init": "weight_hh",
        "bias_init": "bias_",
        "projection_init": "weight_hr",
    }
    for argument, prefix in roles.items():
        params = jaxlstm.init_params(KEY, PROJ, **{argument: jax.nn.initializers.constant(7.0)})
        for name, value in params.items():
            if name.startswith(prefix):
                np.testing.assert_array_equal(value, 7.0, err_msg=f"{argument}: {name}")
            else:  # one key per parameter: the others are drawn exactly as by default
                np.testing.assert_array_equal(value, default[name], err_msg=f"{argument}: {name}")


def test_one_key_per_parameter_folded_in_by_position():
    spy = Spy()
    everything = dict(
        kernel_init=spy, recurrent_kernel_init=spy, bias_init=spy, projection_init=spy
    )
    jaxlstm.init_params(KEY, PROJ, **everything)
    names = list(PROJ.param_shapes())
    assert len(spy.keys) == len(names)
    data = [tuple(np.asarray(jax.random.key_data(k)).tolist()) for k in spy.keys]
    assert len(set(data)) == len(names), "two parameters drew from the same key"
    for position, key in enumerate(spy.keys):
        want = jax.random.key_data(jax.random.fold_in(KEY, position))
        np.testing.assert_array_equal(jax.random.key_data(key), want, err_msg=names[position])


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_init_params_dtype(dtype):
    with precision("float64" if dtype == "float64" else "float32"):
        params = jaxlstm.init_params(KEY, PROJ, jnp.dtype(dtype))
        custom = jaxlstm.init_params(KEY, PROJ, jnp.dtype(dtype), kernel_init=Spy())
    assert {v.dtype for v in params.values()} == {jnp.dtype(dtype)}
    assert {v.dtype for v in custom.values()} == {jnp.dtype(dtype)}


# --- torch_uniform ------------------------------------------------------------------------------


def test_torch_uniform_bounds_and_span():
    bound = 1 / math.sqrt(64)
    values = np.asarray(torch_uniform(64)(KEY, (300, 100)))  # two chunks of the stream
    assert values.shape == (300, 100) and values.dtype == np.float32
    assert values.min() >= -bound and values.max() <= bound
    assert values.max() - values.min() > 1.99 * bound, "does not span U(-1/sqrt(H), 1/sqrt(H))"
    assert abs(values.mean()) < 0.01 * bound
    assert abs(values.std() / (bound / math.sqrt(3)) - 1) < 0.01  # the std of U(-b, b)
    flat = values.ravel()
    assert not np.array_equal(flat[: 1 << 14][:100], flat[1 << 14 :][:100]), "chunks repeat"
    other = np.asarray(torch_uniform(64)(jax.random.key(1), (300, 100)))
    assert not np.allclose(values, other)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_torch_uniform_traced_key_gives_the_same_values(dtype):
    init = torch_uniform(16)
    for shape in ((80, 3), (20_000,)):
        concrete = init(KEY, shape, jnp.dtype(dtype))
        traced = jax.jit(lambda k, shape=shape: init(k, shape, jnp.dtype(dtype)))(KEY)
        assert traced.dtype == concrete.dtype == jnp.dtype(dtype)
        np.testing.assert_array_equal(
            np.asarray(traced, np.float32), np.asarray(concrete, np.float32)
        )
        abstract = jax.eval_shape(lambda k, shape=shape: init(k, shape, jnp.dtype(dtype)), KEY)
        assert (abstract.shape, abstract.dtype) == (shape, jnp.dtype(dtype))


def test_init_params_under_jit_and_eval_shape():
    eager = jaxlstm.init_params(KEY, PROJ)
    jitted = jax.jit(lambda k: jaxlstm.init_params(k, PROJ))(KEY)
    for name in eager:
        np.testing.assert_array_equal(jitted[name], eager[name], err_msg=name)
    abstract = jax.eval_shape(lambda k: jaxlstm.init_params(k, PROJ), KEY)
    assert {k: v.shape for k, v in abstract.items()} == PROJ.param_shapes()


# --- errors: (call, exception, fragments naming argument, expected, got) -----------------------

CFG = LSTMConfig(3, 5)
KEY_MESSAGE = "PRNG key such as jax.random.key(0)"

CONSTRUCTOR_CASES = {
    "init_params(config=dict)": (
        lambda: jaxlstm.init_params(jax.random.key(0), {"input_size": 3}),
        TypeError,
        "config",
        "LSTMConfig",
        "got dict",
    ),
    "init_params(key=int)": (
        lambda: jaxlstm.init_params(0, CFG),
        TypeError,
        "key",
        KEY_MESSAGE,
        "got int 0",
    ),
    "init_params(key=numpy Generator)": (
        lambda: jaxlstm.init_params(np.random.default_rng(0), CFG),
        TypeError,
        "key",
        KEY_MESSAGE,
        "got Generator",
    ),
    "init_params(key=[2] typed keys)": (
        lambda: jaxlstm.init_params(jax.random.split(KEY), CFG),
        TypeError,
        "key",
        KEY_MESSAGE,
        "dtype key<fry> and shape (2,)",
    ),
    "init_params(dtype=int32)": (
        lambda: jaxlstm.init_params(KEY, CFG, jnp.int32),
        TypeError,
        "dtype (param_dtype)",
        "floating-point",
        "got int32",
    ),
    "kernel_init=3": (
        lambda: jaxlstm.init_params(KEY, CFG, kernel_init=3),
        TypeError,
        "kernel_init",
        "initializer init(key, shape, dtype) or None",
        "got 3",
    ),
    "projection_init='normal'": (
        lambda: jaxlstm.init_params(KEY, PROJ, projection_init="normal"),
        TypeError,
        "projection_init",
        "initializer",
        "got 'normal'",
    ),
    "kernel_init returns torch's shape": (
        lambda: jaxlstm.init_params(KEY, CFG, kernel_init=lambda k, s, d: jnp.zeros(s[::-1], d)),
        ValueError,
        "kernel_init for weight_ih_l0",
        "the shape (3, 20) it was asked for",
        "returned shape (20, 3)",
    ),
    "bias_init wrong shape": (
        lambda: jaxlstm.init_params(KEY, CFG, bias_init=lambda k, s, d: jnp.zeros((2,))),
        ValueError,
        "bias_init for bias_ih_l0",
        "the shape (20,) it was asked for",
        "returned shape (2,)",
    ),
    "torch_uniform(dtype=int32)": (
        lambda: torch_uniform(4)(KEY, (3,), jnp.int32),
        TypeError,
        "dtype of the parameters",
        "floating-point",
        "got int32",
    ),
}


@pytest.mark.parametrize("case", CONSTRUCTOR_CASES.values(), ids=CONSTRUCTOR_CASES.keys())
def test_constructor_argument_errors(case):
    fn, exc, *fragments = case
    expect(exc, fn, *fragments)


# --- through the modules: nnx from rngs.params(), linen from its first make_rng("params") -------

X = jnp.zeros((4, 2, 3))  # [T, B, I=3]


def nnx_key(seed: int) -> jax.Array:
    """The key a jaxlstm nnx module built with `nnx.Rngs(params=key(seed))` draws from."""
    return nnx.Rngs(params=jax.random.key(seed)).params()


class _FirstParamsKey(nn.Module):
    @nn.compact
    def __call__(self, x):
        return jax.random.key_data(self.make_rng("params"))


def linen_key(seed: int, x=X) -> jax.Array:
    """The key a top-level linen module initialised with `{"params": key(seed)}` hands its
    first parameter: its first `make_rng("params")`."""
    data, _ = _FirstParamsKey().init_with_output({"params": jax.random.key(seed)}, x)
    return jax.random.wrap_key_data(data)


def _nnx_weights(config, seed, **inits):
    rngs = nnx.Rngs(params=jax.random.key(seed))
    if isinstance(config, LSTMCellConfig):
        module = jaxlstm.LSTMCell(
            config.input_size, config.hidden_size, bias=config.bias, rngs=rngs, **inits
        )
    else:
        module = jaxlstm.LSTM(
            config.input_size,
            config.hidden_size,
            config.num_layers,
            bidirectional=config.bidirectional,
            proj_size=config.proj_size,
            rngs=rngs,
            **inits,
        )
    return module.params


def _linen_weights(config, seed, **inits):
    if isinstance(config, LSTMCellConfig):
        module = jaxlstm.linen.LSTMCell(config.hidden_size, bias=config.bias, **inits)
        x = X[0]
    else:
        module = jaxlstm.linen.LSTM(
            config.hidden_size,
            config.num_layers,
            bidirectional=config.bidirectional,
            proj_size=config.proj_size,
            **inits,
        )
        x = X
    return module.init({"params": jax.random.key(seed)}, x)["params"], linen_key(seed, x)


MODULE_CONFIGS = {"LSTM": PROJ, "LSTMCell": LSTMCellConfig(3, 5)}
INITS = {
    "default": {},
    "flax-inits": dict(
        kernel_init=jax.nn.initializers.lecun_normal(),
        recurrent_kernel_init=jax.nn.initializers.orthogonal(),
        bias_init=jax.nn.initializers.constant(0.5),
    ),
}


def _assert_same_params(got, want, what):
    assert list(got) == list(want), what
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"{what}: {name}")


@pytest.mark.parametrize("inits", INITS.values(), ids=INITS.keys())
@pytest.mark.parametrize("kind", MODULE_CONFIGS)
def test_the_same_key_gives_the_same_weights_through_nnx_and_linen(kind, inits):
    config = MODULE_CONFIGS[kind]
    if kind == "LSTM" and inits:
        inits = inits | dict(projection_init=jax.nn.initializers.zeros)
    nnx_params = _nnx_weights(config, 3, **inits)
    linen_params, key = _linen_weights(config, 3, **inits)
    _assert_same_params(nnx_params, jaxlstm.init_params(nnx_key(3), config, **inits), "nnx")
    _assert_same_params(dict(linen_params), jaxlstm.init_params(key, config, **inits), "linen")
    # So the two modules hold identical weights exactly when their keys coincide: init_params
    # is the one function of the key behind both. Here the keys differ, and so do the weights
    # (the comparison above can fail).
    name = "weight_hh_l0" if kind == "LSTM" else "weight_hh"
    assert not np.array_equal(jax.random.key_data(nnx_key(3)), jax.random.key_data(key))
    assert not np.array_equal(nnx_params[name], linen_params[name])
