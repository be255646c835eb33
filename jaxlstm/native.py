"""The native CPU backend: finds jaxlstm's compiled recurrence kernel, registers it with
`jax.ffi`, and calls it for one layer and direction.

The kernel (C++ in `jaxlstm/kernels/`, built by `pip install`) runs the sequential part of a
layer on the CPU: for every step the product `h @ W_hh^T` with the gate update fused into it,
the hidden units shared among XLA's intra-op threads with one barrier per step. XLA still
computes the input projection `x @ W_ih^T + b` for all steps before it, and the weight and
input gradients after the backward recurrence, as single large matmuls.

Python decides what runs: which instruction-set variant (`avx512`, `avx2`, `portable`: the
best this processor runs, or the one forced with `forced_instruction_set` or the environment
variable `JAXLSTM_NATIVE_ISA`) and how many threads. The kernel takes float32 only.

Examples:
    >>> import jaxlstm
    >>> info = jaxlstm.native_backend()
    >>> info.available or bool(info.reason)
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ENV_ISA",
    "NativeBackend",
    "backward",
    "cpu_count",
    "fma_peak_gflops",
    "forced_instruction_set",
    "forward",
    "native_backend",
]

Array = jax.Array

ENV_ISA = "JAXLSTM_NATIVE_ISA"
"""The environment variable that forces a kernel variant (`avx512`, `avx2`, `portable`)."""
_ORDER = ("avx512", "avx2", "portable")  # best first
# Below this many FLOPs per step (2·B·H_out·4H) a second thread costs more than it saves.
_PARALLEL_FLOPS = 100_000
# From this batch size on, threads share the batch's rows (independent sequences: no barrier
# between steps); below it they share the hidden units, meeting after every step.
_SPLIT_ROWS_FROM = 16
_SPLIT = {"units": 0, "rows": 1}


@dataclasses.dataclass(frozen=True)
class NativeBackend:
    """What `jaxlstm.native_backend()` reports.

    Attributes:
        available: whether the compiled kernel can run here (built, loaded and registered).
        reason: why it is not available ("" when it is).
        instruction_set: the variant calls use now (`"avx512"`, `"avx2"`, `"portable"`), or
            None when unavailable.
        instruction_sets: the variants this build holds that this processor runs, best first.
    """

    available: bool
    reason: str
    instruction_set: str | None
    instruction_sets: tuple[str, ...]


@functools.cache
def _load() -> tuple[dict[str, int], str]:
    """Imports the extension and registers its FFI targets once.

    Returns:
        `({variant name: code} for the variants this processor runs, "")`, or `({}, reason)`.
    """
    try:
        from jaxlstm import _lstm_kernels  # type: ignore[attr-defined]
    except ImportError as e:
        return {}, (
            "jaxlstm was installed without its compiled kernel (no C++17 compiler, Python "
            f"headers or jaxlib FFI headers at install time): {e}. Reinstall with a compiler "
            "present (`pip install -e .`) to build it; until then jaxlstm runs on XLA."
        )
    runnable = {
        name: code
        for name, code, compiled, supported in _lstm_kernels.instruction_sets()
        if compiled and supported
    }
    if not runnable:
        return {}, "the compiled kernel has no variant this processor runs"
    try:
        for name, capsule in _lstm_kernels.registrations().items():
            jax.ffi.register_ffi_target(name, capsule, platform="cpu")
    except Exception as e:  # an incompatible jaxlib: say so, never crash
        return {}, f"jax.ffi could not register the kernel: {e}"
    return runnable, ""


_forced: list[str | None] = [None]


@contextlib.contextmanager
def forced_instruction_set(name: str | None) -> Iterator[None]:
    """Traces inside this context use the given kernel variant (None: the best one).

    Functions compiled before keep the variant they were traced with.

    Args:
        name: `"avx512"`, `"avx2"`, `"portable"` or None.

    Raises:
        ValueError: `name` is not a variant this build holds and this processor runs.
    """
    if name is not None:
        _check_instruction_set(name, "forced_instruction_set(name)")
    before, _forced[0] = _forced[0], name
    try:
        yield
    finally:
        _forced[0] = before


def _check_instruction_set(name: str, what: str) -> None:
    runnable, reason = _load()
    if reason:
        raise ValueError(f"{what}: the native kernel is unavailable: {reason}")
    if name not in runnable:
        raise ValueError(
            f"{what} must be one of {', '.join(map(repr, runnable))} on this machine, got {name!r}"
        )


def _instruction_set() -> str | None:
    runnable, _ = _load()
    if _forced[0] is not None:
        return _forced[0]
    env = os.environ.get(ENV_ISA)
    if env:
        _check_instruction_set(env, f"the environment variable {ENV_ISA}")
        return env
    return next((name for name in _ORDER if name in runnable), None)


def _variant_code() -> int:
    """The code of the variant calls use now.

    Raises:
        RuntimeError: the native kernel is unavailable (the message says why).
    """
    runnable, reason = _load()
    name = _instruction_set()
    if reason or name is None:
        raise RuntimeError(f"the native kernel is unavailable: {reason}")
    return runnable[name]


def native_backend() -> NativeBackend:
    """Whether jaxlstm's native CPU kernel is available here, and which variant runs.

    `ScanOptions(backend=None)` (the default) uses it on the CPU where it is available.

    Returns:
        A `NativeBackend`; its `reason` says why the kernel is unavailable.

    Raises:
        ValueError: `JAXLSTM_NATIVE_ISA` names a variant this machine cannot run.
    """
    runnable, reason = _load()
    ordered = tuple(name for name in _ORDER if name in runnable)
    return NativeBackend(not reason, reason, _instruction_set() if not reason else None, ordered)


def cpu_count() -> int:
    """The cores this process may run on (its affinity), which the kernel shares work among."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def fma_peak_gflops(threads: int | None = None, *, seconds: float = 0.2) -> float:
    """The processor's measured multiply-add peak, in GFLOP/s, with the kernel's variant.

    Each thread runs independent chains of vector FMAs (the instruction the kernel's
    matmuls are made of) for about `seconds`, all threads at once; the rate is their sum.
    `python -m experiments.benchmark` states the kernel's speed as a share of it.

    Args:
        threads: how many threads at once; None for `cpu_count()`.
        seconds: how long each runs.

    Returns:
        GFLOP/s (single precision, two FLOPs per multiply-add).

    Raises:
        RuntimeError: the native kernel is unavailable (the message says why).
        ValueError: `threads` is below 1.
    """
    code = _variant_code()
    threads = cpu_count() if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    from jaxlstm import _lstm_kernels  # type: ignore[attr-defined]

    return _lstm_kernels.fma_peak(code, threads, float(seconds)) / 1e9


def _call_attributes(batch: int, hidden: int, out_size: int) -> dict[str, np.int64]:
    code = _variant_code()
    flops = 2 * batch * out_size * 4 * hidden
    workers = 1 if flops < _PARALLEL_FLOPS else cpu_count()
    split = _SPLIT["rows" if batch >= _SPLIT_ROWS_FROM else "units"]
    return {
        "isa": np.int64(code),
        "max_workers": np.int64(workers),
        "split": np.int64(split),
    }


def _optional(array: Array | None, shape: tuple[int, ...], dtype) -> Array:
    """An optional operand: the array, or an empty one that tells the kernel it is absent."""
    return jnp.zeros(shape, dtype) if array is None else array


def forward(
    xproj: Array,
    bias: Array | None,
    w_hh: Array,
    w_hr: Array | None,
    h0: Array,
    c0: Array,
    mask: Array | None,
    *,
    keep: bool,
) -> tuple[Array, ...]:
    """The forward recurrence of one layer and direction (float32).

    Args:
        xproj: `[T, B, 4H]` `x_t @ W_ih^T` for every step, in scan order.
        bias: `[4H]` `b_ih + b_hh`, or None (added in the kernel, after the two products).
        w_hh: `[4H, H_out]` torch's `weight_hh`.
        w_hr: `[P, H]` torch's `weight_hr`, or None.
        h0: `[B, H_out]` the initial hidden state.
        c0: `[B, H]` the initial cell state.
        mask: `[T, B]` bool, True at valid steps, or None.
        keep: also return what the backward pass needs.

    Returns:
        `(hs, c_n)`, with `keep` `(hs, c_n, cs, gates, tanh_c)`: `hs` `[T, B, H_out]` (a
        masked step repeats the carry), `c_n` `[B, H]`, `cs` `[T, B, H]`, `gates`
        `[T, B, 4H]` activated (blocks i, f, g, o), `tanh_c` `[T, B, H]`.
    """
    steps, batch, four_h = xproj.shape
    hidden, out_size = four_h // 4, w_hh.shape[1]
    f32 = jnp.float32
    shapes = [((steps, batch, out_size), f32), ((batch, hidden), f32)]
    if keep:
        shapes += [((steps, batch, hidden), f32), ((steps, batch, four_h), f32)]
        shapes += [((steps, batch, hidden), f32)]
    call = jax.ffi.ffi_call(
        "jaxlstm_forward_train" if keep else "jaxlstm_forward_infer",
        [jax.ShapeDtypeStruct(s, d) for s, d in shapes],
        vmap_method="sequential",
    )
    operands = (
        xproj,
        _optional(bias, (0,), f32),
        w_hh,
        _optional(w_hr, (0, hidden), f32),
        h0,
        c0,
        _optional(mask, (0, 0), jnp.bool_),
    )
    return tuple(call(*operands, **_call_attributes(batch, hidden, out_size)))


def backward(
    w_hh: Array,
    w_hr: Array | None,
    gates: Array,
    tanh_c: Array,
    cs: Array,
    c0: Array,
    mask: Array | None,
    d_hs: Array,
    d_c_n: Array,
) -> tuple[Array, Array, Array, Array | None]:
    """The backward recurrence of one layer and direction (float32).

    Args:
        w_hh: `[4H, H_out]`, as given to `forward`.
        w_hr: `[P, H]` or None, as given to `forward`.
        gates: `[T, B, 4H]`, what `forward(..., keep=True)` returned.
        tanh_c: `[T, B, H]`, likewise.
        cs: `[T, B, H]`, likewise.
        c0: `[B, H]`, as given to `forward`.
        mask: `[T, B]` or None, as given to `forward`.
        d_hs: `[T, B, H_out]` cotangent of `hs`.
        d_c_n: `[B, H]` cotangent of `c_n`.

    Returns:
        `(d_gates, dh0, dc0, dh_emit)`: `d_gates` `[T, B, 4H]` cotangent of the gate
        pre-activations (0 at masked steps), `dh0` `[B, H_out]`, `dc0` `[B, H]`, and with a
        projection `dh_emit` `[T, B, P]`, each step's whole cotangent of h (0 at masked
        steps; the projection's gradient is `Σ h_raw^T dh_emit`), else None.
    """
    steps, batch, four_h = gates.shape
    hidden, out_size = four_h // 4, w_hh.shape[1]
    f32 = jnp.float32
    emit_shape = (steps, batch, out_size) if w_hr is not None else (0,)
    shapes = [(steps, batch, four_h), (batch, out_size), (batch, hidden), emit_shape]
    call = jax.ffi.ffi_call(
        "jaxlstm_backward",
        [jax.ShapeDtypeStruct(s, f32) for s in shapes],
        vmap_method="sequential",
    )
    d_gates, dh0, dc0, dh_emit = call(
        w_hh,
        _optional(w_hr, (0, hidden), f32),
        gates,
        tanh_c,
        cs,
        c0,
        _optional(mask, (0, 0), jnp.bool_),
        d_hs,
        d_c_n,
        **_call_attributes(batch, hidden, out_size),
    )
    return d_gates, dh0, dc0, dh_emit if w_hr is not None else None
