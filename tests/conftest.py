"""Shared fixtures: the dtype switch, a persistent compilation cache, hypothesis profiles.

Everything that is not a fixture (problems, runners, tolerances) lives in `tests/harness.py`.
"""

from __future__ import annotations

import os

import jax
import pytest

from tests.harness import precision

# The float32 tolerances here assume float32 matmuls. On a GPU, JAX's default for float32
# matmuls is TF32 (10 mantissa bits; on an H200 jaxlstm then differed from torch by 3.7e-5,
# over the 2e-5 tolerance, against 5e-8 at float32), so the suite asks for float32
# explicitly, and through the variable for the subprocesses it starts too (a no-op on CPU).
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "float32")
jax.config.update("jax_default_matmul_precision", os.environ["JAX_DEFAULT_MATMUL_PRECISION"])


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Each test using it runs in float32 and in float64 (with jax's x64 mode on)."""
    with precision(request.param):
        yield request.param


@pytest.fixture(scope="module", params=["native", "xla"])
def backend(request):
    """Each test of a module using it runs with the recurrence on the native CPU kernel and on
    XLA's scan (`ScanOptions(backend=None)` means the parameter); native is skipped where the
    kernel is not built. Module-scoped, so hypothesis' tests can use it too."""
    from jaxlstm import native_backend, use_backend

    if request.param == "native" and not native_backend().available:
        pytest.skip(f"the native kernel is unavailable: {native_backend().reason}")
    with use_backend(request.param):
        yield request.param


_CACHE_OPTIONS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """A persistent XLA cache, for modules whose runs compile the same programs again and again.

    Loading a compiled program back is exact (the same executable), so nothing a test checks
    changes; it saves the seconds each recompilation costs. Yields the environment variables
    that give a subprocess the same cache. Use it with `pytestmark =
    pytest.mark.usefixtures("compilation_cache")` or as a test argument.
    """
    from jax.experimental.compilation_cache import compilation_cache as cc

    path = str(tmp_path_factory.getbasetemp() / "jax-compilation-cache")
    saved = {k: getattr(jax.config, k) for k in _CACHE_OPTIONS}
    cc.reset_cache()
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield {"JAX_COMPILATION_CACHE_DIR": path, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    cc.reset_cache()
    for k, v in saved.items():
        jax.config.update(k, v)


# Hypothesis profiles for the randomized tests: `ci` is the default, small and derandomized so
# CI is reproducible; `HYPOTHESIS_PROFILE=thorough` draws at least 500 fresh examples per test.
try:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ci",
        max_examples=40,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile(
        "thorough", max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is a test extra; tests that need it skip themselves
    pass
