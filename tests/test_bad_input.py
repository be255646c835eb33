"""Bad input gets a clear error, never a wrong answer.

Every case is a row of a table: what is called, the exception type, and fragments that the
message must contain — the argument's name, the expected value and the actual value. Values
that cannot be checked under `jax.jit` (traced seq_lengths) are checked by `jaxlstm.checked`,
tested at the end.
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.experimental import checkify

import jaxlstm
import jaxlstm.checked
from jaxlstm import LSTMConfig

CFG = LSTMConfig(3, 5, num_layers=2)  # I=3, H=5, L=2, D=1
PARAMS = jaxlstm.init_params(jax.random.key(0), CFG)
X = jnp.ones((7, 2, 3))  # [T=7, B=2, I=3]
H0 = jnp.zeros((2, 2, 5))  # [D*L=2, B=2, H=5]
CELL = {"weight_ih": jnp.ones((20, 3)), "weight_hh": jnp.ones((20, 5))}  # I=3, H=5


def expect(exc: type[Exception], fn, *fragments: str) -> None:
    """Asserts `fn()` raises `exc` with every fragment in its message."""
    with pytest.raises(exc) as info:
        fn()
    message = str(info.value)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"message {message!r} lacks {missing}"


def call(x=X, hx=None, params=PARAMS, config=CFG, **kwargs):
    """A thunk calling `jaxlstm.lstm` with the defaults above, overridden by the arguments."""
    return lambda: jaxlstm.lstm(params, x, hx, config=config, **kwargs)


def config(*args, **kwargs):
    def make():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dropout with one layer warns, as torch does
            return LSTMConfig(*args, **kwargs)

    return make


# --- constructor arguments: (call, exception, fragments naming argument, expected, got) -------

CONSTRUCTOR_CASES = {
    "input_size=0": (config(0, 5), ValueError, "input_size", "positive int", "got 0"),
    "input_size=-1": (config(-1, 5), ValueError, "input_size", "positive int", "got -1"),
    "input_size=2.5": (config(2.5, 5), TypeError, "input_size", "positive int", "got 2.5 of type float"),
    "input_size=True": (config(True, 5), TypeError, "input_size", "positive int", "got True of type bool"),
    "hidden_size=0": (config(3, 0), ValueError, "hidden_size", "positive int", "got 0"),
    "hidden_size=None": (config(3, None), TypeError, "hidden_size", "positive int", "got None"),
    "hidden_size='5'": (config(3, "5"), TypeError, "hidden_size", "positive int", "got '5' of type str"),
    "num_layers=0": (config(3, 5, num_layers=0), ValueError, "num_layers", "positive int", "got 0"),
    "num_layers=1.0": (config(3, 5, num_layers=1.0), TypeError, "num_layers", "positive int", "got 1.0"),
    "bias=1": (config(3, 5, bias=1), TypeError, "bias", "bool", "got 1 of type int"),
    "batch_first='yes'": (config(3, 5, batch_first="yes"), TypeError, "batch_first", "bool", "got 'yes'"),
    "bidirectional=None": (config(3, 5, bidirectional=None), TypeError, "bidirectional", "bool", "got None"),
    "dropout=-0.1": (config(3, 5, dropout=-0.1), ValueError, "dropout", "[0, 1]", "got -0.1"),
    "dropout=1.5": (config(3, 5, dropout=1.5), ValueError, "dropout", "[0, 1]", "got 1.5"),
    "dropout=nan": (config(3, 5, num_layers=2, dropout=float("nan")), ValueError, "dropout", "[0, 1]", "got nan"),
    "dropout='0.5'": (config(3, 5, dropout="0.5"), TypeError, "dropout", "number", "got '0.5' of type str"),
    "dropout=True": (config(3, 5, dropout=True), TypeError, "dropout", "number", "got True of type bool"),
    "proj_size=-1": (config(3, 5, proj_size=-1), ValueError, "proj_size", "[0, hidden_size=5)", "got -1"),
    "proj_size=H": (config(3, 5, proj_size=5), ValueError, "proj_size", "[0, hidden_size=5)", "got 5"),
    "proj_size>H": (config(3, 5, proj_size=6), ValueError, "proj_size", "[0, hidden_size=5)", "got 6"),
    "proj_size=1.0": (config(3, 5, proj_size=1.0), TypeError, "proj_size", "int", "got 1.0 of type float"),
    "LSTM(hidden_size=0)": (
        lambda: jaxlstm.LSTM(3, 0, rngs=nnx.Rngs(0)), ValueError, "hidden_size", "positive int", "got 0"
    ),
    "LSTM(proj_size=H)": (
        lambda: jaxlstm.LSTM(3, 4, proj_size=4, rngs=nnx.Rngs(0)), ValueError, "proj_size", "hidden_size=4", "got 4"
    ),
    "LSTM(param_dtype=int32)": (
        lambda: jaxlstm.LSTM(3, 4, param_dtype=jnp.int32, rngs=nnx.Rngs(0)),
        TypeError, "param_dtype", "floating-point", "got int32",
    ),
    "LSTMCell(input_size=-1)": (
        lambda: jaxlstm.LSTMCell(-1, 4, rngs=nnx.Rngs(0)), ValueError, "input_size", "positive int", "got -1"
    ),
    "LSTMCell(hidden_size=2.0)": (
        lambda: jaxlstm.LSTMCell(3, 2.0, rngs=nnx.Rngs(0)), TypeError, "hidden_size", "positive int", "got 2.0"
    ),
    "LSTMCell(bias='no')": (
        lambda: jaxlstm.LSTMCell(3, 4, bias="no", rngs=nnx.Rngs(0)), TypeError, "bias", "bool", "got 'no'"
    ),
    "LSTM(dtype='junk')": (
        lambda: jaxlstm.LSTM(3, 4, dtype="junk", rngs=nnx.Rngs(0)), TypeError, "dtype", "floating-point", "got 'junk'",
    ),
    "LSTM(dtype=int32)": (
        lambda: jaxlstm.LSTM(3, 4, dtype=jnp.int32, rngs=nnx.Rngs(0)), TypeError, "dtype", "floating-point", "got int32",
    ),
    "LSTMCell(param_dtype=int32)": (
        lambda: jaxlstm.LSTMCell(3, 4, param_dtype=jnp.int32, rngs=nnx.Rngs(0)),
        TypeError, "param_dtype", "floating-point", "got int32",
    ),
    "init_params(config=dict)": (
        lambda: jaxlstm.init_params(jax.random.key(0), {"input_size": 3}), TypeError, "config", "LSTMConfig", "got dict"
    ),
}


@pytest.mark.parametrize("case", CONSTRUCTOR_CASES.values(), ids=CONSTRUCTOR_CASES.keys())
def test_constructor_argument_errors(case):
    fn, exc, *fragments = case
    expect(exc, fn, *fragments)


# --- call arguments of jaxlstm.lstm ------------------------------------------------------------

SHAPE = "3-D [T, B, I] ([B, T, I] with batch_first) or unbatched 2-D [T, I]"

CALL_CASES = {
    # input
    "x rank 1": (call(x=jnp.ones(3)), ValueError, "input", SHAPE, "got shape (3,)"),
    "x rank 4": (call(x=jnp.ones((1, 7, 2, 3))), ValueError, "input", SHAPE, "got shape (1, 7, 2, 3)"),
    "x wrong I": (call(x=jnp.ones((7, 2, 4))), ValueError, "input", "input_size=3", "got shape (7, 2, 4)"),
    "x int": (call(x=jnp.ones((7, 2, 3), jnp.int32)), TypeError, "input", "floating-point", "got int32"),
    "x bool": (call(x=jnp.ones((7, 2, 3), bool)), TypeError, "input", "floating-point", "got bool"),
    "x T=0": (call(x=jnp.ones((0, 2, 3))), ValueError, "input", "T >= 1", "got shape (0, 2, 3)"),
    "x T=0 unbatched": (call(x=jnp.ones((0, 3))), ValueError, "input", "T >= 1", "got shape (0, 3)"),
    "x T=0 batch_first": (
        call(x=jnp.ones((2, 0, 3)), config=LSTMConfig(3, 5, num_layers=2, batch_first=True)),
        ValueError, "input", "T >= 1", "got shape (2, 0, 3)",
    ),
    # hx
    "hx bare array": (call(hx=H0), TypeError, "hx", "tuple (h_0, c_0)", "got a bare ArrayImpl of shape (2, 2, 5)"),
    "hx 3-tuple": (call(hx=(H0, H0, H0)), TypeError, "hx", "tuple (h_0, c_0)", "got tuple of length 3"),
    "hx None inside": (call(hx=(H0, None)), TypeError, "hx c_0", "an array", "got None"),
    "hx h_0 rank": (call(hx=(H0[0], H0)), ValueError, "hx h_0", "3-D", "(2, 2, 5)", "got shape (2, 5)"),
    "hx batch != x batch": (
        call(hx=(jnp.zeros((2, 3, 5)), jnp.zeros((2, 3, 5)))),
        ValueError, "hx h_0", "(D*L, B, H_out) = (2, 2, 5)", "input batch B=2", "got (2, 3, 5)",
    ),
    "hx c_0 wrong H": (
        call(hx=(H0, jnp.zeros((2, 2, 4)))), ValueError, "hx c_0", "(D*L, B, H) = (2, 2, 5)", "got (2, 2, 4)"
    ),
    "hx wrong D*L": (
        call(hx=(jnp.zeros((1, 2, 5)), jnp.zeros((1, 2, 5)))), ValueError, "hx h_0", "(2, 2, 5)", "got (1, 2, 5)"
    ),
    "hx h_0 proj size": (
        call(hx=(H0, H0), config=LSTMConfig(3, 5, num_layers=2, proj_size=2),
             params=jaxlstm.init_params(jax.random.key(0), LSTMConfig(3, 5, num_layers=2, proj_size=2))),
        ValueError, "hx h_0", "(D*L, B, H_out) = (2, 2, 2)", "got (2, 2, 5)",
    ),
    "hx int": (call(hx=(H0.astype(jnp.int32), H0)), TypeError, "hx h_0", "floating-point", "got int32"),
    "hx 3-D for unbatched x": (
        call(x=jnp.ones((7, 3)), hx=(H0, H0)), ValueError, "hx h_0", "2-D for unbatched", "(2, 5)", "got shape (2, 2, 5)"
    ),
    # seq_lengths
    "seq_lengths float": (
        call(seq_lengths=jnp.array([7.0, 3.0])), TypeError, "seq_lengths", "integer dtype", "got float32"
    ),
    "seq_lengths bool": (call(seq_lengths=np.array([True, True])), TypeError, "seq_lengths", "integer", "got bool"),
    "seq_lengths too long": (
        call(seq_lengths=np.array([7, 3, 2])), ValueError, "seq_lengths", "(B,) = (2,)", "got (3,)"
    ),
    "seq_lengths too short": (call(seq_lengths=[7]), ValueError, "seq_lengths", "(B,) = (2,)", "got (1,)"),
    "seq_lengths 2-D": (call(seq_lengths=np.array([[7, 3]])), ValueError, "seq_lengths", "(2,)", "got (1, 2)"),
    "seq_lengths zero": (call(seq_lengths=np.array([0, 3])), ValueError, "seq_lengths", "[1, T=7]", "from 0 to 3"),
    "seq_lengths negative": (call(seq_lengths=[-1, 3]), ValueError, "seq_lengths", "[1, T=7]", "from -1 to 3"),
    "seq_lengths > T": (call(seq_lengths=np.array([8, 3])), ValueError, "seq_lengths", "[1, T=7]", "from 3 to 8"),
    "seq_lengths > T jax array": (
        call(seq_lengths=jnp.array([7, 9])), ValueError, "seq_lengths", "[1, T=7]", "from 7 to 9"
    ),
    "seq_lengths vector for unbatched x": (
        call(x=jnp.ones((7, 3)), seq_lengths=np.array([3, 4])), ValueError, "seq_lengths", "scalar", "got shape (2,)"
    ),
    "seq_lengths 0 unbatched": (call(x=jnp.ones((7, 3)), seq_lengths=0), ValueError, "seq_lengths", "[1, T=7]", "from 0"),
    # params, config and the rest
    "params missing key": (
        call(params={k: v for k, v in PARAMS.items() if k != "bias_hh_l1"}),
        ValueError, "params", "missing keys ['bias_hh_l1']",
    ),
    "params unexpected key": (
        call(params={**PARAMS, "weight_hr_l0": jnp.ones((2, 5))}), ValueError, "params", "unexpected keys ['weight_hr_l0']"
    ),
    "params wrong shape": (
        call(params={**PARAMS, "weight_hh_l0": jnp.ones((20, 4))}),
        ValueError, "params", "weight_hh_l0: expected (20, 5), got (20, 4)",
    ),
    "params not a mapping": (call(params=[1, 2]), TypeError, "params", "mapping", "got list"),
    "config not LSTMConfig": (call(config={"input_size": 3}), TypeError, "config", "LSTMConfig", "got dict"),
    "dropout_key int": (
        call(config=LSTMConfig(3, 5, num_layers=2, dropout=0.5), dropout_key=3),
        TypeError, "dropout_key", "PRNG key", "got int 3",
    ),
    "dropout_key float array": (
        call(dropout_key=jnp.ones(2)), TypeError, "dropout_key", "PRNG key", "dtype float32 and shape (2,)"
    ),
    "unroll=0": (lambda: jaxlstm.ScanOptions(unroll=0), ValueError, "unroll", "positive int", "got 0"),
    "unroll=1.5": (lambda: jaxlstm.ScanOptions(unroll=1.5), ValueError, "unroll", "positive int", "got 1.5"),
    "remat='yes'": (lambda: jaxlstm.ScanOptions(remat="yes"), TypeError, "remat", "bool", "got 'yes'"),
    "custom_vjp=None": (lambda: jaxlstm.ScanOptions(custom_vjp=None), TypeError, "custom_vjp", "bool", "got None"),
    "scan={}": (call(scan={"remat": True}), TypeError, "scan", "ScanOptions", "got dict"),
    # through the NNX module
    "LSTM x wrong I": (
        lambda: jaxlstm.LSTM(3, 5, rngs=nnx.Rngs(0))(jnp.ones((7, 2, 4))),
        ValueError, "input", "input_size=3", "got shape (7, 2, 4)",
    ),
    "LSTM batch_first hx batch mismatch": (
        lambda: jaxlstm.LSTM(3, 5, batch_first=True, rngs=nnx.Rngs(0))(
            jnp.ones((2, 7, 3)), (jnp.zeros((1, 7, 5)), jnp.zeros((1, 7, 5)))
        ),
        ValueError, "hx h_0", "(1, 2, 5)", "input batch B=2", "got (1, 7, 5)",
    ),
    "LSTM seq_lengths float": (
        lambda: jaxlstm.LSTM(3, 5, rngs=nnx.Rngs(0))(X, seq_lengths=jnp.array([1.0, 2.0])),
        TypeError, "seq_lengths", "integer", "got float32",
    ),
    # the cell
    "cell x wrong I": (lambda: jaxlstm.lstm_cell(CELL, jnp.ones((2, 4))), ValueError, "x", "(2, 3)", "got (2, 4)"),
    "cell x rank 3": (
        lambda: jaxlstm.lstm_cell(CELL, jnp.ones((1, 2, 3))), ValueError, "x", "[B, I]", "got shape (1, 2, 3)"
    ),
    "cell x int": (
        lambda: jaxlstm.lstm_cell(CELL, jnp.ones((2, 3), jnp.int32)), TypeError, "x", "floating-point", "got int32"
    ),
    "cell hx bare array": (
        lambda: jaxlstm.lstm_cell(CELL, jnp.ones((2, 3)), jnp.zeros((2, 5))),
        TypeError, "hx", "tuple (h_0, c_0)", "got a bare ArrayImpl of shape (2, 5)",
    ),
    "cell hx batch mismatch": (
        lambda: jaxlstm.lstm_cell(CELL, jnp.ones((2, 3)), (jnp.zeros((3, 5)), jnp.zeros((2, 5)))),
        ValueError, "hx[0] (h)", "(2, 5)", "got (3, 5)",
    ),
    "cell hx int": (
        lambda: jaxlstm.lstm_cell(CELL, jnp.ones((2, 3)), (jnp.zeros((2, 5), jnp.int32), jnp.zeros((2, 5)))),
        TypeError, "hx[0] (h)", "floating-point", "got int32",
    ),
    "cell params missing weight_hh": (
        lambda: jaxlstm.lstm_cell({"weight_ih": CELL["weight_ih"]}, jnp.ones((2, 3))),
        ValueError, "params", "missing keys ['weight_hh']",
    ),
    "cell params one bias, weight_hh mis-shaped": (
        lambda: jaxlstm.lstm_cell(CELL | {"weight_hh": jnp.ones((20, 4)), "bias_ih": jnp.ones(20)}, jnp.ones((2, 3))),
        ValueError, "params", "missing keys ['bias_hh']", "weight_hh: expected (20, 5), got (20, 4)",
    ),
    "cell params weight_ih not 4H rows": (
        lambda: jaxlstm.lstm_cell({"weight_ih": jnp.ones((7, 3))}, jnp.ones((2, 3))),
        ValueError, "params['weight_ih']", "(4H, I)", "got shape (7, 3)",
    ),
    "cell params not a mapping": (
        lambda: jaxlstm.lstm_cell([CELL["weight_ih"]], jnp.ones((2, 3))), TypeError, "params", "mapping", "got list",
    ),
    "LSTM(dtype=bf16) int x": (
        lambda: jaxlstm.LSTM(3, 5, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))(jnp.ones((7, 2, 3), jnp.int32)),
        TypeError, "x", "floating-point", "got int32",
    ),
    "LSTMCell(dtype=bf16) int x": (
        lambda: jaxlstm.LSTMCell(3, 5, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))(jnp.ones((2, 3), jnp.int32)),
        TypeError, "x", "floating-point", "got int32",
    ),
    "LSTMCell x wrong I": (
        lambda: jaxlstm.LSTMCell(3, 5, rngs=nnx.Rngs(0))(jnp.ones((2, 4))), ValueError, "x", "(2, 3)", "got (2, 4)"
    ),
}


@pytest.mark.parametrize("case", CALL_CASES.values(), ids=CALL_CASES.keys())
def test_call_argument_errors(case):
    fn, exc, *fragments = case
    expect(exc, fn, *fragments)


def test_shape_errors_are_raised_at_trace_time_under_jit():
    """Static checks fire while tracing: the same message under jit, nothing runs."""
    fn = jax.jit(lambda x, h, c: jaxlstm.lstm(PARAMS, x, (h, c), config=CFG))
    expect(ValueError, lambda: fn(X, jnp.zeros((2, 3, 5)), H0), "hx h_0", "input batch B=2", "got (2, 3, 5)")
    expect(TypeError, lambda: fn(X.astype(jnp.int32), H0, H0), "input", "floating-point", "got int32")
    fn = jax.jit(lambda x, n: jaxlstm.lstm(PARAMS, x, config=CFG, seq_lengths=n))
    expect(TypeError, lambda: fn(X, jnp.array([1.0, 2.0])), "seq_lengths", "integer", "got float32")
    expect(ValueError, lambda: fn(X, jnp.array([1, 2, 3])), "seq_lengths", "(B,) = (2,)", "got (3,)")


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


BIDIR = LSTMConfig(3, 5, bidirectional=True)
BIDIR_PARAMS = jaxlstm.init_params(jax.random.key(1), BIDIR)
X_RANDOM = jax.random.normal(jax.random.key(2), (7, 2, 3))
H0_RANDOM = tuple(jax.random.normal(k, (2, 2, 5)) for k in jax.random.split(jax.random.key(3)))


def test_traced_out_of_range_seq_lengths_behave_as_documented():
    """What `lstm`'s docstring says happens when traced lengths are out of range (no error):
    ≤ 0 gives no valid step (out 0, h_n/c_n = h_0/c_0), > T acts as T."""
    fn = jax.jit(lambda n: jaxlstm.lstm(BIDIR_PARAMS, X_RANDOM, H0_RANDOM, config=BIDIR, seq_lengths=n))
    out, (h_n, c_n) = fn(jnp.array([0, -3]))
    np.testing.assert_array_equal(out, 0.0)
    np.testing.assert_array_equal(h_n, H0_RANDOM[0])
    np.testing.assert_array_equal(c_n, H0_RANDOM[1])
    too_long, full = fn(jnp.array([9, 100])), fn(jnp.array([7, 7]))
    for a, b in zip(jax.tree.leaves(too_long), jax.tree.leaves(full), strict=True):
        np.testing.assert_array_equal(a, b)


# --- the checked path: jaxlstm.checked ----------------------------------------------------------

RUN_CHECKED = jax.jit(functools.partial(jaxlstm.checked.lstm, config=BIDIR))


@pytest.mark.parametrize(
    "lengths, found",
    [([7, 9], "from 7 to 9"), ([0, 3], "from 0 to 3"), ([-2, 8], "from -2 to 8")],
    ids=["above-T", "zero", "both"],
)
def test_checked_lstm_reports_out_of_range_lengths_under_jit(lengths, found):
    err, _ = RUN_CHECKED(BIDIR_PARAMS, X_RANDOM, H0_RANDOM, seq_lengths=jnp.array(lengths))
    expect(ValueError, err.throw, "seq_lengths", "[1, T=7]", found)  # JaxRuntimeError is a ValueError
    assert "seq_lengths must be in [1, T=7]" in err.get()


def test_checked_lstm_in_range_gives_no_error_and_the_same_result():
    lengths = jnp.array([7, 1])
    err, result = RUN_CHECKED(BIDIR_PARAMS, X_RANDOM, H0_RANDOM, seq_lengths=lengths)
    assert err.get() is None
    err.throw()  # no-op
    expected = jaxlstm.lstm(BIDIR_PARAMS, X_RANDOM, H0_RANDOM, config=BIDIR, seq_lengths=lengths)
    for a, b in zip(jax.tree.leaves(result), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    err, _ = RUN_CHECKED(BIDIR_PARAMS, X_RANDOM, H0_RANDOM)  # no seq_lengths: nothing to check
    assert err.get() is None


def test_checked_lstm_reads_T_from_batch_first_and_unbatched_input():
    cfg = LSTMConfig(3, 5, batch_first=True)
    params = jaxlstm.init_params(jax.random.key(0), cfg)
    x = jnp.ones((2, 4, 3))  # [B=2, T=4, I=3]
    err, _ = jaxlstm.checked.lstm(params, x, config=cfg, seq_lengths=jnp.array([4, 2]))
    assert err.get() is None
    err, _ = jaxlstm.checked.lstm(params, x, config=cfg, seq_lengths=jnp.array([5, 2]))
    assert "[1, T=4], got values from 2 to 5" in err.get()
    err, _ = jaxlstm.checked.lstm(params, x[0], config=cfg, seq_lengths=jnp.array(6))
    assert "[1, T=4], got values from 6 to 6" in err.get()


def test_checked_lstm_still_raises_static_errors_at_trace_time():
    expect(TypeError, lambda: RUN_CHECKED(BIDIR_PARAMS, X_RANDOM, seq_lengths=jnp.array([1.0, 2.0])),
           "seq_lengths", "integer", "got float32")


def test_check_seq_lengths_inside_a_checkified_training_step():
    """The helper for users who checkify their own (jitted, differentiated) function."""

    def loss(params, x, lengths):
        jaxlstm.checked.check_seq_lengths(lengths, x.shape[0])
        out, _ = jaxlstm.lstm(params, x, config=BIDIR, seq_lengths=lengths)
        return jnp.sum(out**2)

    step = jax.jit(checkify.checkify(jax.grad(loss)))
    err, grads = step(BIDIR_PARAMS, X_RANDOM, jnp.array([3, 7]))
    assert err.get() is None and set(grads) == set(BIDIR_PARAMS)
    err, _ = step(BIDIR_PARAMS, X_RANDOM, jnp.array([3, 8]))
    expect(ValueError, err.throw, "seq_lengths", "[1, T=7]", "from 3 to 8")


def test_checked_lstm_can_add_nan_checks():
    err, _ = jaxlstm.checked.lstm(BIDIR_PARAMS, X_RANDOM, config=BIDIR, errors=checkify.nan_checks)
    assert err.get() is None
    nan_x = X_RANDOM.at[3, 1, 0].set(jnp.nan)
    err, _ = jaxlstm.checked.lstm(BIDIR_PARAMS, nan_x, config=BIDIR, errors=checkify.nan_checks)
    assert "nan generated by primitive" in err.get()
    err, _ = jaxlstm.checked.lstm(BIDIR_PARAMS, nan_x, config=BIDIR)  # only the length check
    assert err.get() is None


def test_config_from_state_dict_errors():
    expect(ValueError, lambda: LSTMConfig.from_state_dict({"x": np.zeros(3)}),
           "prefix=''", "expected the key 'weight_ih_l0'", "found keys ['x']")
    expect(ValueError,
           lambda: LSTMConfig.from_state_dict({"weight_ih_l0": np.zeros((7, 3)), "weight_hh_l0": np.zeros((7, 2))}),
           "weight_ih_l0 has shape (7, 3)", "expected (4H, I)")
