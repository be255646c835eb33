"""`ScanOptions`: how the recurrence runs over time, resolved against the backend in one place.

None of these options changes a result beyond floating-point rounding; they trade speed,
memory and compile time. `jaxlstm.lstm`, `jaxlstm.checked.lstm` and the modules' `__call__`
all take them as one `scan=` argument.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import jax
import jax.numpy as jnp

from jaxlstm import native
from jaxlstm._checks import require_bool

__all__ = ["BACKENDS", "ScanOptions", "resolve_scan", "runs_native", "use_backend"]

BACKENDS = ("xla", "native")


@dataclasses.dataclass(frozen=True)
class ScanOptions:
    """How a layer's recurrence runs over time and how its gradient is computed.

    Attributes:
        unroll: time steps per loop iteration (`jax.lax.scan`'s `unroll`); None picks the
            backend's default (see `resolve`).
        custom_vjp: compute reverse-mode derivatives with the layer's hand-written backward
            pass (True), or by autodiff of the plain scan (False). The hand-written pass is
            faster and supports every derivative that starts with reverse mode (`grad` of
            `grad`, Hessian-vector products as `jvp` of `grad`, `jax.hessian`). Plain forward
            mode (`jax.jvp`, `jax.jacfwd`, `jax.linearize`) differentiates the plain scan
            whatever this says, except of a function compiled before (`jax.jvp(jax.jit(f))`),
            which needs False.
        remat: keep only the states for the backward pass, not the four activated gates, and
            recompute the gates step by step in the backward pass: per layer, direction, step
            and sequence `H + H_out` values are kept instead of `5H + H_out`, for two more
            small matmuls per reverse step (through `jax.checkpoint` with
            `custom_vjp=False`).
        fuse_directions: run both directions of a bidirectional layer in one scan (T
            sequential steps instead of 2T, both directions' work in each iteration); None
            picks the backend's default (see `resolve`).
        backend: which implementation runs the recurrence: `"xla"` (`jax.lax.scan`, every
            platform) or `"native"` (jaxlstm's compiled CPU kernel, one `jax.ffi` call per
            layer and direction; `jaxlstm.native_backend()` says whether it is built here).
            None picks the default: native on a CPU where the kernel is available, XLA
            elsewhere (see `resolve`, and `jaxlstm.use_backend` to change it for a block of
            code). The kernel runs float32 layers with the hand-written backward pass;
            float64, bfloat16, `remat=True`, `custom_vjp=False` and forward-mode autodiff
            run on XLA whatever this says (`runs_native` decides), with the same results
            up to rounding. `unroll` and `fuse_directions` concern the XLA scan only.

    Raises:
        TypeError: `custom_vjp`, `remat` or `fuse_directions` is not a bool (or None where
            allowed).
        ValueError: `unroll` is not a positive int or None, or `backend` is not one of
            `"xla"`, `"native"` or None.

    Examples:
        >>> ScanOptions(remat=True, backend="xla").resolve("cpu")
        ScanOptions(unroll=1, custom_vjp=True, remat=True, fuse_directions=False, backend='xla')
    """

    unroll: int | None = None
    custom_vjp: bool = True
    remat: bool = False
    fuse_directions: bool | None = None
    backend: str | None = None

    def __post_init__(self) -> None:
        unroll = self.unroll
        if unroll is not None and (
            isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1
        ):
            raise ValueError(f"unroll must be a positive int or None, got {unroll!r}")
        require_bool("custom_vjp", self.custom_vjp)
        require_bool("remat", self.remat)
        if self.fuse_directions is not None:
            require_bool("fuse_directions", self.fuse_directions)
        if self.backend not in (*BACKENDS, None):
            raise ValueError(
                f"backend must be one of {', '.join(map(repr, BACKENDS))} or None, "
                f"got {self.backend!r}"
            )

    def resolve(self, backend: str | None = None) -> ScanOptions:
        """These options with every None replaced by `backend`'s default.

        The defaults, the one place they are decided: `unroll` 8 on GPU, 1 elsewhere;
        `fuse_directions` False on CPU, True elsewhere; `backend` native on a CPU where the
        kernel is available (or what `use_backend` set), XLA elsewhere. On a GPU each loop
        iteration costs kernel launches that unrolling and fusing the directions amortise:
        measured on an H200, unroll 8 ran the benchmark's configs 1.5x (float32) and 1.8x
        (TF32) faster than 1 (geometric means), as fast as 4 (0.99x) and faster than 16, and
        one fused scan ran a bidirectional layer as fast as two or faster
        (docs/performance-gpu.md). XLA:CPU runs a loop body's operations one after another
        with no launch cost, so there neither removes work, while unrolling multiplies
        compile time (the
        measurements are in the README's Performance section).

        Args:
            backend: `"cpu"`, `"gpu"`, `"tpu"`, ...; None for `jax.default_backend()`.

        Returns:
            A `ScanOptions` with no None left.

        Raises:
            ValueError: `backend="native"` where the kernel cannot run (another platform,
                or not built here; the message says why).
        """
        backend = jax.default_backend() if backend is None else backend
        unroll = self.unroll if self.unroll is not None else (8 if backend == "gpu" else 1)
        fuse = self.fuse_directions if self.fuse_directions is not None else backend != "cpu"
        # The native kernel is not built yet: every recurrence runs on XLA for now.
        return dataclasses.replace(
            self, unroll=unroll, fuse_directions=fuse, backend=self._backend_for(backend)
        )

    def _backend_for(self, platform: str) -> str:
        """`backend` (or where None, what `use_backend` set), or the default: native on a
        CPU where the kernel is available, else XLA.

        Raises:
            ValueError: native asked for where the kernel cannot run (not a CPU, or not
                built here; the message says why).
        """
        available = native.native_backend()
        chosen = self.backend if self.backend is not None else _default[0]
        if chosen is None:
            return "native" if platform == "cpu" and available.available else "xla"
        if chosen == "native" and platform != "cpu":
            raise ValueError(
                f"backend='native' runs on the CPU only; the default backend is {platform!r}"
            )
        if chosen == "native" and not available.available:
            raise ValueError(f"backend='native' is unavailable: {available.reason}")
        return chosen


_default: list[str | None] = [None]


@contextlib.contextmanager
def use_backend(backend: str | None) -> Iterator[None]:
    """Inside this context, `ScanOptions(backend=None)` means `backend`.

    For running a whole program on one implementation (comparing them, or ruling the kernel
    out) without passing `scan=` everywhere. Functions compiled before keep what they were
    traced with.

    Args:
        backend: `"xla"`, `"native"`, or None for the usual default.

    Raises:
        ValueError: `backend` is not one of those.

    Examples:
        >>> with use_backend("xla"):
        ...     ScanOptions().resolve("cpu").backend
        'xla'
    """
    if backend not in (*BACKENDS, None):
        raise ValueError(
            f"backend must be one of {', '.join(map(repr, BACKENDS))} or None, got {backend!r}"
        )
    before, _default[0] = _default[0], backend
    try:
        yield
    finally:
        _default[0] = before


def runs_native(scan: ScanOptions, dtype, *, forward_mode: bool) -> bool:
    """Whether a layer's recurrence runs on the native kernel: the one place that decides.

    It does where the resolved options say `backend="native"` and the kernel supports the
    call: float32, the hand-written backward pass (`custom_vjp=True`), no `remat`, and not
    under forward-mode autodiff. Otherwise the XLA scan runs (float64 and bfloat16,
    `custom_vjp=False`, `remat=True`, `jax.jvp`), with the same results up to rounding.

    Args:
        scan: resolved options.
        dtype: the layer's compute dtype.
        forward_mode: whether the layer is traced under forward-mode autodiff.
    """
    return (
        scan.backend == "native"
        and jnp.dtype(dtype) == jnp.float32
        and scan.custom_vjp
        and not scan.remat
        and not forward_mode
    )


def resolve_scan(scan: ScanOptions | None) -> ScanOptions:
    """`scan` (None: the defaults) resolved against the current backend.

    Raises:
        TypeError: `scan` is not a `ScanOptions` or None.
    """
    if scan is None:
        scan = ScanOptions()
    if not isinstance(scan, ScanOptions):
        raise TypeError(f"scan must be a jaxlstm.ScanOptions or None, got {type(scan).__name__}")
    return scan.resolve()
