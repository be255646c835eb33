"""Static (trace-time) checks of call arguments, with messages that name the argument."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_float_dtype",
    "check_floating",
    "check_key",
    "check_params",
    "check_shape",
    "is_concrete",
    "require_bool",
    "require_positive_int",
    "split_state",
]


def require_positive_int(name: str, value: Any) -> int:
    """Returns `value` if it is a positive int (bools excluded), else raises.

    Raises:
        TypeError: `value` is not an int.
        ValueError: `value` is not positive.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{name} must be a positive int, got {value!r} of type {type(value).__name__}"
        )
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def require_bool(name: str, value: Any) -> bool:
    """Returns `value` if it is a bool, else raises TypeError naming `name`."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r} of type {type(value).__name__}")
    return value


def check_floating(name: str, x: Any) -> None:
    """Raises TypeError unless `x` has a floating-point dtype."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")


def check_float_dtype(name: str, dtype: Any) -> jnp.dtype:
    """Returns `dtype` as a numpy dtype; raises TypeError unless it names a floating-point dtype."""
    try:
        result = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(
            f"{name} must be a floating-point dtype such as jnp.float32, got {dtype!r}"
        ) from None
    if not jnp.issubdtype(result, jnp.floating):
        raise TypeError(f"{name} must be a floating-point dtype such as jnp.float32, got {result}")
    return result


def check_shape(name: str, x: Any, expected: tuple[int, ...]) -> None:
    """Raises ValueError unless `x.shape == expected`."""
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(x.shape)}")


def check_key(name: str, key: Any) -> None:
    """Raises TypeError unless `key` is one PRNG key: a typed key array of shape `()`
    (`jax.random.key(0)`) or a raw `uint32[2]` key (`jax.random.PRNGKey(0)`)."""
    typed = (
        isinstance(key, jax.Array)
        and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        and key.shape == ()
    )
    raw = (
        isinstance(key, (jax.Array, np.ndarray))
        and key.dtype == np.uint32
        and tuple(key.shape) == (2,)
    )
    if isinstance(key, jax.core.Tracer):
        typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ()
        raw = key.dtype == np.uint32 and tuple(key.shape) == (2,)
    if not (typed or raw):
        if hasattr(key, "dtype") and hasattr(key, "shape"):
            got = f"{type(key).__name__} with dtype {key.dtype} and shape {tuple(key.shape)}"
        else:
            got = f"{type(key).__name__} {key!r}"
        raise TypeError(f"{name} must be a PRNG key such as jax.random.key(0), got {got}")


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


def check_params(
    params: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]], what: str = "params"
) -> None:
    """Raises one ValueError listing every missing, unexpected and mis-shaped parameter.

    Args:
        params: `{name: array}` to check.
        expected: `{name: shape}` required.
        what: how the error names `params`.

    Raises:
        TypeError: `params` is not a mapping.
        ValueError: the names or shapes differ from `expected`.
    """
    if not isinstance(params, Mapping):
        raise TypeError(
            f"{what} must be a mapping {{torch name: array}}, got {type(params).__name__}"
        )
    missing = [k for k in expected if k not in params]
    unexpected = [k for k in params if k not in expected]
    mismatched = [
        f"{k}: expected {tuple(shape)}, got {tuple(params[k].shape)}"
        for k, shape in expected.items()
        if k in params and tuple(params[k].shape) != tuple(shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if mismatched:
        problems.append("shape mismatches: " + "; ".join(mismatched))
    if problems:
        raise ValueError(f"{what} do not match the configuration: " + ", ".join(problems))
