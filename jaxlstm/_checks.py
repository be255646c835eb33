"""Static (trace-time) checks of call arguments, with messages that name the argument."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_floating", "check_shape", "is_concrete", "split_state"]


def check_floating(name: str, x: Any) -> None:
    """Raises TypeError unless `x` has a floating-point dtype."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")


def check_shape(name: str, x: Any, expected: tuple[int, ...]) -> None:
    """Raises ValueError unless `x.shape == expected`."""
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(x.shape)}")


def is_concrete(x: Any) -> bool:
    """True if the value of `x` is known now (not a tracer inside jit/grad/vmap)."""
    if isinstance(x, jax.core.Tracer):
        return False
    if isinstance(x, (list, tuple)):
        return all(is_concrete(item) for item in x)
    return isinstance(x, (np.ndarray, np.generic, jax.Array, int))


def split_state(
    hx: Any, name: str = "hx", labels: tuple[str, str] = ("hx[0] (h)", "hx[1] (c)")
) -> tuple[jax.Array, jax.Array]:
    """Returns `(h, c)` from a state pair, the one place a state is indexed by position.

    Args:
        hx: the state pair `(h, c)`.
        name: how errors name `hx` itself.
        labels: how errors name its two arrays.

    Raises:
        TypeError: `hx` is not a tuple or list of two arrays, or one is not floating point.
    """
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        if isinstance(hx, (tuple, list)):
            got = f"{type(hx).__name__} of length {len(hx)}"
        elif hasattr(hx, "shape"):
            got = f"a bare {type(hx).__name__} of shape {tuple(hx.shape)}"
        else:
            got = type(hx).__name__
        raise TypeError(f"{name} must be a tuple (h_0, c_0) of two arrays, got {got}")
    for label, value in zip(labels, hx, strict=True):
        if value is None:
            raise TypeError(f"{label} must be an array (pass hx=None for zeros), got None")
    h, c = jnp.asarray(hx[0]), jnp.asarray(hx[1])
    check_floating(labels[0], h)
    check_floating(labels[1], c)
    return h, c
