"""The fast layer paths against the plain reference (`lstm_cell` in Python loops).

Every path `lstm()` can take — the custom VJP (default), autodiff of the plain scan,
unrolled scans and remat (gates recomputed in the backward pass) — must give the reference's outputs and gradients with respect to the
parameters, the input and both initial states, to float32 and float64 tolerance, including
variable lengths, projection, bidirectional and stacked layers.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm import LSTMConfig, ScanOptions, init_params, lstm
from tests.harness import assert_close, precision, reference_lstm

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
GRID = (
    _grid("custom_vjp", {}, CASE_IDS, ["float32"])
    + _grid("custom_vjp", {}, ["bidir-2layer-lengths", "proj-bidir-lengths"], ["float64"])
    + _grid("autodiff", {"custom_vjp": False}, ["bidir-2layer-lengths"], ["float32"])
    + _grid("autodiff", {"custom_vjp": False}, ["proj-bidir-lengths"], ["float64"])
    + _grid("unroll3", {"unroll": 3}, ["bidir-2layer-lengths"], ["float32"])
    + _grid("remat", {"remat": True}, ["bidir-2layer-lengths", "proj-2layer-lengths"], ["float32"])
    + _grid("remat", {"remat": True}, ["proj-bidir-lengths"], ["float64"])
    + _grid("remat-autodiff", {"remat": True, "custom_vjp": False}, ["proj-bidir-lengths"], ["float32"])
)


def _problem(kwargs, dtype):
    """Parameters, input, (h0, c0) and output weights for one case, in `dtype`."""
    config = LSTMConfig(I, H, **kwargs)
    keys = jax.random.split(jax.random.key(0), 6)
    params = init_params(keys[0], config, dtype)
    x = jax.random.normal(keys[1], (T, B, I), dtype)
    n = config.num_layers * config.num_directions
    h0 = jax.random.normal(keys[2], (n, B, config.output_size), dtype)
    c0 = jax.random.normal(keys[3], (n, B, H), dtype)
    # Random weights on every output so the loss reaches out, h_n and c_n.
    w_out = jax.random.normal(keys[4], (T, B, config.num_directions * config.output_size), dtype)
    w_c = jax.random.normal(keys[5], (n, B, H), dtype)
    return config, params, x, (h0, c0), (w_out, w_c)


def _outputs_and_grads(fn, weights, params, x, h0, c0, seq_lengths):
    """`fn`'s outputs and the gradient of a loss on all of them w.r.t. params, x, h0, c0."""

    def loss(p, x, h0, c0):
        out, (h_n, c_n) = fn(p, x, (h0, c0), seq_lengths=seq_lengths)
        return jnp.sum(out * weights[0]) + jnp.sum(jnp.sin(h_n)) + jnp.sum(c_n * weights[1]), (out, h_n, c_n)

    grads, outputs = jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True)(params, x, h0, c0)
    return outputs, grads


@functools.cache
def _reference(case_id: str, dtype: str):
    """Reference outputs and gradients, computed once per case and dtype (the slow part)."""
    _, kwargs, lengths = CASES[CASE_IDS.index(case_id)]
    with precision(dtype):
        config, params, x, hx, weights = _problem(kwargs, jnp.dtype(dtype))
        ref = functools.partial(reference_lstm, config=config)
        # Jitted: tracing the loops once and compiling beats dispatching every op eagerly.
        run = jax.jit(lambda p, x, h0, c0: _outputs_and_grads(ref, weights, p, x, h0, c0, lengths))
        return jax.device_get(run(params, x, *hx))


@pytest.mark.parametrize("case_id,path_kwargs,dtype", GRID)
def test_layer_paths_match_reference(case_id, path_kwargs, dtype):
    ref_outputs, ref_grads = _reference(case_id, dtype)
    _, kwargs, lengths = CASES[CASE_IDS.index(case_id)]
    with precision(dtype):
        config, params, x, hx, weights = _problem(kwargs, jnp.dtype(dtype))
        seq_lengths = None if lengths is None else jnp.asarray(lengths)
        fn = functools.partial(lstm, config=config, scan=ScanOptions(**path_kwargs))
        # seq_lengths is a traced argument, as in a jitted training step.
        run = jax.jit(lambda p, x, h0, c0, n: _outputs_and_grads(fn, weights, p, x, h0, c0, n))
        outputs, grads = run(params, x, *hx, seq_lengths)
    for label, got, want in zip(("out", "h_n", "c_n"), outputs, ref_outputs, strict=True):
        assert_close(got, want, dtype, label)
    for name in ref_grads[0]:
        assert_close(grads[0][name], ref_grads[0][name], dtype, f"d {name}")
    for label, got, want in zip(("dx", "dh0", "dc0"), grads[1:], ref_grads[1:], strict=True):
        assert_close(got, want, dtype, label)


@pytest.mark.parametrize("remat", [False, True], ids=["gates-kept", "remat"])
def test_bidirectional_in_one_scan_matches_one_scan_per_direction(remat):
    # The grid above runs the backend's default (one scan per direction on CPU); this pins
    # the other layout of a bidirectional layer to it, outputs and all gradients.
    from jaxlstm.cell import CellWeights
    from jaxlstm.layer import lstm_layer

    keys = jax.random.split(jax.random.key(1), 6)
    weights = tuple(
        CellWeights(
            kernel=jax.random.normal(jax.random.fold_in(keys[0], d), (I, 4 * H)),
            recurrent_kernel=jax.random.normal(jax.random.fold_in(keys[1], d), (2, 4 * H)),
            bias=jax.random.normal(jax.random.fold_in(keys[2], d), (4 * H,)),
            projection=jax.random.normal(jax.random.fold_in(keys[3], d), (H, 2)),
        )
        for d in range(2)
    )
    x = jax.random.normal(keys[4], (T, B, I))
    h0, c0 = (jnp.ones((B, 2)),) * 2, tuple(jax.random.normal(keys[5], (2, B, H)))
    mask = jnp.arange(T)[:, None] < jnp.array([3, 1])[None, :]

    def run(fuse):
        def loss(w, x, h0, c0):
            out, h_n, c_n = lstm_layer(
                w, x, h0, c0, mask=mask, scan=ScanOptions(fuse_directions=fuse, remat=remat).resolve()
            )
            return jnp.sum(jnp.sin(out)) + jnp.sum(jnp.stack(h_n) ** 2) + jnp.sum(jnp.stack(c_n)), (out, h_n, c_n)

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
    "kwargs,lengths", [({"bidirectional": True, "proj_size": 2}, (4, 2))], ids=["bidir-proj-lengths"]
)
def test_custom_vjp_second_order_reverse_matches_autodiff(kwargs, lengths):
    with precision("float64"):
        config, params, x, _, _ = _problem(kwargs, jnp.float64)
        seq_lengths = None if lengths is None else jnp.asarray(lengths)
        fast = _second_order(config, params, x, seq_lengths)
        remat = _second_order(config, params, x, seq_lengths, remat=True)
        plain = _second_order(config, params, x, seq_lengths, custom_vjp=False)
    assert np.abs(np.asarray(plain)).max() > 0
    assert_close(fast, plain, "float64", "grad of grad")
    assert_close(remat, plain, "float64", "grad of grad (remat)")


@pytest.mark.parametrize("custom_vjp", [True, False], ids=["custom_vjp", "autodiff"])
def test_remat_cuts_activation_memory(custom_vjp):
    # What remat is for: the compiled gradient's scratch memory (XLA's own accounting of
    # the buffers alive at once) must shrink, here for a 2-layer LSTM whose saved gates
    # dominate it. Measured on CPU: 833 -> 611 MiB (custom VJP) and 1185 -> 681 MiB
    # (autodiff) for B=64, T=256, I=256, H=512; this smaller case is compiled, not run.
    config = LSTMConfig(32, 64, num_layers=2)
    params = init_params(jax.random.key(0), config)
    x = jnp.zeros((128, 16, 32))

    def scratch_bytes(remat):
        loss = lambda p, x: jnp.sum(lstm(p, x, config=config, scan=ScanOptions(custom_vjp=custom_vjp, remat=remat))[0])  # noqa: E731
        compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile()
        analysis = compiled.memory_analysis()
        if analysis is None:
            pytest.skip("this backend reports no memory analysis")
        return analysis.temp_size_in_bytes

    kept, remat = scratch_bytes(False), scratch_bytes(True)
    assert remat < 0.85 * kept, f"remat scratch {remat} B vs {kept} B with the gates kept"


def test_forward_mode_works_with_the_default_options_and_matches_reverse_mode():
    # JAX cannot run forward mode through a custom_vjp; when lstm is traced under forward
    # mode the layer differentiates the plain scan instead, so jvp and jacfwd need no option.
    with precision("float64"):
        config, params, x, _, _ = _problem({"bidirectional": True, "proj_size": 2}, jnp.float64)
        lengths = jnp.array([4, 2])
        f = lambda scan: lambda x: lstm(params, x, config=config, seq_lengths=lengths, scan=scan)[0]  # noqa: E731
        loss = lambda x: jnp.sum(jnp.sin(f(None)(x)))  # noqa: E731
        tangent = jax.random.normal(jax.random.key(5), x.shape, x.dtype)
        _, jvp_default = jax.jvp(f(None), (x,), (tangent,))
        _, jvp_plain = jax.jvp(f(ScanOptions(custom_vjp=False)), (x,), (tangent,))
        assert_close(jvp_default, jvp_plain, "float64", "jvp")
        assert_close(jax.jit(jax.jacfwd(loss))(x), jax.grad(loss)(x), "float64", "jit(jacfwd) vs grad")
        # A Hessian-vector product (jvp of grad) goes through the custom VJP and matches autodiff.
        hvp = lambda scan: jax.jvp(jax.grad(lambda x: jnp.sum(f(scan)(x) ** 2)), (x,), (x,))[1]  # noqa: E731
        plain = hvp(ScanOptions(custom_vjp=False))
        assert np.abs(np.asarray(plain)).max() > 0
        assert_close(hvp(None), plain, "float64", "jvp of grad")


def test_linearize_and_forward_mode_of_a_jitted_function_work_with_custom_vjp_off():
    # What the fallback cannot reach (documented): jax.linearize, and forward mode of a
    # function compiled before with the custom VJP. ScanOptions(custom_vjp=False) serves both.
    with precision("float64"):
        config, params, x, _, _ = _problem({}, jnp.float64)
        plain = jax.jit(lambda x: lstm(params, x, config=config, scan=ScanOptions(custom_vjp=False))[0])
        tangent = jax.random.normal(jax.random.key(6), x.shape, x.dtype)
        _, jvp = jax.jvp(plain, (x,), (tangent,))
        _, linear = jax.linearize(plain, x)
        assert_close(linear(tangent), jvp, "float64", "linearize vs jvp")
        _, vjp = jax.vjp(plain, x)
        # <J t, u> = <t, J^T u>: forward and reverse mode agree.
        u = jax.random.normal(jax.random.key(7), jvp.shape, x.dtype)
        assert_close(jnp.vdot(jvp, u), jnp.vdot(tangent, vjp(u)[0]), "float64", "jvp vs vjp")


@pytest.mark.parametrize("remat", [False, True], ids=["gates-kept", "remat"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bidir"])
def test_custom_vjp_padding_nan_does_not_leak(bidirectional, remat):
    config, params, x, _, _ = _problem({"bidirectional": bidirectional}, jnp.float32)
    lengths = jnp.array([2, 4])
    x = jnp.where(jnp.arange(T)[:, None, None] >= lengths[None, :, None], jnp.nan, x)

    def loss(p, x):
        out, (h_n, c_n) = lstm(p, x, config=config, seq_lengths=lengths, scan=ScanOptions(remat=remat))
        return jnp.sum(out) + jnp.sum(h_n) + jnp.sum(c_n)

    g_params, g_x = jax.grad(loss, argnums=(0, 1))(params, x)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in g_params.values())
    valid = jnp.arange(T)[:, None] < lengths[None, :]
    assert bool(jnp.all(jnp.isfinite(g_x[valid])))
    assert bool(jnp.all(g_x[~valid] == 0))


def test_bf16_compute_keeps_f32_cell_state_and_tracks_f32():
    config, params, x, (h0, c0), _ = _problem({"bidirectional": True}, jnp.float32)
    p16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    out32, (_, c32) = lstm(params, x, (h0, c0), config=config)
    out16, (h16, c16) = lstm(p16, x.astype(jnp.bfloat16), (h0, c0), config=config)
    assert out16.dtype == h16.dtype == jnp.bfloat16
    assert c16.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out16, np.float32), np.asarray(out32), atol=5e-2)
    np.testing.assert_allclose(np.asarray(c16), np.asarray(c32), atol=5e-2)
    grads = jax.grad(lambda p: jnp.sum(lstm(p, x.astype(jnp.bfloat16), config=config)[0].astype(jnp.float32)))(p16)
    assert all(v.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(v))) for v in grads.values())


def test_modules_pass_scan_options_to_lstm(monkeypatch):
    # The nnx and linen modules are thin wrappers: their __call__ must hand the path
    # arguments to `jaxlstm.lstm` unchanged, and the result must not depend on them.
    from flax import nnx

    import jaxlstm.linen
    import jaxlstm.nnx

    x = jax.random.normal(jax.random.key(0), (T, B, I))
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
