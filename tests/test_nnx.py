"""jaxlstm.nnx: the LSTM and LSTMCell flax.nnx modules over the functional core (jitted and
not), their parameters, dropout and dtypes, from_params, as_lstm/as_cell, set_params, and
their bad-input errors."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from flax import nnx

import jaxlstm
import jaxlstm.nnx
from jaxlstm import LSTMCellConfig, LSTMConfig, ScanOptions
from jaxlstm.nnx import from_params
from tests.harness import (
    assert_close,
    expect,
    make_problem,
    precision,
    random_lstm,
    random_params,
    run_jax,
)

# --- the module against the functional core ----------------------------------------------------


MODULE_CASES = {
    "LSTM-bi-proj-lengths": (LSTMConfig(3, 4, bidirectional=True, proj_size=2), [3, 1]),
    "LSTM-bf-nobias": (LSTMConfig(3, 4, batch_first=True, bias=False), None),
    "LSTMCell": (LSTMCellConfig(3, 4), None),
}


def _module_problem(case: str):
    config, lengths = MODULE_CASES[case]
    steps = None if isinstance(config, LSTMCellConfig) else 3
    return make_problem(
        config, batch=2, steps=steps, with_hx=True, seq_lengths=lengths, dtype="float32", seed=2
    )


@functools.cache
def _core_run(case: str) -> dict[str, np.ndarray]:
    """`lstm`'s (or `lstm_cell`'s) outputs and gradients, once per case for both variants."""
    with precision("float32"):
        return run_jax(_module_problem(case))


class NnxMatchesCoreTest(chex.TestCase):
    """The nnx modules, jitted and not, give `lstm`'s and `lstm_cell`'s outputs and gradients
    (a module is a pytree: `jax.jit` takes it as an argument)."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((case, case) for case in MODULE_CASES))
    def test_module_matches_the_core(self, case):
        p = _module_problem(case)
        if isinstance(p.config, LSTMCellConfig):

            def fn(params, x, hx):
                call = self.variant(lambda model, x, hx: model(x, hx))
                return call(from_params(params, p.config), x, hx)

        else:

            def fn(params, x, hx, *, config, seq_lengths):
                call = self.variant(lambda model, x, hx, n: model(x, hx, seq_lengths=n))
                return call(from_params(params, config), x, hx, seq_lengths)

        with precision("float32"):
            got = run_jax(p, fn, jit=False)
        want = _core_run(case)
        assert got.keys() == want.keys()
        assert_close(got, want, "float32", case)


def test_forward_mode_of_the_module_works_with_the_default_options():
    # jvp and jacfwd through the module with the default ScanOptions (custom VJP on): they
    # match the plain scan's jvp and reverse mode. (jvp inside jit: see tests/test_layer.py.)
    with precision("float64"):
        config = LSTMConfig(3, 4, bidirectional=True, proj_size=2)
        p = make_problem(
            config, batch=2, steps=3, with_hx=False, seq_lengths=[3, 2], dtype="float64", seed=4
        )
        model = from_params(p.params, config)
        x, tangent = jnp.asarray(p.x), jnp.asarray(p.g_out[..., :3])
        lengths = jnp.asarray(p.seq_lengths)
        module = lambda x: model(x, seq_lengths=lengths)[0]  # noqa: E731
        plain = lambda x: jaxlstm.lstm(  # noqa: E731
            p.params, x, config=config, seq_lengths=lengths, scan=ScanOptions(custom_vjp=False)
        )[0]
        _, jvp = jax.jvp(module, (x,), (tangent,))
        _, jvp_plain = jax.jvp(plain, (x,), (tangent,))
        assert np.abs(np.asarray(jvp)).max() > 0
        assert_close(jvp, jvp_plain, "float64", "jvp")
        loss = lambda x: jnp.sum(jnp.sin(module(x)))  # noqa: E731
        forward, reverse = jax.jit(lambda x: (jax.jacfwd(loss)(x), jax.grad(loss)(x)))(x)
        assert_close(forward, reverse, "float64", "jacfwd vs grad")


# --- parameters, init, dtypes --------------------------------------------------------------------


def test_module_params_are_torch_named_nnx_params():
    model = jaxlstm.LSTM(12, 10, num_layers=2, bidirectional=True, proj_size=3, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    names = set(state.keys()) if hasattr(state, "keys") else set(dict(state))
    assert names == set(model.config.param_shapes())
    assert isinstance(model.weight_hr_l1_reverse, nnx.Param)
    assert model.hidden_size == 10 and model.num_layers == 2 and model.proj_size == 3


def test_cell_init_is_torch_uniform():
    cell = jaxlstm.LSTMCell(30, 64, rngs=nnx.Rngs(0))
    bound = 1 / np.sqrt(64)
    for name, value in cell.params.items():
        v = np.asarray(value)
        assert v.min() >= -bound and v.max() <= bound, name
        assert v.max() - v.min() > 1.8 * bound, f"{name} does not span U(-1/sqrt(H), 1/sqrt(H))"
    assert set(cell.params) == {"weight_ih", "weight_hh", "bias_ih", "bias_hh"}


def test_bf16_compute_keeps_f32_cell_state():
    model = jaxlstm.LSTM(3, 8, num_layers=2, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    x = jnp.asarray(
        make_problem(model.config, batch=2, steps=5, with_hx=False, dtype="float32", seed=0).x
    )
    out, (h_n, c_n) = model(x)
    assert out.dtype == jnp.bfloat16 and h_n.dtype == jnp.bfloat16
    assert c_n.dtype == jnp.float32
    ref, _ = jaxlstm.lstm(model.params, x, config=model.config)
    assert_close(out.astype(jnp.float32), ref, "bfloat16", "out")


def test_unbatched_input_gives_unbatched_output():
    model = random_lstm(LSTMConfig(3, 5, num_layers=2, bidirectional=True))
    x = jnp.asarray(
        make_problem(model.config, batch=None, steps=6, with_hx=False, dtype="float32", seed=0).x
    )
    out, (h_n, c_n) = model(x)
    chex.assert_shape(out, (6, 10))
    chex.assert_shape([h_n, c_n], (4, 5))
    batched, (bh, bc) = model(x[:, None])
    np.testing.assert_array_equal(c_n, bc[:, 0])
    np.testing.assert_array_equal(out, batched[:, 0])
    np.testing.assert_array_equal(h_n, bh[:, 0])


# --- dropout ------------------------------------------------------------------------------------


def test_dropout_between_layers_train_and_eval():
    model = jaxlstm.LSTM(3, 8, num_layers=3, dropout=0.5, rngs=nnx.Rngs(0, dropout=1))
    x = jnp.asarray(
        make_problem(model.config, batch=2, steps=5, with_hx=False, dtype="float32", seed=0).x
    )
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


def test_modules_pass_scan_options_to_lstm(monkeypatch):
    # The nnx and linen modules are thin wrappers: their __call__ must hand the path
    # arguments to `jaxlstm.lstm` unchanged, and the result must not depend on them.
    import jaxlstm.linen

    T, B, I, H = 4, 2, 3, 4
    x = jnp.asarray(
        make_problem(LSTMConfig(I, H), batch=B, steps=T, with_hx=False, dtype="float32", seed=0).x
    )
    path = {"scan": ScanOptions(unroll=2, custom_vjp=True, remat=True)}
    for module_file, apply in (
        (jaxlstm.nnx, lambda **kw: jaxlstm.nnx.LSTM(I, H, rngs=nnx.Rngs(0))(x, **kw)),
        (jaxlstm.linen, lambda **kw: _linen_apply(jaxlstm.linen.LSTM(H), x, **kw)),
    ):
        seen = []
        real = module_file.lstm

        def spy(*args, real=real, seen=seen, **kwargs):
            seen.append({k: kwargs.get(k) for k in path})
            return real(*args, **kwargs)

        monkeypatch.setattr(module_file, "lstm", spy)
        plain, with_path = apply(), apply(**path)
        assert seen[-1] == path, f"{module_file.__name__}: lstm got {seen[-1]}"
        for got, want in zip(jax.tree.leaves(with_path), jax.tree.leaves(plain), strict=True):
            assert_close(got, want, "float32", module_file.__name__)


def _linen_apply(module, x, **kwargs):
    variables = module.init(jax.random.key(0), x)
    return module.apply(variables, x, **kwargs)


# --- from_params --------------------------------------------------------------------------------

FROM_PARAMS_CONFIG = LSTMConfig(3, 4, num_layers=2, bidirectional=True, proj_size=2)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_from_params_holds_the_exact_values_in_their_dtype(dtype):
    with precision("float64" if dtype == "float64" else "float32"):
        params = {
            k: np.asarray(v).astype(jnp.dtype(dtype))
            for k, v in random_params(FROM_PARAMS_CONFIG, 1, dtype="float64").items()
        }
        model = from_params(params, FROM_PARAMS_CONFIG)
        assert isinstance(model, jaxlstm.LSTM) and model.config == FROM_PARAMS_CONFIG
        assert model.param_dtype == jnp.dtype(dtype)
        assert list(model.params) == list(FROM_PARAMS_CONFIG.param_shapes())
        for name, value in model.params.items():
            assert value.dtype == jnp.dtype(dtype), name
            np.testing.assert_array_equal(
                np.asarray(value, np.float64), np.asarray(params[name], np.float64), err_msg=name
            )
        x = jnp.ones((5, 2, 3), jnp.dtype(dtype))
        for got, want in zip(
            jax.tree.leaves(model(x)),
            jax.tree.leaves(jaxlstm.lstm(params, x, config=model.config)),
            strict=True,
        ):
            np.testing.assert_array_equal(got, want)


def test_from_params_of_a_cell_config_is_an_lstm_cell():
    config = LSTMCellConfig(3, 5, bias=False)
    params = random_params(config, 2)
    cell = from_params(params, config, dtype=jnp.bfloat16)
    assert isinstance(cell, jaxlstm.LSTMCell) and cell.config == config
    assert cell.dtype == jnp.bfloat16 and cell.param_dtype == jnp.float32
    for name in params:
        np.testing.assert_array_equal(cell.params[name], params[name], err_msg=name)
    x = jnp.ones((2, 3))
    want = jaxlstm.lstm_cell(
        {k: v.astype(jnp.bfloat16) for k, v in cell.params.items()}, x.astype(jnp.bfloat16)
    )
    for got, w in zip(cell(x), want, strict=True):
        np.testing.assert_array_equal(got, w)


def test_from_params_lists_every_wrong_name_and_shape():
    params = random_params(FROM_PARAMS_CONFIG)
    del params["bias_hh_l1"]
    params["weight_ih_l0"] = np.zeros((16, 4), np.float32)
    params["weight_hr_l2"] = np.zeros((2, 4), np.float32)
    expect(
        ValueError,
        lambda: from_params(params, FROM_PARAMS_CONFIG),
        "params do not match the configuration",
        "missing keys ['bias_hh_l1']",
        "unexpected keys ['weight_hr_l2']",
        "weight_ih_l0: expected (16, 3), got (16, 4)",
    )


def test_dropout_stream_is_usable_after_from_params():
    config = LSTMConfig(3, 6, num_layers=2, dropout=0.5)
    params = random_params(config)
    x = jnp.ones((4, 2, 3))
    model = from_params(params, config)  # train mode, like a new module
    a, _ = model(x)
    b, _ = model(x)
    assert not np.array_equal(a, b), "each training call must draw a new mask"
    model.eval()
    c, _ = model(x)
    np.testing.assert_array_equal(c, model(x)[0])
    np.testing.assert_array_equal(c, jaxlstm.lstm(params, x, config=config)[0])
    # The stream comes from `rngs`: the same seed, the same masks.
    first = from_params(params, config, rngs=nnx.Rngs(dropout=5))(x)[0]
    again = from_params(params, config, rngs=nnx.Rngs(dropout=5))(x)[0]
    other = from_params(params, config, rngs=nnx.Rngs(dropout=6))(x)[0]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


# --- as_lstm, as_cell, set_params ---------------------------------------------------------------


@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
def test_cell_as_lstm_equals_stepping_the_cell(batch_first):
    cell = random_lstm(LSTMCellConfig(3, 5), 1)
    p = make_problem(LSTMConfig(3, 5), batch=2, steps=6, with_hx=True, dtype="float32", seed=1)
    x, (h0, c0) = jnp.asarray(p.x), tuple(jnp.asarray(a) for a in p.hx)  # [T, B, I], [1, B, H]
    h, c, outs = h0[0], c0[0], []
    for t in range(x.shape[0]):
        h, c = cell(x[t], (h, c))
        outs.append(h)
    lstm = cell.as_lstm(batch_first=batch_first)
    assert isinstance(lstm, jaxlstm.LSTM) and lstm.batch_first == batch_first
    out, (h_n, c_n) = lstm(jnp.swapaxes(x, 0, 1) if batch_first else x, (h0, c0))
    assert_close(out, jnp.stack(outs, axis=1 if batch_first else 0), what="out")
    assert_close(h_n[0], h, what="h_n")
    assert_close(c_n[0], c, what="c_n")


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_lstm_as_cell_round_trip(bias):
    lstm = random_lstm(LSTMConfig(3, 5, bias=bias, batch_first=True), 2)
    cell = lstm.as_cell()
    assert isinstance(cell, jaxlstm.LSTMCell) and cell.config == LSTMCellConfig(3, 5, bias=bias)
    for name, value in cell.params.items():
        np.testing.assert_array_equal(value, lstm.params[name + "_l0"], err_msg=name)
    back = cell.as_lstm()
    assert list(back.params) == list(lstm.params)
    for name, value in back.params.items():
        np.testing.assert_array_equal(value, lstm.params[name], err_msg=name)
    x = jnp.ones((2, 3))  # one step
    out, (h_n, c_n) = lstm(x[:, None])
    h, c = cell(x)
    assert_close(out[:, 0], h, what="out")
    assert_close(h_n[0], h, what="h_n")
    assert_close(c_n[0], c, what="c_n")


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(num_layers=2), "num_layers=2"),
        (dict(bidirectional=True), "bidirectional=True"),
        (dict(proj_size=2), "proj_size=2"),
    ],
    ids=["L2", "bidirectional", "proj"],
)
def test_as_cell_of_what_no_cell_holds_is_a_value_error(kwargs, fragment):
    lstm = random_lstm(LSTMConfig(3, 5, **kwargs))
    expect(ValueError, lstm.as_cell, "one-layer, one-direction LSTM without projection", fragment)


def test_set_params_checks_everything_before_changing_anything():
    model = random_lstm(LSTMConfig(3, 5), 0)
    before = model.params
    bad = {
        "weight_ih_l0": np.ones((20, 3)),  # fine
        "weight_hh_l0": np.ones((20, 4)),  # mis-shaped
        "weight_hr_l0": np.ones((2, 5)),  # unknown
    }
    expect(
        ValueError,
        lambda: model.set_params(bad),
        "unexpected keys ['weight_hr_l0']",
        "weight_hh_l0: expected (20, 5), got (20, 4)",
    )
    for name, value in model.params.items():
        np.testing.assert_array_equal(value, before[name], err_msg=f"{name} changed")
    model.set_params({"weight_ih_l0": np.full((20, 3), 0.5, np.float64)})  # a subset, cast
    assert model.weight_ih_l0.get_value().dtype == jnp.float32
    np.testing.assert_array_equal(model.params["weight_ih_l0"], 0.5)
    np.testing.assert_array_equal(model.params["weight_hh_l0"], before["weight_hh_l0"])


# --- bad input: (call, exception, fragments naming argument, expected, got) --------------------

RNGS = "nnx.Rngs such as nnx.Rngs(0)"

CONSTRUCTOR_CASES = {
    "LSTM(hidden_size=0)": (
        lambda: jaxlstm.LSTM(3, 0, rngs=nnx.Rngs(0)),
        ValueError,
        "hidden_size",
        "positive int",
        "got 0",
    ),
    "LSTM(proj_size=H)": (
        lambda: jaxlstm.LSTM(3, 4, proj_size=4, rngs=nnx.Rngs(0)),
        ValueError,
        "proj_size",
        "hidden_size=4",
        "got 4",
    ),
    "LSTM(param_dtype=int32)": (
        lambda: jaxlstm.LSTM(3, 4, param_dtype=jnp.int32, rngs=nnx.Rngs(0)),
        TypeError,
        "param_dtype",
        "floating-point",
        "got int32",
    ),
    "LSTMCell(input_size=-1)": (
        lambda: jaxlstm.LSTMCell(-1, 4, rngs=nnx.Rngs(0)),
        ValueError,
        "input_size",
        "positive int",
        "got -1",
    ),
    "LSTMCell(hidden_size=2.0)": (
        lambda: jaxlstm.LSTMCell(3, 2.0, rngs=nnx.Rngs(0)),
        TypeError,
        "hidden_size",
        "positive int",
        "got 2.0",
    ),
    "LSTMCell(bias='no')": (
        lambda: jaxlstm.LSTMCell(3, 4, bias="no", rngs=nnx.Rngs(0)),
        TypeError,
        "bias",
        "bool",
        "got 'no'",
    ),
    "LSTM(dtype='junk')": (
        lambda: jaxlstm.LSTM(3, 4, dtype="junk", rngs=nnx.Rngs(0)),
        TypeError,
        "dtype",
        "floating-point",
        "got 'junk'",
    ),
    "LSTM(dtype=int32)": (
        lambda: jaxlstm.LSTM(3, 4, dtype=jnp.int32, rngs=nnx.Rngs(0)),
        TypeError,
        "dtype",
        "floating-point",
        "got int32",
    ),
    "LSTMCell(param_dtype=int32)": (
        lambda: jaxlstm.LSTMCell(3, 4, param_dtype=jnp.int32, rngs=nnx.Rngs(0)),
        TypeError,
        "param_dtype",
        "floating-point",
        "got int32",
    ),
    # rngs: an nnx.Rngs, not what one is made from
    "LSTM(rngs=0)": (lambda: jaxlstm.LSTM(3, 4, rngs=0), TypeError, "rngs", RNGS, "got int 0"),
    "LSTM(rngs=key)": (
        lambda: jaxlstm.LSTM(3, 4, rngs=jax.random.key(0)),
        TypeError,
        "rngs",
        RNGS,
        "got PRNGKeyArray",
    ),
    "LSTM(rngs=numpy Generator)": (
        lambda: jaxlstm.LSTM(3, 4, rngs=np.random.default_rng(0)),
        TypeError,
        "rngs",
        RNGS,
        "got Generator",
    ),
    "LSTMCell(rngs=0)": (
        lambda: jaxlstm.LSTMCell(3, 4, rngs=0),
        TypeError,
        "rngs",
        RNGS,
        "got int 0",
    ),
    "LSTMCell(rngs=key)": (
        lambda: jaxlstm.LSTMCell(3, 4, rngs=jax.random.key(0)),
        TypeError,
        "rngs",
        RNGS,
        "got PRNGKeyArray",
    ),
    "LSTMCell(rngs=numpy Generator)": (
        lambda: jaxlstm.LSTMCell(3, 4, rngs=np.random.default_rng(0)),
        TypeError,
        "rngs",
        RNGS,
        "got Generator",
    ),
    "from_params(rngs=0)": (
        lambda: from_params(random_params(LSTMConfig(3, 4)), LSTMConfig(3, 4), rngs=0),
        TypeError,
        "rngs",
        RNGS,
        "got int 0",
    ),
    "from_params(config=dict)": (
        lambda: from_params(random_params(LSTMConfig(3, 4)), {"input_size": 3}),
        TypeError,
        "config",
        "LSTMConfig or LSTMCellConfig",
        "got dict",
    ),
    "LSTM(kernel_init=3)": (
        lambda: jaxlstm.LSTM(3, 4, kernel_init=3, rngs=nnx.Rngs(0)),
        TypeError,
        "kernel_init",
        "initializer",
        "got 3",
    ),
}


@pytest.mark.parametrize("case", CONSTRUCTOR_CASES.values(), ids=CONSTRUCTOR_CASES.keys())
def test_constructor_argument_errors(case):
    fn, exc, *fragments = case
    expect(exc, fn, *fragments)


X = jnp.ones((7, 2, 3))  # [T=7, B=2, I=3]

CALL_CASES = {
    "LSTM x wrong I": (
        lambda: jaxlstm.LSTM(3, 5, rngs=nnx.Rngs(0))(jnp.ones((7, 2, 4))),
        ValueError,
        "input",
        "input_size=3",
        "got shape (7, 2, 4)",
    ),
    "LSTM batch_first hx batch mismatch": (
        lambda: jaxlstm.LSTM(3, 5, batch_first=True, rngs=nnx.Rngs(0))(
            jnp.ones((2, 7, 3)), (jnp.zeros((1, 7, 5)), jnp.zeros((1, 7, 5)))
        ),
        ValueError,
        "hx h_0",
        "(1, 2, 5)",
        "input batch B=2",
        "got (1, 7, 5)",
    ),
    "LSTM seq_lengths float": (
        lambda: jaxlstm.LSTM(3, 5, rngs=nnx.Rngs(0))(X, seq_lengths=jnp.array([1.0, 2.0])),
        TypeError,
        "seq_lengths",
        "integer",
        "got float32",
    ),
    "LSTM(dtype=bf16) int x": (
        lambda: jaxlstm.LSTM(3, 5, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))(
            jnp.ones((7, 2, 3), jnp.int32)
        ),
        TypeError,
        "x",
        "floating-point",
        "got int32",
    ),
    "LSTMCell(dtype=bf16) int x": (
        lambda: jaxlstm.LSTMCell(3, 5, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))(
            jnp.ones((2, 3), jnp.int32)
        ),
        TypeError,
        "x",
        "floating-point",
        "got int32",
    ),
    "LSTMCell x wrong I": (
        lambda: jaxlstm.LSTMCell(3, 5, rngs=nnx.Rngs(0))(jnp.ones((2, 4))),
        ValueError,
        "x",
        "(2, 3)",
        "got (2, 4)",
    ),
}


@pytest.mark.parametrize("case", CALL_CASES.values(), ids=CALL_CASES.keys())
def test_call_argument_errors(case):
    fn, exc, *fragments = case
    expect(exc, fn, *fragments)
