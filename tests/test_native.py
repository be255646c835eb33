"""jaxlstm.native: the compiled CPU kernel against the XLA path and torch, on every
instruction-set variant this machine runs; its activations' accuracy; threads; dispatch.

The whole torch-equivalence suite runs on both backends too (the `backend` fixture of
tests/conftest.py); this file holds what is particular to the kernel: sizes that are not
multiples of the vector width or of the tile height, masks with lengths 1 and T, every
variant forced, and the C++ driver under the sanitizers (tests/native/).
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm import LSTMConfig, ScanOptions, native
from tests.harness import (
    assert_close,
    expect,
    make_problem,
    run_jax,
    run_torch,
    subprocess_env,
)

pytestmark = pytest.mark.skipif(
    not native.native_backend().available, reason="the native kernel is not built here"
)

VARIANTS = native.native_backend().instruction_sets or ("unavailable",)


def test_the_kernel_is_built_wherever_a_compiler_is():
    """`pip install` builds the kernel where a C++ compiler is present (as on CI)."""
    if not shutil.which(os.environ.get("CXX", "c++")):
        pytest.skip("no C++ compiler here")
    info = jaxlstm.native_backend()
    assert info.available and info.reason == ""
    assert info.instruction_set in info.instruction_sets
    assert "portable" in info.instruction_sets


# --- against the XLA path and torch, every variant ----------------------------------------------

# id: (config, batch, steps, lengths, with_hx). Sizes are chosen off the grid: H not a
# multiple of 8 or 16 lanes, B not a multiple of the tile heights 6, 3, 2.
CASES = {
    "B1 H1 T1": (LSTMConfig(2, 1), 1, 1, None, False),
    "B7 H19": (LSTMConfig(5, 19), 7, 6, None, True),
    "B13 H40 2 layers": (LSTMConfig(3, 40, num_layers=2), 13, 5, None, False),
    "lengths 1 and T, bidir": (
        LSTMConfig(4, 17, num_layers=2, bidirectional=True),
        5,
        7,
        [1, 7, 3, 1, 7],
        True,
    ),
    "projection P < H, lengths": (
        LSTMConfig(3, 21, proj_size=10, bidirectional=True),
        4,
        6,
        [6, 2, 1, 5],
        True,
    ),
    "projection P = 1": (LSTMConfig(3, 20, proj_size=1), 3, 4, None, True),
    "B64 H128": (LSTMConfig(8, 128), 64, 3, None, False),
}


def _scan(backend: str):
    return functools.partial(jaxlstm.lstm, scan=ScanOptions(backend=backend))


@functools.cache
def _reference(case_id: str) -> tuple:
    problem = _problem(case_id)
    return run_jax(problem, _scan("xla")), run_torch(problem)


def _problem(case_id: str):
    config, batch, steps, lengths, with_hx = CASES[case_id]
    return make_problem(
        config,
        batch=batch,
        steps=steps,
        with_hx=with_hx,
        seq_lengths=lengths,
        dtype="float32",
        seed=len(case_id),
    )


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case_id", CASES)
def test_native_matches_xla_and_torch_with_gradients(case_id, variant):
    with native.forced_instruction_set(variant):
        got = run_jax(_problem(case_id), _scan("native"))
    xla, torch = _reference(case_id)
    assert_close(got, xla, "float32-scaled", f"{case_id} ({variant}) vs XLA: ")
    assert_close(got, torch, "float32-scaled", f"{case_id} ({variant}) vs torch: ")


def test_vmap_over_the_kernel_equals_one_call_per_example():
    """`jax.vmap` runs the kernel once per mapped example (the FFI call's batching rule)."""
    config = LSTMConfig(3, 9, proj_size=4)
    params = jaxlstm.init_params(jax.random.key(0), config)
    xs = jax.random.normal(jax.random.key(1), (3, 5, 2, 3))  # 3 examples of [T, B, I]

    def loss(p, x):
        return jnp.sum(_scan("native")(p, x, config=config)[0] ** 2)

    grad = jax.grad(loss)
    batched = jax.jit(jax.vmap(grad, in_axes=(None, 0)))(params, xs)
    for k in range(3):
        one = grad(params, xs[k])
        for name in params:
            np.testing.assert_allclose(batched[name][k], one[name], rtol=1e-5, atol=1e-6)
    assert (
        "jaxlstm_backward" in jax.jit(jax.vmap(grad, in_axes=(None, 0))).lower(params, xs).as_text()
    )


def test_masked_steps_give_zeros_and_stop_the_state():
    config = LSTMConfig(3, 11, bidirectional=True)
    params = jaxlstm.init_params(jax.random.key(0), config)
    x = jax.random.normal(jax.random.key(1), (6, 3, 3))
    lengths = jnp.array([1, 6, 4])
    out, (h_n, _) = _scan("native")(params, x, config=config, seq_lengths=lengths)
    for b, n in enumerate([1, 6, 4]):
        assert not np.any(np.asarray(out[n:, b])), "padded outputs are 0"
        np.testing.assert_array_equal(out[n - 1, b, :11], h_n[0, b])  # forward: last valid
        np.testing.assert_array_equal(out[0, b, 11:], h_n[1, b])  # backward: ends at t = 0


def test_the_fma_probe_measures_a_positive_rate_and_checks_threads():
    one = native.fma_peak_gflops(1, seconds=0.02)
    assert 0.5 < one < 10_000, one
    expect(ValueError, lambda: native.fma_peak_gflops(0), "threads", "positive int", "got 0")


# --- the kernel's activations -------------------------------------------------------------------


def _ulps(got, exact: np.ndarray) -> np.ndarray:
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(np.asarray(got, np.float64) - exact) / spacing


def _kernel_activations(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """σ(z), tanh(z) of the gate block and tanh(z) of the cell state, by the kernel itself.

    One step with W_hh = 0 and h0 = 0, so the gates are the activated input projection; the
    forget gate is open (pre-activation 100: σ = 1 exactly) and the input gate shut (−200:
    i·g below 1e-44), so the step's c is c0 = z and its tanh_c is tanh(z).
    """
    n = z.size
    pre = np.stack([np.full(n, -200.0), np.full(n, 100.0), z, z], axis=-1).astype(np.float32)
    _, _, _, gates, tanh_c = native.forward(
        jnp.asarray(pre[None]),  # [T=1, B=n, 4H=4]
        None,
        jnp.zeros((4, 1)),
        None,
        jnp.zeros((n, 1)),
        jnp.asarray(z[:, None]),
        None,
        keep=True,
    )
    gates = np.asarray(gates)[0]
    return gates[:, 3], gates[:, 2], np.asarray(tanh_c)[0, :, 0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_kernel_activations_keep_the_ulp_bounds_of_the_xla_path(variant):
    """The bounds of tests/test_cell.py's accuracy test, for the kernel's own σ and tanh."""
    x = np.concatenate(
        [np.linspace(-30, 30, 600_001), np.random.default_rng(0).standard_normal(200_000) * 0.5]
    ).astype(np.float32)
    exact_tanh = np.tanh(x.astype(np.float64))
    exact_sigmoid = 1 / (1 + np.exp(-x.astype(np.float64)))
    with native.forced_instruction_set(variant):
        sigmoid, tanh_g, tanh_c = _kernel_activations(x)
        closed = np.linspace(-80, -15, 1001, dtype=np.float32)
        closed_sigmoid = _kernel_activations(closed)[0]
    for what, got, exact, worst, mean in (
        ("tanh of the cell state", tanh_c, exact_tanh, 1.5, 0.15),
        ("tanh of the g block", tanh_g, exact_tanh, 1.5, 0.15),
        ("sigmoid of the o block", sigmoid, exact_sigmoid, 2.5, 0.3),
    ):
        ulps = _ulps(got, exact)
        assert ulps.max() <= worst and ulps.mean() <= mean, (
            f"{variant} {what}: max {ulps.max():.2f}, mean {ulps.mean():.3f} ulp"
        )
    exact = 1 / (1 + np.exp(-closed.astype(np.float64)))
    assert np.max(np.abs(closed_sigmoid - exact) / exact) < 4e-7


def test_kernel_activations_pass_nan_and_saturate_at_infinity():
    z = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30], np.float32)
    sigmoid, tanh_g, tanh_c = _kernel_activations(z)
    np.testing.assert_array_equal(sigmoid, [np.nan, 1, 0, 1, 0])
    np.testing.assert_array_equal(tanh_g, [np.nan, 1, -1, 1, -1])
    np.testing.assert_array_equal(tanh_c, [np.nan, 1, -1, 1, -1])


# --- threads --------------------------------------------------------------------------------------


def _digits_grad():
    config = LSTMConfig(28, 128, num_layers=2, bidirectional=True)
    params = jaxlstm.init_params(jax.random.key(0), config)
    x = jax.random.normal(jax.random.key(1), (12, 64, 28))
    lengths = jnp.asarray(np.random.default_rng(0).integers(1, 13, 64))

    def loss(params, x):
        out, (h, c) = _scan("native")(params, x, config=config, seq_lengths=lengths)
        return jnp.sum(out**2) + jnp.sum(h) + jnp.sum(c**2)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), params, x


def test_results_do_not_depend_on_the_number_of_threads(monkeypatch):
    """Each hidden unit is computed by one thread in the same order, whatever the split."""
    fn, params, x = _digits_grad()
    many = jax.device_get(fn(params, x))
    monkeypatch.setattr(native, "_PARALLEL_FLOPS", 10**18)  # every call on one thread
    fn_one, _, _ = _digits_grad()
    one = jax.device_get(fn_one(params, x))
    jax.tree.map(np.testing.assert_array_equal, many, one)


def test_concurrent_calls_agree_bit_for_bit():
    """Calls from several Python threads at once share XLA's pool: no race, no deadlock."""
    fn, params, x = _digits_grad()
    want = jax.device_get(fn(params, x))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: jax.device_get(fn(params, x)), range(12)))
    for got in results:
        jax.tree.map(np.testing.assert_array_equal, got, want)


def test_a_single_core_process_finishes(tmp_path):
    """Pinned to one core, XLA's pool cannot start a second worker in time: the caller does
    the work alone instead of waiting (a subprocess, since affinity is per process)."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no sched_setaffinity here")
    script = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "import jax, jax.numpy as jnp, jaxlstm\n"
        "c = jaxlstm.LSTMConfig(8, 64)\n"
        "p = jaxlstm.init_params(jax.random.key(0), c)\n"
        "x = jnp.ones((50, 32, 8))\n"
        "g = jax.grad(lambda p: jaxlstm.lstm(p, x, config=c)[0].sum())(p)\n"
        "print('ok', float(g['weight_hh_l0'].sum()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr[-2000:]


# --- what runs where ------------------------------------------------------------------------------


def _compiled_text(fn, *args) -> str:
    return jax.jit(fn).lower(*args).as_text()


def test_the_default_on_cpu_calls_the_kernel_and_xla_does_not():
    config = LSTMConfig(3, 8, bidirectional=True)
    params = jaxlstm.init_params(jax.random.key(0), config)
    x = jnp.ones((4, 2, 3))

    def forward(scan):
        return lambda p: jaxlstm.lstm(p, x, config=config, scan=scan)[0]

    def gradient(scan):
        return jax.grad(lambda p: jnp.sum(forward(scan)(p)))

    default = _compiled_text(forward(None), params)
    assert default.count("jaxlstm_forward_infer") == 2  # one call per direction
    assert "jaxlstm_backward" in _compiled_text(gradient(None), params)
    for fallback in (ScanOptions(backend="xla"), ScanOptions(remat=True)):
        assert "jaxlstm_" not in _compiled_text(gradient(fallback), params)


def test_float64_runs_on_xla():
    config = LSTMConfig(3, 8)
    with jax.enable_x64(True):
        params = jaxlstm.init_params(jax.random.key(0), config, dtype=jnp.float64)
        x = jnp.ones((4, 2, 3), jnp.float64)
        text = _compiled_text(lambda p: jaxlstm.lstm(p, x, config=config)[0], params)
    assert "jaxlstm_" not in text


def test_an_unknown_variant_is_refused_by_name(monkeypatch):
    expect(ValueError, lambda: native.forced_instruction_set("sse9").__enter__(), "'sse9'")
    monkeypatch.setenv(native.ENV_ISA, "sse9")
    expect(ValueError, native.native_backend, native.ENV_ISA, "got 'sse9'", "'portable'")


# --- the C++ driver under the sanitizers ----------------------------------------------------------

DRIVER = os.path.join(os.path.dirname(__file__), "native", "driver.cc")
KERNELS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "jaxlstm", "kernels")


# Each variant is compiled with its own instruction set, as CMakeLists.txt does: the portable
# one must not pick up AVX-512 instructions on a machine without them.
SOURCES = {
    "team.cc": [],
    "dispatch.cc": ["-DJAXLSTM_HAVE_AVX2", "-DJAXLSTM_HAVE_AVX512"],
    "isa_portable.cc": [],
    "isa_avx2.cc": ["-mavx2", "-mfma"],
    "isa_avx512.cc": ["-mavx512f", "-mfma"],
}


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the driver's build is for x86-64")
@pytest.mark.parametrize("sanitizer", ["address,undefined", "thread"])
def test_cpp_driver_under_sanitizers(sanitizer, tmp_path):
    """tests/native/driver.cc checks every variant against a float64 reference, with worker
    threads that start late or never, under AddressSanitizer and ThreadSanitizer."""
    compiler = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("g++")
    if not compiler:
        pytest.skip("no C++ compiler here")
    flags = ["-std=c++17", "-O1", "-g", f"-fsanitize={sanitizer}", "-fno-omit-frame-pointer"]
    flags += [f"-I{KERNELS}", "-pthread"]
    objects = []
    for name, extra in [("driver.cc", []), *SOURCES.items()]:
        source = DRIVER if name == "driver.cc" else os.path.join(KERNELS, name)
        objects.append(str(tmp_path / (name + ".o")))
        _build([compiler, *flags, *extra, "-c", source, "-o", objects[-1]])
    binary = str(tmp_path / "driver")
    _build([compiler, *flags, *objects, "-o", binary])
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1", ASAN_OPTIONS="detect_leaks=1")
    run = subprocess.run([binary], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0 and "passed" in run.stdout, run.stdout[-2000:] + run.stderr[-4000:]


def _build(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, " ".join(command) + "\n" + done.stderr[-3000:]
