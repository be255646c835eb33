"""Parameter initialisation: torch's default, or any initializers in JAX/Flax's convention.

An initializer is a function `init(key, shape, dtype) -> array`, as in `jax.nn.initializers`
(which `flax.nnx.initializers` and `flax.linen.initializers` re-export). jaxlstm stores
weights in torch's `(out, in)` layout, while those initializers read the fan-in and fan-out
of a kernel from Flax's `(in, out)` layout. So a kernel initializer is called with Flax's
shape, `(I_k, 4H)` for `weight_ih`, `(H_out, 4H)` for `weight_hh` and `(H, P)` for
`weight_hr`, and its result is stored transposed: `lecun_normal`, `glorot_uniform` or
`orthogonal` then see the fan-in they would see in a Flax `LSTMCell`.

`init_params` is the one initialiser behind `jaxlstm.LSTM`, `jaxlstm.LSTMCell` and their
`jaxlstm.linen` twins: given the same key they hold the same weights.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm._checks import check_float_dtype, check_key
from jaxlstm.config import LSTMCellConfig, LSTMConfig, param_roles

__all__ = ["Initializer", "init_params", "torch_uniform"]

Array = jax.Array
Initializer = Callable[[Array, tuple[int, ...], Any], Array]
"""JAX/Flax's initializer convention: `init(key, shape, dtype) -> array`."""

_CHUNK = 1 << 14  # numbers per compiled draw


@functools.partial(jax.jit, static_argnums=2)
def _uniform_chunk(key: Array, index: Array, dtype: Any) -> Array:
    """U(-1, 1) numbers `[_CHUNK]`, the `index`-th chunk of `key`'s stream."""
    return jax.random.uniform(jax.random.fold_in(key, index), (_CHUNK,), dtype, -1.0, 1.0)


def torch_uniform(hidden_size: int) -> Initializer:
    """Torch's default initializer of LSTM weights and biases: U(-1/√H, 1/√H).

    The numbers are drawn in chunks of a fixed size by one compiled function, so an array
    of a new shape compiles nothing new: drawn with `jax.random.uniform(key, shape)` each
    shape compiled its own random kernel, and building a model took seconds on a CPU. The
    values do not depend on whether the key is traced (under `nnx.eval_shape` or `jax.jit`).

    Args:
        hidden_size: H, which sets the bound 1/√H.

    Returns:
        `init(key, shape, dtype=jnp.float32)`; it draws in at least float32, then casts.

    Examples:
        >>> w = torch_uniform(16)(jax.random.key(0), (64, 8))
        >>> bool(jnp.abs(w).max() <= 0.25)
        True
    """
    bound = 1.0 / math.sqrt(hidden_size)

    def init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
        dtype = check_float_dtype("dtype of the parameters", dtype)
        draw = jnp.promote_types(dtype, jnp.float32)
        size = math.prod(shape)
        chunks = [_uniform_chunk(key, i, draw) for i in range(-(-size // _CHUNK))]
        if isinstance(key, jax.core.Tracer):
            stream = jnp.concatenate(chunks) if chunks else jnp.zeros(0, draw)
            return (stream[:size] * jnp.asarray(bound, draw)).reshape(shape).astype(dtype)
        # Concrete: slice and scale on the host, which compiles nothing per shape.
        host = np.concatenate([np.asarray(c) for c in chunks]) if chunks else np.zeros(0, draw)
        return jnp.asarray((host[:size] * np.asarray(bound, draw)).reshape(shape).astype(dtype))

    return init


# The initializer argument that sets each parameter role, and whether it is a kernel (called
# with Flax's transposed shape).
_ROLES = {
    "weight_ih": ("kernel_init", True),
    "weight_hh": ("recurrent_kernel_init", True),
    "bias_ih": ("bias_init", False),
    "bias_hh": ("bias_init", False),
    "weight_hr": ("projection_init", True),
}


def init_params(
    key: Array,
    config: LSTMConfig | LSTMCellConfig,
    dtype: Any = jnp.float32,
    *,
    kernel_init: Initializer | None = None,
    recurrent_kernel_init: Initializer | None = None,
    bias_init: Initializer | None = None,
    projection_init: Initializer | None = None,
) -> dict[str, Array]:
    """Initial parameters of an LSTM or LSTM cell: torch's U(-1/√H, 1/√H) unless told otherwise.

    Each parameter draws from its own key, `jax.random.fold_in(key, position)` where
    `position` is its index in torch's `state_dict` order.

    Args:
        key: a PRNG key, `jax.random.key(seed)`.
        config: the `LSTMConfig` or `LSTMCellConfig`.
        dtype: the parameters' dtype.
        kernel_init: for `weight_ih*`, called with Flax's shape `(I_k, 4H)` and transposed.
        recurrent_kernel_init: for `weight_hh*`, called with `(H_out, 4H)` and transposed.
        bias_init: for `bias_ih*` and `bias_hh*`, called with `(4H,)`.
        projection_init: for `weight_hr*`, called with `(H, P)` and transposed.
            Each None is `torch_uniform(H)`.

    Returns:
        `{torch name: array}` with the shapes of `config.param_shapes()`, in torch's order.

    Raises:
        TypeError: `key` is not a PRNG key, `config` is not a configuration, `dtype` is not a
            floating-point dtype, or an initializer is not callable.
        ValueError: an initializer returned an array of the wrong shape.

    Examples:
        >>> params = init_params(jax.random.key(0), LSTMConfig(3, 5))
        >>> params["weight_ih_l0"].shape
        (20, 3)
    """
    check_key("key", key)
    if not isinstance(config, (LSTMConfig, LSTMCellConfig)):
        raise TypeError(
            f"config must be a jaxlstm.LSTMConfig or LSTMCellConfig, got {type(config).__name__}"
        )
    dtype = check_float_dtype("dtype (param_dtype) of the parameters", dtype)
    given = {
        "kernel_init": kernel_init,
        "recurrent_kernel_init": recurrent_kernel_init,
        "bias_init": bias_init,
        "projection_init": projection_init,
    }
    for name, init in given.items():
        if init is not None and not callable(init):
            raise TypeError(
                f"{name} must be an initializer init(key, shape, dtype) or None, got {init!r}"
            )
    default = torch_uniform(config.hidden_size)
    params = {}
    roles = param_roles(config)
    for position, (name, shape) in enumerate(config.param_shapes().items()):
        argument, is_kernel = _ROLES[roles[name]]
        init = given[argument] or default
        value = _draw(
            init,
            jax.random.fold_in(key, position),
            shape,
            dtype,
            is_kernel,
            f"{argument} for {name}",
        )
        params[name] = value
    return params


def _draw(
    init: Initializer, key: Array, shape: tuple[int, ...], dtype: Any, is_kernel: bool, what: str
) -> Array:
    """`init`'s array for a parameter of torch shape `shape` (kernels drawn transposed)."""
    asked = tuple(reversed(shape)) if is_kernel else shape
    value = jnp.asarray(init(key, asked, dtype))
    if value.shape != asked:
        raise ValueError(
            f"{what} returned shape {value.shape} for the shape {asked} it was asked for"
        )
    return (value.T if is_kernel else value).astype(dtype)
