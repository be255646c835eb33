"""jaxlstm.lstm, the functional core: against the plain reference (jitted and not), jit, vmap,
dropout, derivatives against finite differences, and its bad-input errors.

Values that cannot be checked under `jax.jit` (traced seq_lengths) are checked by
`jaxlstm.checked` (tests/test_checked.py).
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import jaxlstm
from jaxlstm import LSTMConfig
from tests.harness import (
    assert_close,
    check_grads_rev2,
    compiled,
    expect,
    make_problem,
    precision,
    random_params,
    reference_lstm,
    run_jax,
)

CONFIGS = {
    "plain": LSTMConfig(3, 5),
    "L2-bi": LSTMConfig(3, 5, num_layers=2, bidirectional=True),
    "L3-proj-bf": LSTMConfig(3, 5, num_layers=3, proj_size=2, batch_first=True),
    "L2-bi-proj-nobias": LSTMConfig(
        3, 5, num_layers=2, bidirectional=True, proj_size=4, bias=False
    ),
}


def _inputs(config, seed=0, T=6, B=4, seq_lengths=None):
    """`(params, x, hx)` of a float32 problem with an initial state, as jax arrays."""
    return make_problem(
        config, batch=B, steps=T, with_hx=True, seq_lengths=seq_lengths, dtype="float32", seed=seed
    ).jax_inputs()


# --- against the reference: lstm_cell in Python loops --------------------------------------------


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


VARIANT_CASES = {
    "bi-lengths": (LSTMConfig(3, 4, bidirectional=True), [3, 1]),
    "proj-bf-nobias": (LSTMConfig(3, 4, proj_size=2, batch_first=True, bias=False), None),
}


def _variant_problem(case: str):
    config, lengths = VARIANT_CASES[case]
    return make_problem(
        config, batch=2, steps=3, with_hx=True, seq_lengths=lengths, dtype="float32", seed=5
    )


@functools.cache
def _reference_run(case: str) -> dict[str, np.ndarray]:
    """The reference's outputs and gradients, once per case for both variants."""
    with precision("float32"):
        return run_jax(_variant_problem(case), reference_lstm)


class LstmMatchesReferenceTest(chex.TestCase):
    """`lstm` jitted and op by op against the reference: outputs and every gradient.

    Small problems (T=3, B=2, one layer): the tests above and tests/test_layer.py cover the
    configurations; this covers both ways of running the core.
    """

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((case, case) for case in VARIANT_CASES))
    def test_lstm_matches_reference(self, case):
        with precision("float32"):
            run = self.variant(jaxlstm.lstm, static_argnames=("config",))
            got = run_jax(_variant_problem(case), run, jit=False)
        want = _reference_run(case)
        assert got.keys() == want.keys()
        for name in want:
            chex.assert_shape(got[name], want[name].shape)
            assert_close(got[name], want[name], "float32", name)


def test_padded_outputs_are_exactly_zero():
    config = CONFIGS["L2-bi"]
    params, x, hx = _inputs(config)
    lengths = np.array([6, 1, 3, 6])
    out, _ = jaxlstm.lstm(params, x, hx, config=config, seq_lengths=lengths)
    for b, n in enumerate(lengths):
        assert np.all(np.asarray(out[n:, b]) == 0.0)
        assert np.all(np.asarray(out[:n, b]) != 0.0)


# --- jit and vmap -------------------------------------------------------------------------------


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
    assert_close(first, eager, "float32-jit", "jit vs eager")
    chex.assert_shape(second[0], first[0].shape)


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
    ensemble = [random_params(config, seed) for seed in range(3)]
    params = jax.tree.map(lambda *a: jnp.stack(a), *ensemble)
    p = make_problem(config, batch=2, steps=6, with_hx=False, dtype="float32", seed=1)
    x = jnp.asarray(p.x)
    outs = jax.vmap(lambda p: jaxlstm.lstm(p, x, config=config)[0])(params)
    assert_close(outs[1], jaxlstm.lstm(ensemble[1], x, config=config)[0])


# --- dropout between layers ---------------------------------------------------------------------


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


def test_functional_dropout_is_a_function_of_the_key():
    cfg = jaxlstm.LSTMConfig(3, 6, num_layers=2, dropout=0.5)
    params = random_params(cfg)
    x = jnp.ones((4, 2, 3))
    run = jax.jit(lambda k: jaxlstm.lstm(params, x, config=cfg, dropout_key=k)[0])
    np.testing.assert_array_equal(run(jax.random.key(7)), run(jax.random.key(7)))
    assert not np.array_equal(run(jax.random.key(7)), run(jax.random.key(8)))


# --- derivatives against finite differences (float64, what torch's gradcheck does) -------------

# Each case costs ~5 CPU-seconds (three compilations, the second-order one dominating), so
# the cases are few and each covers several features: one layer without and with
# seq_lengths and proj_size, and the full stacked bidirectional LSTM.
LSTM_CASES = {
    "layer": dict(config=LSTMConfig(3, 4), lengths=None),
    "layer-proj-lengths": dict(config=LSTMConfig(3, 4, proj_size=2), lengths=[1, 5, 4]),
    "stacked-bidir-proj-lengths-nobias": dict(
        config=LSTMConfig(
            3, 4, num_layers=2, bidirectional=True, proj_size=3, batch_first=True, bias=False
        ),
        lengths=[2, 5, 4],
    ),
}


def _float64_problem(config, lengths=None, seed=0):
    return make_problem(
        config, batch=3, steps=5, with_hx=True, seq_lengths=lengths, dtype="float64", seed=seed
    )


@pytest.mark.parametrize("case", LSTM_CASES.values(), ids=LSTM_CASES.keys())
def test_lstm_grads(case):
    """First and second order reverse mode against central differences (float64)."""
    config = case["config"]
    p = _float64_problem(config, case["lengths"])
    with precision("float64"):
        params, x, (h0, c0) = p.jax_inputs()

        def f(params, x, h0, c0):
            return jaxlstm.lstm(params, x, (h0, c0), config=config, seq_lengths=p.seq_lengths)

        check_grads_rev2(f, (params, x, h0, c0))


HVP_CONFIG = LSTMConfig(3, 4, num_layers=2, bidirectional=True, proj_size=2)
HVP_LENGTHS = [5, 3, 4]


def _hvp_problem():
    p = _float64_problem(HVP_CONFIG, HVP_LENGTHS, seed=1)
    params, x, hx = p.jax_inputs()

    def loss(params):
        out, (h_n, c_n) = jaxlstm.lstm(params, x, hx, config=HVP_CONFIG, seq_lengths=p.seq_lengths)
        return jnp.sum(jnp.tanh(out) * p.g_out) + jnp.sum(h_n**2) + jnp.sum(jnp.sin(c_n))

    v = {k: jnp.asarray(a) for k, a in random_params(HVP_CONFIG, 2, dtype="float64").items()}
    grad = compiled(jax.grad(loss), params)
    # The reference: a central difference of the (compiled, checked above) gradient along v.
    step = 1e-5
    plus = grad(jax.tree.map(lambda p, d: p + step * d, params, v))
    minus = grad(jax.tree.map(lambda p, d: p - step * d, params, v))
    expected = jax.tree.map(lambda a, b: (a - b) / (2 * step), plus, minus)
    return loss, params, v, expected


def test_hessian_vector_product_reverse_over_reverse():
    with precision("float64"):
        loss, params, v, expected = _hvp_problem()
        grad = jax.grad(loss)
        hvp = compiled(
            jax.grad(lambda p: sum(jnp.vdot(g, v[k]) for k, g in grad(p).items())), params
        )
        assert_close(hvp(params), expected, "float64-hvp", "reverse over reverse")


def test_hessian_vector_product_forward_over_reverse():
    """Forward-over-reverse, the cheap HVP, runs through the custom VJP and matches."""
    with precision("float64"):
        loss, params, v, expected = _hvp_problem()
        hvp = compiled(lambda p: jax.jvp(jax.grad(loss), (p,), (v,))[1], params)(params)
        assert_close(hvp, expected, "float64-hvp", "forward over reverse")


# --- bad input: (call, exception, fragments naming argument, expected, got) --------------------

CFG = LSTMConfig(3, 5, num_layers=2)  # I=3, H=5, L=2, D=1
PARAMS = random_params(CFG)
X = jnp.ones((7, 2, 3))  # [T=7, B=2, I=3]
H0 = jnp.zeros((2, 2, 5))  # [D*L=2, B=2, H=5]
PROJ_CFG = LSTMConfig(3, 5, num_layers=2, proj_size=2)


def call(x=X, hx=None, params=PARAMS, config=CFG, **kwargs):
    """A thunk calling `jaxlstm.lstm` with the defaults above, overridden by the arguments."""
    return lambda: jaxlstm.lstm(params, x, hx, config=config, **kwargs)


SHAPE = "3-D [T, B, I] ([B, T, I] with batch_first) or unbatched 2-D [T, I]"
RANGE = "[1, T=7]"

CALL_CASES = {
    # input
    "x rank 1": (call(x=jnp.ones(3)), ValueError, "input", SHAPE, "got shape (3,)"),
    "x rank 4": (
        call(x=jnp.ones((1, 7, 2, 3))),
        ValueError,
        "input",
        SHAPE,
        "got shape (1, 7, 2, 3)",
    ),
    "x wrong I": (
        call(x=jnp.ones((7, 2, 4))),
        ValueError,
        "input",
        "input_size=3",
        "got shape (7, 2, 4)",
    ),
    "x int": (
        call(x=jnp.ones((7, 2, 3), jnp.int32)),
        TypeError,
        "input",
        "floating-point",
        "got int32",
    ),
    "x bool": (call(x=jnp.ones((7, 2, 3), bool)), TypeError, "input", "floating-point", "got bool"),
    "x T=0": (call(x=jnp.ones((0, 2, 3))), ValueError, "input", "T >= 1", "got shape (0, 2, 3)"),
    "x T=0 unbatched": (
        call(x=jnp.ones((0, 3))),
        ValueError,
        "input",
        "T >= 1",
        "got shape (0, 3)",
    ),
    "x T=0 batch_first": (
        call(x=jnp.ones((2, 0, 3)), config=LSTMConfig(3, 5, num_layers=2, batch_first=True)),
        ValueError,
        "input",
        "T >= 1",
        "got shape (2, 0, 3)",
    ),
    # hx
    "hx bare array": (
        call(hx=H0),
        TypeError,
        "hx",
        "tuple (h_0, c_0)",
        "got a bare ArrayImpl of shape (2, 2, 5)",
    ),
    "hx 3-tuple": (
        call(hx=(H0, H0, H0)),
        TypeError,
        "hx",
        "tuple (h_0, c_0)",
        "got tuple of length 3",
    ),
    "hx None inside": (call(hx=(H0, None)), TypeError, "hx c_0", "an array", "got None"),
    "hx h_0 rank": (
        call(hx=(H0[0], H0)),
        ValueError,
        "hx h_0",
        "3-D",
        "(2, 2, 5)",
        "got shape (2, 5)",
    ),
    "hx batch != x batch": (
        call(hx=(jnp.zeros((2, 3, 5)), jnp.zeros((2, 3, 5)))),
        ValueError,
        "hx h_0",
        "(D*L, B, H_out) = (2, 2, 5)",
        "input batch B=2",
        "got (2, 3, 5)",
    ),
    "hx c_0 wrong H": (
        call(hx=(H0, jnp.zeros((2, 2, 4)))),
        ValueError,
        "hx c_0",
        "(D*L, B, H) = (2, 2, 5)",
        "got (2, 2, 4)",
    ),
    "hx wrong D*L": (
        call(hx=(jnp.zeros((1, 2, 5)), jnp.zeros((1, 2, 5)))),
        ValueError,
        "hx h_0",
        "(2, 2, 5)",
        "got (1, 2, 5)",
    ),
    "hx h_0 proj size": (
        call(hx=(H0, H0), config=PROJ_CFG, params=random_params(PROJ_CFG)),
        ValueError,
        "hx h_0",
        "(D*L, B, H_out) = (2, 2, 2)",
        "got (2, 2, 5)",
    ),
    "hx int": (
        call(hx=(H0.astype(jnp.int32), H0)),
        TypeError,
        "hx h_0",
        "floating-point",
        "got int32",
    ),
    "hx 3-D for unbatched x": (
        call(x=jnp.ones((7, 3)), hx=(H0, H0)),
        ValueError,
        "hx h_0",
        "2-D for unbatched",
        "(2, 5)",
        "got shape (2, 2, 5)",
    ),
    # seq_lengths
    "seq_lengths float": (
        call(seq_lengths=jnp.array([7.0, 3.0])),
        TypeError,
        "seq_lengths",
        "integer dtype",
        "got float32",
    ),
    "seq_lengths bool": (
        call(seq_lengths=np.array([True, True])),
        TypeError,
        "seq_lengths",
        "integer",
        "got bool",
    ),
    "seq_lengths too long": (
        call(seq_lengths=np.array([7, 3, 2])),
        ValueError,
        "seq_lengths",
        "(B,) = (2,)",
        "got (3,)",
    ),
    "seq_lengths too short": (
        call(seq_lengths=[7]),
        ValueError,
        "seq_lengths",
        "(B,) = (2,)",
        "got (1,)",
    ),
    "seq_lengths 2-D": (
        call(seq_lengths=np.array([[7, 3]])),
        ValueError,
        "seq_lengths",
        "(2,)",
        "got (1, 2)",
    ),
    "seq_lengths zero": (
        call(seq_lengths=np.array([0, 3])),
        ValueError,
        "seq_lengths",
        RANGE,
        "from 0 to 3",
    ),
    "seq_lengths negative": (
        call(seq_lengths=[-1, 3]),
        ValueError,
        "seq_lengths",
        RANGE,
        "from -1 to 3",
    ),
    "seq_lengths > T": (
        call(seq_lengths=np.array([8, 3])),
        ValueError,
        "seq_lengths",
        RANGE,
        "from 3 to 8",
    ),
    "seq_lengths > T jax array": (
        call(seq_lengths=jnp.array([7, 9])),
        ValueError,
        "seq_lengths",
        RANGE,
        "from 7 to 9",
    ),
    "seq_lengths vector for unbatched x": (
        call(x=jnp.ones((7, 3)), seq_lengths=np.array([3, 4])),
        ValueError,
        "seq_lengths",
        "scalar",
        "got shape (2,)",
    ),
    "seq_lengths 0 unbatched": (
        call(x=jnp.ones((7, 3)), seq_lengths=0),
        ValueError,
        "seq_lengths",
        RANGE,
        "from 0",
    ),
    # params, config and the rest
    "params missing key": (
        call(params={k: v for k, v in PARAMS.items() if k != "bias_hh_l1"}),
        ValueError,
        "params",
        "missing keys ['bias_hh_l1']",
    ),
    "params unexpected key": (
        call(params={**PARAMS, "weight_hr_l0": jnp.ones((2, 5))}),
        ValueError,
        "params",
        "unexpected keys ['weight_hr_l0']",
    ),
    "params wrong shape": (
        call(params={**PARAMS, "weight_hh_l0": jnp.ones((20, 4))}),
        ValueError,
        "params",
        "weight_hh_l0: expected (20, 5), got (20, 4)",
    ),
    "params not a mapping": (call(params=[1, 2]), TypeError, "params", "mapping", "got list"),
    "config not LSTMConfig": (
        call(config={"input_size": 3}),
        TypeError,
        "config",
        "LSTMConfig",
        "got dict",
    ),
    "dropout_key int": (
        call(config=LSTMConfig(3, 5, num_layers=2, dropout=0.5), dropout_key=3),
        TypeError,
        "dropout_key",
        "PRNG key",
        "got int 3",
    ),
    "dropout_key float array": (
        call(dropout_key=jnp.ones(2)),
        TypeError,
        "dropout_key",
        "PRNG key",
        "dtype float32 and shape (2,)",
    ),
    "scan={}": (call(scan={"remat": True}), TypeError, "scan", "ScanOptions", "got dict"),
}


@pytest.mark.parametrize("case", CALL_CASES.values(), ids=CALL_CASES.keys())
def test_call_argument_errors(case):
    fn, exc, *fragments = case
    expect(exc, fn, *fragments)


def test_shape_errors_are_raised_at_trace_time_under_jit():
    """Static checks fire while tracing: the same message under jit, nothing runs."""
    fn = jax.jit(lambda x, h, c: jaxlstm.lstm(PARAMS, x, (h, c), config=CFG))
    expect(
        ValueError,
        lambda: fn(X, jnp.zeros((2, 3, 5)), H0),
        "hx h_0",
        "input batch B=2",
        "got (2, 3, 5)",
    )
    expect(
        TypeError, lambda: fn(X.astype(jnp.int32), H0, H0), "input", "floating-point", "got int32"
    )
    fn = jax.jit(lambda x, n: jaxlstm.lstm(PARAMS, x, config=CFG, seq_lengths=n))
    expect(TypeError, lambda: fn(X, jnp.array([1.0, 2.0])), "seq_lengths", "integer", "got float32")
    expect(
        ValueError, lambda: fn(X, jnp.array([1, 2, 3])), "seq_lengths", "(B,) = (2,)", "got (3,)"
    )


# --- seq_lengths under jit ----------------------------------------------------------------------


def test_concrete_seq_lengths_work_under_jit():
    """Regression: numpy seq_lengths closed over in a jitted function used to raise
    ConcretizationTypeError (the range check called int() on a traced min())."""
    lengths = np.array([4, 7])
    fn = jax.jit(lambda x: jaxlstm.lstm(PARAMS, x, config=CFG, seq_lengths=lengths))
    out, (h_n, _) = fn(X)
    eager, (h_eager, _) = jaxlstm.lstm(PARAMS, X, config=CFG, seq_lengths=lengths)
    assert_close(out, eager, "float32-jit", "out")
    assert_close(h_n, h_eager, "float32-jit", "h_n")


def test_concrete_seq_lengths_still_checked_under_jit():
    lengths = np.array([0, 7])
    fn = jax.jit(lambda x: jaxlstm.lstm(PARAMS, x, config=CFG, seq_lengths=lengths))
    expect(ValueError, lambda: fn(X), "seq_lengths", RANGE, "from 0 to 7")


def test_traced_out_of_range_seq_lengths_behave_as_documented():
    """What `lstm`'s docstring says happens when traced lengths are out of range (no error):
    ≤ 0 gives no valid step (out 0, h_n/c_n = h_0/c_0), > T acts as T."""
    config = LSTMConfig(3, 5, bidirectional=True)
    params, x, hx = make_problem(
        config, batch=2, steps=7, with_hx=True, dtype="float32", seed=1
    ).jax_inputs()
    fn = jax.jit(lambda n: jaxlstm.lstm(params, x, hx, config=config, seq_lengths=n))
    out, (h_n, c_n) = fn(jnp.array([0, -3]))
    np.testing.assert_array_equal(out, 0.0)
    np.testing.assert_array_equal(h_n, hx[0])
    np.testing.assert_array_equal(c_n, hx[1])
    too_long, full = fn(jnp.array([9, 100])), fn(jnp.array([7, 7]))
    for a, b in zip(jax.tree.leaves(too_long), jax.tree.leaves(full), strict=True):
        np.testing.assert_array_equal(a, b)
