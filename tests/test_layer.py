"""jaxlstm.layer: the fast layer paths against the plain reference (`lstm_cell` in Python loops).

Every path `lstm()` can take — the custom VJP (default), autodiff of the plain scan, unrolled
scans and remat (gates recomputed in the backward pass) — must give the reference's outputs
and gradients with respect to the parameters, the input and both initial states, to float32
and float64 tolerance, including variable lengths, projection, bidirectional and stacked
layers. Forward mode, which the layer runs through the plain scan, is tested here too.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm import LSTMConfig, ScanOptions, lstm
from jaxlstm.lstm import layer_weights
from tests.harness import (
    assert_close,
    make_problem,
    precision,
    random_params,
    reference_lstm,
    run_jax,
)

T, B, I, H = 4, 2, 3, 4

# (id, LSTMConfig kwargs, seq_lengths or None); lengths span 1 to T, in either order.
CASES = [
    ("uni-lengths", {}, (2, 4)),
    ("nobias-2layer", {"bias": False, "num_layers": 2}, None),
    ("bidir", {"bidirectional": True}, None),
    ("bidir-2layer-lengths", {"bidirectional": True, "num_layers": 2}, (1, 4)),
    ("proj-2layer-lengths", {"proj_size": 2, "num_layers": 2}, (4, 3)),
    ("proj-bidir-lengths", {"proj_size": 3, "bidirectional": True}, (3, 1)),
]
CASE_IDS = [c[0] for c in CASES]


def _grid(path_id, path_kwargs, case_ids, dtypes):
    return [
        pytest.param(c, path_kwargs, d, id=f"{path_id}-{c}-{d}") for c in case_ids for d in dtypes
    ]


# Every case on the default path (custom VJP); float64, the autodiff fallback and an unroll
# that does not divide T on the cases with the most structure (compiles dominate CI time).
TWO_LAYER_BIDIR = ["bidir-2layer-lengths"]
GRID = (
    _grid("custom_vjp", {}, CASE_IDS, ["float32"])
    + _grid("custom_vjp", {}, ["bidir-2layer-lengths", "proj-bidir-lengths"], ["float64"])
    + _grid("autodiff", {"custom_vjp": False}, TWO_LAYER_BIDIR, ["float32"])
    + _grid("autodiff", {"custom_vjp": False}, ["proj-bidir-lengths"], ["float64"])
    + _grid("unroll3", {"unroll": 3}, TWO_LAYER_BIDIR, ["float32"])
    + _grid("remat", {"remat": True}, [*TWO_LAYER_BIDIR, "proj-2layer-lengths"], ["float32"])
    + _grid("remat", {"remat": True}, ["proj-bidir-lengths"], ["float64"])
    + _grid(
        "remat-autodiff", {"remat": True, "custom_vjp": False}, ["proj-bidir-lengths"], ["float32"]
    )
)


def _problem(kwargs, dtype, lengths=None, seed=0):
    """One case's problem: weights, input, (h0, c0) and the loss's cotangents, in `dtype`."""
    return make_problem(
        LSTMConfig(I, H, **kwargs),
        batch=B,
        steps=T,
        with_hx=True,
        seq_lengths=lengths,
        dtype=dtype,
        seed=seed,
    )


def _case_problem(case_id: str, dtype: str):
    _, kwargs, lengths = CASES[CASE_IDS.index(case_id)]
    return _problem(kwargs, dtype, lengths)


@functools.cache
def _reference(case_id: str, dtype: str):
    """Reference outputs and gradients, computed once per case and dtype (the slow part)."""
    with precision(dtype):
        # Jitted: tracing the loops once and compiling beats dispatching every op eagerly.
        return run_jax(_case_problem(case_id, dtype), reference_lstm)


@pytest.mark.parametrize("case_id,path_kwargs,dtype", GRID)
def test_layer_paths_match_reference(case_id, path_kwargs, dtype):
    want = _reference(case_id, dtype)
    fn = functools.partial(lstm, scan=ScanOptions(**path_kwargs))
    with precision(dtype):
        # seq_lengths is a traced argument, as in a jitted training step.
        got = run_jax(_case_problem(case_id, dtype), fn, traced_lengths=True)
    assert got.keys() == want.keys()
    for name in want:
        assert_close(got[name], want[name], dtype, name)


@pytest.mark.parametrize("remat", [False, True], ids=["gates-kept", "remat"])
def test_bidirectional_in_one_scan_matches_one_scan_per_direction(remat):
    # The grid above runs the backend's default (one scan per direction on CPU); this pins
    # the other layout of a bidirectional layer to it, outputs and all gradients.
    from jaxlstm.layer import lstm_layer

    config = LSTMConfig(I, H, bidirectional=True, proj_size=2)
    lengths = [3, 1]
    p = make_problem(
        config,
        batch=B,
        steps=T,
        with_hx=True,
        seq_lengths=lengths,
        dtype="float32",
        seed=1,
        param_scale=2.0,
    )
    params, x, (h0, c0) = p.jax_inputs()
    weights = layer_weights(params, config, 0, jnp.float32)
    h0, c0 = tuple(h0), tuple(c0)  # per direction [B, P], [B, H]
    mask = jnp.arange(T)[:, None] < jnp.array(lengths)[None, :]

    def run(fuse):
        def loss(w, x, h0, c0):
            options = ScanOptions(fuse_directions=fuse, remat=remat).resolve()
            out, h_n, c_n = lstm_layer(w, x, h0, c0, mask=mask, scan=options)
            value = jnp.sum(jnp.sin(out)) + jnp.sum(jnp.stack(h_n) ** 2) + jnp.sum(jnp.stack(c_n))
            return value, (out, h_n, c_n)

        return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(weights, x, h0, c0)

    fused, separate = run(True), run(False)
    for got, want in zip(jax.tree.leaves(fused), jax.tree.leaves(separate), strict=True):
        assert_close(got, want, "float32", "one scan vs two")


def _second_order(config, params, x, seq_lengths, **kwargs):
    """The gradient w.r.t. x of ‖∂loss/∂params‖²: reverse-over-reverse through the layer."""

    def loss(p, x, n):
        out, (_, c_n) = lstm(p, x, config=config, seq_lengths=n, scan=ScanOptions(**kwargs))
        return jnp.sum(out**2) + jnp.sum(c_n)

    def grad_norm(x, n):
        g = jax.grad(loss)(params, x, n)
        return sum(jnp.sum(v**2) for v in jax.tree.leaves(g))

    return jax.jit(jax.grad(grad_norm))(x, seq_lengths)


@pytest.mark.parametrize(
    "kwargs,lengths",
    [({"bidirectional": True, "proj_size": 2}, (4, 2))],
    ids=["bidir-proj-lengths"],
)
def test_custom_vjp_second_order_reverse_matches_autodiff(kwargs, lengths):
    with precision("float64"):
        p = _problem(kwargs, "float64")
        params, x, _ = p.jax_inputs()
        seq_lengths = None if lengths is None else jnp.asarray(lengths)
        fast = _second_order(p.config, params, x, seq_lengths)
        remat = _second_order(p.config, params, x, seq_lengths, remat=True)
        plain = _second_order(p.config, params, x, seq_lengths, custom_vjp=False)
    assert np.abs(np.asarray(plain)).max() > 0
    assert_close(fast, plain, "float64", "grad of grad")
    assert_close(remat, plain, "float64", "grad of grad (remat)")


@pytest.mark.parametrize("custom_vjp", [True, False], ids=["custom_vjp", "autodiff"])
def test_remat_cuts_activation_memory(custom_vjp):
    # What remat is for: the compiled gradient's scratch memory (XLA's own accounting of
    # the buffers alive at once) must shrink, here for a 2-layer LSTM whose saved gates
    # dominate it. Measured on CPU: 833 -> 611 MiB (custom VJP) and 1185 -> 681 MiB
    # (autodiff) for B=64, T=256, I=256, H=512; this smaller case is compiled, not run.
    # T=512, B=64 (CPU: 201 -> 134 MB, 219 -> 51 MB): XLA:GPU's count also holds a fixed
    # workspace for its matmul library (~32 MiB, measured on an H200 as the difference from
    # CPU's count), which T=128, B=16 (13 MB of scratch on CPU) did not dwarf.
    config = LSTMConfig(32, 64, num_layers=2)
    params = random_params(config)
    x = jnp.zeros((512, 64, 32))

    def scratch_bytes(remat):
        options = ScanOptions(custom_vjp=custom_vjp, remat=remat)
        loss = lambda p, x: jnp.sum(lstm(p, x, config=config, scan=options)[0])  # noqa: E731
        compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile()
        analysis = compiled.memory_analysis()
        if analysis is None:
            pytest.skip("this backend reports no memory analysis")
        return analysis.temp_size_in_bytes

    kept, remat = scratch_bytes(False), scratch_bytes(True)
    assert remat < 0.85 * kept, f"remat scratch {remat} B vs {kept} B with the gates kept"


# --- forward mode -------------------------------------------------------------------------------


def _forward_mode_problem(kwargs):
    p = _problem(kwargs, "float64")
    params, x, _ = p.jax_inputs()
    tangent = jnp.asarray(np.random.default_rng(5).standard_normal(x.shape))
    return p.config, params, x, tangent


def test_forward_mode_works_with_the_default_options_and_matches_reverse_mode():
    # JAX cannot run forward mode through a custom_vjp; when lstm is traced under forward
    # mode the layer differentiates the plain scan instead, so jvp and jacfwd need no option.
    with precision("float64"):
        config, params, x, tangent = _forward_mode_problem({"bidirectional": True, "proj_size": 2})
        lengths = jnp.array([4, 2])

        def f(scan):
            return lambda x: lstm(params, x, config=config, seq_lengths=lengths, scan=scan)[0]

        loss = lambda x: jnp.sum(jnp.sin(f(None)(x)))  # noqa: E731
        _, jvp_default = jax.jvp(f(None), (x,), (tangent,))
        _, jvp_plain = jax.jvp(f(ScanOptions(custom_vjp=False)), (x,), (tangent,))
        assert_close(jvp_default, jvp_plain, "float64", "jvp")
        forward, reverse = jax.jit(jax.jacfwd(loss))(x), jax.grad(loss)(x)
        assert_close(forward, reverse, "float64", "jit(jacfwd) vs grad")

        # A Hessian-vector product (jvp of grad) goes through the custom VJP and matches autodiff.
        def hvp(scan):
            return jax.jvp(jax.grad(lambda x: jnp.sum(f(scan)(x) ** 2)), (x,), (x,))[1]

        plain = hvp(ScanOptions(custom_vjp=False))
        assert np.abs(np.asarray(plain)).max() > 0
        assert_close(hvp(None), plain, "float64", "jvp of grad")


def test_jvp_inside_jit_works_with_the_default_options():
    # A jitted function that takes a jvp (jax.jit(lambda x, t: jax.jvp(f, (x,), (t,)))), the
    # usual way to run forward mode, with the default options: the docstrings of lstm and
    # ScanOptions promise that plain forward mode differentiates the plain scan whatever
    # custom_vjp says. It must give the jvp of the plain scan.
    with precision("float64"):
        config, params, x, tangent = _forward_mode_problem({})

        def jitted_jvp(scan):
            f = lambda x: lstm(params, x, config=config, scan=scan)[0]  # noqa: E731
            return jax.jit(lambda x, t: jax.jvp(f, (x,), (t,))[1])(x, tangent)

        want = jitted_jvp(ScanOptions(custom_vjp=False))
        assert np.abs(np.asarray(want)).max() > 0
        assert_close(jitted_jvp(None), want, "float64", "jit(jvp) with the default options")


def test_linearize_and_forward_mode_of_a_jitted_function_work_with_custom_vjp_off():
    # What the fallback cannot reach (documented): jax.linearize, and forward mode of a
    # function compiled before with the custom VJP. ScanOptions(custom_vjp=False) serves both.
    with precision("float64"):
        config, params, x, tangent = _forward_mode_problem({})
        options = ScanOptions(custom_vjp=False)
        plain = jax.jit(lambda x: lstm(params, x, config=config, scan=options)[0])
        _, jvp = jax.jvp(plain, (x,), (tangent,))
        _, linear = jax.linearize(plain, x)
        assert_close(linear(tangent), jvp, "float64", "linearize vs jvp")
        _, vjp = jax.vjp(plain, x)
        # <J t, u> = <t, J^T u>: forward and reverse mode agree.
        u = jnp.asarray(np.random.default_rng(7).standard_normal(jvp.shape))
        assert_close(jnp.vdot(jvp, u), jnp.vdot(tangent, vjp(u)[0]), "float64", "jvp vs vjp")


# --- padding and bfloat16 -----------------------------------------------------------------------


@pytest.mark.parametrize("remat", [False, True], ids=["gates-kept", "remat"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bidir"])
def test_custom_vjp_padding_nan_does_not_leak(bidirectional, remat):
    p = _problem({"bidirectional": bidirectional}, "float32")
    params, x, _ = p.jax_inputs()
    lengths = jnp.array([2, 4])
    x = jnp.where(jnp.arange(T)[:, None, None] >= lengths[None, :, None], jnp.nan, x)
    config, options = p.config, ScanOptions(remat=remat)

    def loss(params, x):
        out, (h_n, c_n) = lstm(params, x, config=config, seq_lengths=lengths, scan=options)
        return jnp.sum(out) + jnp.sum(h_n) + jnp.sum(c_n)

    g_params, g_x = jax.grad(loss, argnums=(0, 1))(params, x)
    chex.assert_tree_all_finite(g_params)
    valid = jnp.arange(T)[:, None] < lengths[None, :]
    chex.assert_tree_all_finite(g_x[valid])
    assert bool(jnp.all(g_x[~valid] == 0))


def test_bf16_compute_keeps_f32_cell_state_and_tracks_f32():
    p = _problem({"bidirectional": True}, "float32")
    params, x, (h0, c0) = p.jax_inputs()
    config = p.config
    p16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    out32, (_, c32) = lstm(params, x, (h0, c0), config=config)
    out16, (h16, c16) = lstm(p16, x.astype(jnp.bfloat16), (h0, c0), config=config)
    assert out16.dtype == h16.dtype == jnp.bfloat16
    assert c16.dtype == jnp.float32
    assert_close(out16.astype(jnp.float32), out32, "bfloat16", "out")
    assert_close(c16, c32, "bfloat16", "c_n")
    x16 = x.astype(jnp.bfloat16)
    grads = jax.grad(lambda p: jnp.sum(lstm(p, x16, config=config)[0].astype(jnp.float32)))(p16)
    assert all(v.dtype == jnp.bfloat16 for v in grads.values())
    chex.assert_tree_all_finite(grads)
