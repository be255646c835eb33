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


def split_state(hx: Any, name: str = "hx") -> tuple[jax.Array, jax.Array]:
    """Returns `(h, c)` from a state pair, the one place a state is indexed by position.

    Raises:
        TypeError: `hx` is not a tuple or list of two arrays.
    """
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        got = type(hx).__name__ + (f" of length {len(hx)}" if isinstance(hx, (tuple, list)) else "")
        raise TypeError(f"{name} must be a tuple (h_0, c_0) of two arrays, got {got}")
    h, c = hx
    return jnp.asarray(h), jnp.asarray(c)
