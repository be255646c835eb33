"""Shared fixtures: tolerances, the float64 switch and torch/numpy conversions."""

from __future__ import annotations

import contextlib
import os

import jax
import numpy as np
import pytest

# The repository root, and the environment for running its modules in a subprocess (this
# checkout first on the path; no XLA_FLAGS inherited unless given).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env(**extra: str) -> dict[str, str]:
    """`os.environ` with ROOT on PYTHONPATH, XLA_FLAGS removed, then `extra` set."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env


# Written-out tolerances for comparisons with torch (absolute and relative, per dtype).
TOLERANCES = {
    "float32": {"atol": 1e-5, "rtol": 1e-5},
    "float64": {"atol": 1e-10, "rtol": 1e-10},
}


@contextlib.contextmanager
def precision(dtype: str):
    """Runs the body with jax's 64-bit mode on for float64, off for float32."""
    with jax.enable_x64(dtype == "float64"):
        yield


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Each test using it runs in float32 and in float64 (with jax's x64 mode on)."""
    with precision(request.param):
        yield request.param


def assert_close(actual, expected, dtype: str = "float32", what: str = "") -> None:
    """np.testing.assert_allclose with the tolerances of `dtype`."""
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64),
        np.asarray(expected, dtype=np.float64),
        err_msg=what,
        **TOLERANCES[dtype],
    )


# Hypothesis profiles for the randomized tests (tests/test_random_equivalence.py): `ci` is the
# default, small and derandomized so CI is reproducible; `HYPOTHESIS_PROFILE=thorough` draws
# at least 500 fresh examples per test.
try:
    import os

    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ci",
        max_examples=40,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile(
        "thorough",
        max_examples=600,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is a test extra; tests that need it skip themselves
    pass
