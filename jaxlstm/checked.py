"""A checked `lstm`: checks what cannot be checked while tracing, with checkify.

`jaxlstm.lstm` checks every shape and dtype at trace time, and the values of `seq_lengths`
when they are concrete (numpy arrays, Python lists, or jax arrays outside `jit`). Under
`jax.jit`, `vmap` or `grad` traced `seq_lengths` have no values yet, and an out-of-range
length is not an error: a length ≤ 0 gives a sequence with no valid step (`out` all 0,
`h_n`/`c_n` equal to `h_0`/`c_0`) and a length > T acts as T. This module checks the values
inside the compiled program instead and hands back a `checkify.Error` to throw outside it.

Examples:
    >>> import functools
    >>> cfg = jaxlstm.LSTMConfig(3, 5)
    >>> params = jaxlstm.init_params(jax.random.key(0), cfg)
    >>> run = jax.jit(functools.partial(jaxlstm.checked.lstm, config=cfg))
    >>> err, (out, (h_n, c_n)) = run(params, jnp.ones((7, 2, 3)), seq_lengths=jnp.array([7, 9]))
    >>> err.throw()  # doctest: +SKIP
    JaxRuntimeError: seq_lengths must be in [1, T=7], got values from 7 to 9 (at ...)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import checkify

from jaxlstm.config import LSTMConfig
from jaxlstm.lstm import lstm as _lstm
from jaxlstm.options import ScanOptions, resolve_scan

__all__ = ["check_seq_lengths", "lstm"]

Array = jax.Array


def check_seq_lengths(seq_lengths: Array, steps: int) -> None:
    """Adds the check `1 <= seq_lengths <= steps` to a function run under `checkify.checkify`.

    Use it inside your own checkified function (e.g. a whole train step) before calling
    `jaxlstm.lstm` with traced lengths; outside `checkify.checkify` a failing check raises.

    Args:
        seq_lengths: `[B]` integer lengths (unbatched: a scalar), traced or concrete.
        steps: T, the number of time steps of the input.

    Examples:
        >>> def step(params, x, lengths):
        ...     check_seq_lengths(lengths, x.shape[0])
        ...     return jaxlstm.lstm(params, x, config=cfg, seq_lengths=lengths)
        >>> err, out = jax.jit(checkify.checkify(step))(params, x, lengths)  # doctest: +SKIP
    """
    lengths = jnp.asarray(seq_lengths)
    if lengths.size == 0:
        return
    lo, hi = jnp.min(lengths), jnp.max(lengths)
    checkify.check(
        (lo >= 1) & (hi <= steps),
        f"seq_lengths must be in [1, T={steps}], got values from {{lo}} to {{hi}}",
        lo=lo,
        hi=hi,
    )


def _steps(x: Any, config: LSTMConfig) -> int | None:
    """T of `x` as `jaxlstm.lstm` reads it, or None if the rank is wrong (lstm will say so)."""
    shape = jnp.shape(x)
    if len(shape) == 2:
        return shape[0]
    if len(shape) == 3:
        return shape[1] if config.batch_first else shape[0]
    return None


def lstm(
    params: Mapping[str, Array],
    x: Array,
    hx: tuple[Array, Array] | None = None,
    *,
    config: LSTMConfig,
    seq_lengths: Array | None = None,
    dropout_key: Array | None = None,
    scan: ScanOptions | None = None,
    errors: frozenset = checkify.user_checks,
) -> tuple[checkify.Error, tuple[Array, tuple[Array, Array]]]:
    """`jaxlstm.lstm` with its value checks done inside the program: returns `(err, result)`.

    Works eagerly and under `jax.jit`: the lengths are always checked inside the compiled
    program (concrete lengths too), and the error is returned, never raised. Shape and
    dtype errors are still raised at trace time, as by `jaxlstm.lstm`.

    Args:
        params: `{torch name: array}` with the shapes of `config.param_shapes()`.
        x: `[T, B, I]`, or `[B, T, I]` with `config.batch_first`, or unbatched `[T, I]`.
        hx: `(h_0 [D*L, B, H_out], c_0 [D*L, B, H])` or None for zeros.
        config: the structural arguments.
        seq_lengths: `[B]` integer lengths (unbatched: a scalar), checked to lie in [1, T].
        dropout_key: as for `jaxlstm.lstm`.
        scan: as for `jaxlstm.lstm`.
        errors: the checkify error categories to enable besides the seq_lengths check, e.g.
            `checkify.user_checks | checkify.nan_checks` to also locate the first NaN.

    Returns:
        `(err, (out, (h_n, c_n)))`: `err.throw()` raises `checkify.JaxRuntimeError` (a
        `ValueError`) naming seq_lengths, T and the values found if a check failed, and
        `err.get()` is the message or None; the result is `jaxlstm.lstm`'s.

    Raises:
        ValueError, TypeError: as `jaxlstm.lstm` does for shapes, dtypes and concrete lengths
            closed over by the caller.

    Examples:
        >>> lengths = jnp.array([3, 0])
        >>> err, (out, _) = lstm(params, x, config=cfg, seq_lengths=lengths)  # doctest: +SKIP
        >>> err.get()  # doctest: +SKIP
        'seq_lengths must be in [1, T=7], got values from 0 to 3 (at ...)'
    """

    return _checked(config, resolve_scan(scan), errors | checkify.user_checks)(
        params, x, hx, seq_lengths, dropout_key
    )


@functools.lru_cache(maxsize=64)
def _checked(config: LSTMConfig, scan: ScanOptions, errors: frozenset):
    """`lstm` checkified, jitted inside so that seq_lengths are always checked in the program
    (also when called eagerly with concrete lengths), and cached per static arguments."""

    def run(params, x, hx, seq_lengths, dropout_key):
        steps = _steps(x, config)
        if seq_lengths is not None and steps is not None:
            check_seq_lengths(seq_lengths, steps)
        return _lstm(
            params,
            x,
            hx,
            config=config,
            seq_lengths=seq_lengths,
            dropout_key=dropout_key,
            scan=scan,
        )

    return checkify.checkify(jax.jit(run), errors=errors)
