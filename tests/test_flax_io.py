"""jaxlstm.flax_io: importers and exporters for Flax's LSTMs, checked against Flax itself."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxlstm
from jaxlstm.config import LSTMConfig
from jaxlstm.flax_io import cell_from_flax, cell_to_flax, hx_from_flax, hx_to_flax, to_flax
from tests.harness import assert_close, precision, random_lstm, random_params

IN, H, T, B = 3, 5, 6, 4
LENGTHS = np.array([6, 2, 5, 1])


def _randomize(tree, seed):
    """Random values everywhere (Flax and Haiku initialise biases to zero: test them too)."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [0.5 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(treedef, new)


def _randomize_nnx(module, seed):
    state = nnx.state(module, nnx.Param)
    nnx.update(module, _randomize(state, seed))
    return module


def _x(time_major, seed=0, dtype=jnp.float32):
    shape = (T, B, IN) if time_major else (B, T, IN)
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def _valid(out, time_major, lengths):
    """Zeroes the padded steps (Flax leaves garbage there, torch and jaxlstm zeros)."""
    mask = np.arange(T)[:, None] < np.asarray(lengths)[None, :]  # [T, B]
    mask = mask if time_major else mask.T
    return np.where(mask[..., None], np.asarray(out), 0.0)


def _carry(num_dirs, seed=1, dtype=jnp.float32):
    """A random Flax carry for one layer: (c, h), or one per direction."""
    rng = np.random.default_rng(seed)
    pairs = [
        tuple(jnp.asarray(rng.standard_normal((B, H)), dtype) for _ in range(2))
        for _ in range(num_dirs)
    ]
    return pairs[0] if num_dirs == 1 else tuple(pairs)


# Flax runs the cell in a Python-level nn.scan and sums i/h paths in another order: 1e-5 abs/rel in
# float32 (observed max 1.3e-7; float64: 4e-16), 1e-10 in float64.
LINEN_CASES = {
    "rnn_lstmcell_batch_major": (lambda: nn.RNN(nn.LSTMCell(H)), False, 1),
    "rnn_optimized_time_major": (lambda: nn.RNN(nn.OptimizedLSTMCell(H), time_major=True), True, 1),
    "bidir_mixed_cells": (
        lambda: nn.Bidirectional(nn.RNN(nn.LSTMCell(H)), nn.RNN(nn.OptimizedLSTMCell(H))),
        False,
        2,
    ),
}


@pytest.mark.parametrize("seq", [False, True], ids=["full", "seq_lengths"])
@pytest.mark.parametrize("case", list(LINEN_CASES))
def test_from_flax_linen_matches_flax(case, seq):
    make, time_major, dirs = LINEN_CASES[case]
    rnn = make()
    x = _x(time_major)
    variables = _randomize(rnn.init(jax.random.key(0), x), seed=2)
    carry0 = _carry(dirs)
    lengths = jnp.asarray(LENGTHS) if seq else None
    carry, want = rnn.apply(
        variables, x, initial_carry=carry0, seq_lengths=lengths, return_carry=True
    )
    model = jaxlstm.from_flax(rnn, variables)
    assert model.batch_first == (not time_major) and model.bidirectional == (dirs == 2)
    got, (h_n, c_n) = model(x, hx_from_flax(carry0), seq_lengths=lengths)
    if seq:
        want = _valid(want, time_major, LENGTHS)
        np.testing.assert_array_equal(
            np.asarray(got), _valid(got, time_major, LENGTHS)
        )  # zero padding
    want_h, want_c = hx_from_flax(carry)
    assert_close(got, want, "float32", "out")
    assert_close(h_n, want_h, "float32", "h_n")
    assert_close(c_n, want_c, "float32", "c_n")


def test_from_flax_linen_stack_of_layers():
    """A list of Bidirectional layers (time-major) becomes num_layers."""
    layers = [
        nn.Bidirectional(nn.RNN(nn.LSTMCell(H)), nn.RNN(nn.LSTMCell(H)), time_major=True)
        for _ in range(2)
    ]
    x = _x(True)
    variables, inputs = [], x
    for k, layer in enumerate(layers):
        variables.append(_randomize(layer.init(jax.random.key(k), inputs), seed=10 + k))
        inputs = layer.apply(variables[-1], inputs)
    model = jaxlstm.from_flax(layers, variables)
    assert (model.num_layers, model.bidirectional, model.batch_first) == (2, True, False)
    got, _ = model(x)
    assert_close(got, inputs, "float32", "out")


def test_from_flax_float64_is_exact_to_1e10():
    """In float64 the only differences are summation order: 1e-10 abs/rel."""
    with precision("float64"):
        rnn = nn.RNN(nn.OptimizedLSTMCell(H, param_dtype=jnp.float64))
        x = _x(False, dtype=jnp.float64)
        variables = _randomize(rnn.init(jax.random.key(0), x), seed=2)
        carry0 = _carry(1, dtype=jnp.float64)
        carry, want = rnn.apply(
            variables, x, initial_carry=carry0, seq_lengths=jnp.asarray(LENGTHS), return_carry=True
        )
        model = jaxlstm.from_flax(rnn, variables)
        assert model.params["weight_ih_l0"].dtype == jnp.float64
        got, (h_n, c_n) = model(x, hx_from_flax(carry0), seq_lengths=jnp.asarray(LENGTHS))
        want_h, want_c = hx_from_flax(carry)
        assert_close(got, _valid(want, False, LENGTHS), "float64", "out")
        assert_close(h_n, want_h, "float64", "h_n")
        assert_close(c_n, want_c, "float64", "c_n")


NNX_CASES = {
    "rnn_lstmcell": (lambda r: nnx.RNN(nnx.LSTMCell(IN, H, rngs=r)), False, 1),
    "rnn_optimized_fused_time_major": (
        lambda r: nnx.RNN(nnx.OptimizedLSTMCell(IN, H, rngs=r), time_major=True),
        True,
        1,
    ),
    "bidir": (
        lambda r: nnx.Bidirectional(
            nnx.RNN(nnx.OptimizedLSTMCell(IN, H, rngs=r)), nnx.RNN(nnx.LSTMCell(IN, H, rngs=r))
        ),
        False,
        2,
    ),
}


@pytest.mark.parametrize("case", list(NNX_CASES))
def test_from_flax_nnx_matches_flax(case):
    make, time_major, dirs = NNX_CASES[case]
    rnn = _randomize_nnx(make(nnx.Rngs(0)), seed=3)
    x = _x(time_major)
    carry0 = _carry(dirs)
    lengths = jnp.asarray(LENGTHS)
    carry, want = rnn(x, initial_carry=carry0, seq_lengths=lengths, return_carry=True)
    model = jaxlstm.from_flax(rnn)
    got, (h_n, c_n) = model(x, hx_from_flax(carry0), seq_lengths=lengths)
    want_h, want_c = hx_from_flax(carry)
    assert_close(got, _valid(want, time_major, LENGTHS), "float32", "out")
    assert_close(h_n, want_h, "float32", "h_n")
    assert_close(c_n, want_c, "float32", "c_n")


def test_from_flax_nnx_list_of_layers_and_bare_cells():
    rngs = nnx.Rngs(0)
    layers = [_randomize_nnx(nnx.RNN(nnx.LSTMCell(i, H, rngs=rngs)), seed=i) for i in (IN, H, H)]
    x = _x(False)
    want = x
    for layer in layers:
        want = layer(want)
    model = jaxlstm.from_flax(layers)
    assert model.num_layers == 3 and model.batch_first
    assert_close(model(x)[0], want, "float32", "out")

    xc, carry0 = x[:, 0], _carry(1)
    for cell in (
        _randomize_nnx(nnx.OptimizedLSTMCell(IN, H, rngs=rngs), seed=7),
        _randomize_nnx(nnx.LSTMCell(IN, H, rngs=rngs), seed=8),
    ):
        (c1, h1), _ = cell(carry0, xc)
        ours = jaxlstm.from_flax(cell)
        assert isinstance(ours, jaxlstm.LSTMCell)
        (h0,), (c0,) = hx_from_flax(carry0)
        h, c = ours(xc, (h0, c0))
        assert_close(h, h1, "float32", "h")
        assert_close(c, c1, "float32", "c")
    linen_cell = nn.OptimizedLSTMCell(H)
    v = _randomize(linen_cell.init(jax.random.key(0), carry0, xc), seed=9)
    (c1, h1), _ = linen_cell.apply(v, carry0, xc)
    (h0,), (c0,) = hx_from_flax(carry0)
    h, c = jaxlstm.from_flax(linen_cell, v)(xc, (h0, c0))
    assert_close(h, h1, "float32", "h")
    assert_close(c, c1, "float32", "c")


def test_cell_layout_round_trip_is_exact():
    params = jaxlstm.init_params(jax.random.key(0), jaxlstm.LSTMConfig(IN, H))
    sd = {k[: -len("_l0")]: np.asarray(v) for k, v in params.items()}
    for layout in ("per_gate", "fused"):
        for nnx_names in (False, True):
            back = cell_from_flax(cell_to_flax(sd, layout=layout, nnx_names=nnx_names))
            np.testing.assert_array_equal(back["weight_ih"], sd["weight_ih"])
            np.testing.assert_array_equal(back["weight_hh"], sd["weight_hh"])
            np.testing.assert_array_equal(back["bias_hh"], sd["bias_ih"] + sd["bias_hh"])
            np.testing.assert_array_equal(back["bias_ih"], np.zeros(4 * H, np.float32))


@pytest.mark.parametrize(
    ("api", "cell"),
    [
        ("linen", "LSTMCell"),
        ("linen", "OptimizedLSTMCell"),
        ("nnx", "LSTMCell"),
        ("nnx", "OptimizedLSTMCell"),
    ],
)
def test_to_flax_runs_like_jaxlstm_and_round_trips(api, cell):
    model = random_lstm(LSTMConfig(IN, H, num_layers=2, bidirectional=True, batch_first=True), 1)
    x = _x(False)
    hx = (jnp.full((4, B, H), 0.3), jnp.full((4, B, H), -0.2))
    want, (want_h, want_c) = model(x, hx)
    exported = to_flax(model, api=api, cell=cell)
    carries = hx_to_flax(hx, num_layers=2, bidirectional=True)
    finals = []
    if api == "linen":
        modules, variables = exported
        got = x
        for m, v, c0 in zip(modules, variables, carries, strict=True):
            carry, got = m.apply(v, got, initial_carry=c0, return_carry=True)
            finals.append(carry)
        back = jaxlstm.from_flax(modules, variables)
    else:
        got = x
        for m, c0 in zip(exported, carries, strict=True):
            carry, got = m(got, initial_carry=c0, return_carry=True)
            finals.append(carry)
        back = jaxlstm.from_flax(exported)
    got_h, got_c = hx_from_flax(finals)
    assert_close(got, want, "float32", "out")
    assert_close(got_h, want_h, "float32", "h_n")
    assert_close(got_c, want_c, "float32", "c_n")
    p, q = model.params, back.params
    for k in p:
        if k.startswith("weight"):
            np.testing.assert_array_equal(np.asarray(q[k]), np.asarray(p[k]), err_msg=k)
        elif k.startswith("bias_hh"):  # Flax's single bias holds the sum
            np.testing.assert_array_equal(
                np.asarray(q[k]), np.asarray(p[k] + p[k.replace("_hh", "_ih")])
            )


def test_to_flax_cells_no_bias_and_state_dict_input():
    cell = jaxlstm.LSTMCell(IN, H, bias=False, rngs=nnx.Rngs(0))
    flax_cell = to_flax(cell)
    x, carry0 = _x(False)[:, 0], _carry(1)
    (c1, h1), _ = flax_cell(carry0, x)
    (h0,), (c0,) = hx_from_flax(carry0)
    h, c = cell(x, (h0, c0))
    assert_close(h1, h, "float32", "h")
    assert_close(c1, c, "float32", "c")
    np.testing.assert_array_equal(np.asarray(flax_cell.hi.bias.get_value()), np.zeros(H))
    linen_cell, variables = to_flax(cell, api="linen", cell="OptimizedLSTMCell")
    (c2, h2), _ = linen_cell.apply(variables, carry0, x)
    assert_close(h2, h, "float32", "linen h")
    assert_close(c2, c, "float32", "linen c")
    # A torch-named dict (e.g. jaxlstm.linen variables) needs batch_first told.
    params = jaxlstm.init_params(jax.random.key(0), jaxlstm.LSTMConfig(IN, H))
    rnn, variables = to_flax({"params": params}, api="linen", batch_first=True)
    assert rnn.time_major is False
    want = jaxlstm.lstm(params, _x(False), config=jaxlstm.LSTMConfig(IN, H, batch_first=True))[0]
    assert_close(rnn.apply(variables, _x(False)), want, "float32", "out")


def _concat(a, b):
    return jnp.concatenate([a, b], axis=-1)


@pytest.mark.parametrize(
    "merge_fn, accepted",
    [(_concat, True), (lambda a, b: _concat(b, a), False), (lambda a, b: a + b, False)],
    ids=["own-concatenation", "reversed-concatenation", "sum"],
)
def test_bidirectional_merge_fn_is_judged_by_what_it_computes(merge_fn, accepted):
    linen = nn.Bidirectional(nn.RNN(nn.LSTMCell(H)), nn.RNN(nn.LSTMCell(H)), merge_fn=merge_fn)
    linen_variables = _randomize(linen.init(jax.random.key(0), _x(False)), 1)
    rngs = nnx.Rngs(0)
    nnx_rnns = [nnx.RNN(nnx.LSTMCell(IN, H, rngs=rngs)) for _ in range(2)]
    nnx_bidir = nnx.Bidirectional(*nnx_rnns, merge_fn=merge_fn, rngs=rngs)
    if not accepted:
        with pytest.raises(ValueError, match="torch concatenates them"):
            jaxlstm.from_flax(linen, linen_variables)
        with pytest.raises(ValueError, match="torch concatenates them"):
            jaxlstm.from_flax(nnx_bidir)
        return
    want = linen.apply(linen_variables, _x(False))
    assert_close(jaxlstm.from_flax(linen, linen_variables)(_x(False))[0], want, "float32", "out")
    _randomize_nnx(nnx_bidir, 2)
    want = nnx_bidir(_x(False))
    assert_close(jaxlstm.from_flax(nnx_bidir)(_x(False))[0], want, "float32", "out")


def test_flax_errors_say_what_cannot_be_held():
    with pytest.raises(ValueError, match="no projection"):
        to_flax(random_lstm(LSTMConfig(IN, H, proj_size=2), 0))
    with pytest.raises(ValueError, match="api"):
        to_flax(random_lstm(LSTMConfig(IN, H)), api="haiku")
    with pytest.raises(ValueError, match="contradicts"):
        to_flax(random_lstm(LSTMConfig(IN, H)), batch_first=True)
    # The checks happen before any parameter is read: no variables needed.
    with pytest.raises(ValueError, match="backward-only"):
        jaxlstm.from_flax(nn.RNN(nn.LSTMCell(H), reverse=True), {})
    with pytest.raises(TypeError, match="GRUCell"):
        jaxlstm.from_flax(nn.RNN(nn.GRUCell(H)), {})
    with pytest.raises(ValueError, match="sigmoid and tanh"):
        jaxlstm.from_flax(nn.RNN(nn.LSTMCell(H, gate_fn=jax.nn.hard_sigmoid)), {})
    summed = nn.Bidirectional(
        nn.RNN(nn.LSTMCell(H)), nn.RNN(nn.LSTMCell(H)), merge_fn=lambda a, b: a + b
    )
    with pytest.raises(ValueError, match="concatenates"):
        jaxlstm.from_flax(summed, {})
    with pytest.raises(TypeError, match="variables are required"):
        jaxlstm.from_flax(nn.RNN(nn.LSTMCell(H)))
    with pytest.raises(TypeError, match="variables must be None"):
        jaxlstm.from_flax(nnx.RNN(nnx.LSTMCell(IN, H, rngs=nnx.Rngs(0)), reverse=True), {})
    with pytest.raises(ValueError, match="backward-only"):
        jaxlstm.from_flax(nnx.RNN(nnx.LSTMCell(IN, H, rngs=nnx.Rngs(0)), reverse=True))

    def layer(in_size, hidden):
        cell = {k[:-3]: v for k, v in random_params(LSTMConfig(in_size, hidden)).items()}
        return nn.RNN(nn.LSTMCell(hidden)), {"params": {"cell": cell_to_flax(cell)}}

    (m0, v0), (m1, v1), (m2, v2) = layer(IN, H), layer(H, H + 1), layer(IN, H)
    with pytest.raises(ValueError, match="same hidden size"):
        jaxlstm.from_flax([m0, m1], [v0, v1])
    with pytest.raises(ValueError, match=r"weight_ih_l1: expected \(20, 5\), got \(20, 3\)"):
        jaxlstm.from_flax([m0, m2], [v0, v2])  # layer 1 must take layer 0's H features
    with pytest.raises(ValueError, match="one entry per module"):
        jaxlstm.from_flax([m0, m2], [v0])
    with pytest.raises(ValueError, match="no entry"):
        jaxlstm.from_flax(m0, {"params": {"rnn": {}}})
