"""Shared fixtures: tolerances, the float64 switch and torch/numpy conversions."""

from __future__ import annotations

import contextlib

import jax
import numpy as np
import pytest

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
