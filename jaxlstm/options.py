"""`ScanOptions`: how the recurrence runs over time, resolved against the backend in one place.

None of these options changes a result beyond floating-point rounding; they trade speed,
memory and compile time. `jaxlstm.lstm`, `jaxlstm.checked.lstm` and the modules' `__call__`
all take them as one `scan=` argument.
"""

from __future__ import annotations

import dataclasses

import jax

from jaxlstm._checks import require_bool

__all__ = ["BACKENDS", "ScanOptions", "resolve_scan"]

BACKENDS = ("xla", "native")


@dataclasses.dataclass(frozen=True)
class ScanOptions:
    """How `jax.lax.scan` runs a layer over time and how its gradient is computed.

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
            platform) or `"native"` (jaxlstm's compiled CPU kernel, called through
            `jax.ffi`); None picks the default (see `resolve`).

    Raises:
        TypeError: `custom_vjp`, `remat` or `fuse_directions` is not a bool (or None where
            allowed).
        ValueError: `unroll` is not a positive int or None, or `backend` is not one of
            `"xla"`, `"native"` or None.

    Example:
        >>> ScanOptions(remat=True).resolve("cpu")
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
        `fuse_directions` False on CPU, True elsewhere. On a GPU each loop iteration costs
        kernel launches that unrolling and fusing the directions amortise: measured on an
        H200, unroll 8 ran the benchmark's configs 1.5x (float32) and 1.8x (TF32) faster
        than 1 (geometric means), as fast as 4 (0.99x) and faster than 16, and one fused
        scan ran a bidirectional layer as fast as two or faster (docs/performance-gpu.md).
        XLA:CPU runs a loop body's operations one after another with no launch cost, so
        there neither removes work, while unrolling multiplies compile time (the
        measurements are in the README's Performance section).

        Args:
            backend: `"cpu"`, `"gpu"`, `"tpu"`, ...; None for `jax.default_backend()`.

        Returns:
            A `ScanOptions` with no None left.
        """
        backend = jax.default_backend() if backend is None else backend
        unroll = self.unroll if self.unroll is not None else (8 if backend == "gpu" else 1)
        fuse = self.fuse_directions if self.fuse_directions is not None else backend != "cpu"
        # The native kernel is not built yet: every recurrence runs on XLA for now.
        backend_ = self.backend if self.backend is not None else "xla"
        return dataclasses.replace(self, unroll=unroll, fuse_directions=fuse, backend=backend_)


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
