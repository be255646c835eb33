"""The implementations a cell can time, each a builder
`(cfg, precision, mode) -> (run, compile_s, sync)`: the working tree's jaxlstm (at the
library's backend dispatch or `--backend`, and `jaxlstm-xla` on XLA), a `--baseline`
revision's jaxlstm, torch `nn.LSTM` (default threads and one thread), flax `RNN` and
`jax.experimental.rnn` (cuDNN)."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import jaxlstm
from experiments.benchmark.configs import XLA_IMPL, BenchConfig
from experiments.benchmark.environment import import_torch, torch_default_threads
from experiments.benchmark.timing import CompiledCall, jax_sync
from jaxlstm import LSTMConfig, init_params, lstm

__all__ = [
    "Built",
    "build_baseline",
    "build_cudnn",
    "build_flax",
    "build_jaxlstm",
    "build_torch",
    "jax_runner",
    "make_builders",
    "unsupported",
]


# What a builder returns: `(run, compile_s, sync)`: a no-argument call running one timed call,
# the compile seconds (None: nothing compiled ahead, e.g. torch), and the wait for a result.
Built = tuple[Callable[[], Any], float | None, Callable[[Any], Any]]


def jax_dtype(precision: str) -> Any:
    """The parameters' and inputs' dtype at `precision` (`bf16`: bfloat16, else float32)."""
    return jnp.bfloat16 if precision == "bf16" else jnp.float32


def _loss(out: jax.Array) -> jax.Array:
    return jnp.sum(out.astype(jnp.float32))


def jax_runner(
    apply: Callable[[Any, jax.Array], jax.Array], params: Any, x: jax.Array, mode: str
) -> tuple[CompiledCall, float]:
    """Compiles `apply(params, x) -> out` (fwd) or its gradient w.r.t. (params, x) (fwd+bwd).

    Returns:
        `(run, compile_s)`: a no-argument callable running the compiled executable, and the
        seconds `lower(...).compile()` took (tracing + XLA compilation, no execution).
    """
    if mode == "fwd":
        fn = jax.jit(apply)
    else:
        fn = jax.jit(jax.grad(lambda p, x: _loss(apply(p, x)), argnums=(0, 1)))
    t0 = time.perf_counter()
    compiled = fn.lower(params, x).compile()
    compile_s = time.perf_counter() - t0
    return CompiledCall(compiled, (params, x)), compile_s


def _input(cfg: BenchConfig, dtype: Any) -> jax.Array:
    """The time-major input `[T, B, I]`."""
    return jax.random.normal(jax.random.key(1), (cfg.steps, cfg.batch, cfg.input_size), dtype)


def build_jaxlstm(
    cfg: BenchConfig, precision: str, mode: str, scan: jaxlstm.ScanOptions | None = None
) -> Built:
    """The working tree's `jaxlstm.lstm`, run with `scan` (None: the backend's defaults)."""
    config = LSTMConfig(
        cfg.input_size,
        cfg.hidden,
        num_layers=cfg.layers,
        bidirectional=cfg.bidirectional,
        proj_size=cfg.proj_size,
    )
    dtype = jax_dtype(precision)
    params = init_params(jax.random.key(0), config, dtype)

    def apply(p, x):
        return lstm(p, x, config=config, scan=scan)[0]

    return (*jax_runner(apply, params, _input(cfg, dtype), mode), jax_sync)


def build_baseline(cfg: BenchConfig, precision: str, mode: str, module: Any) -> Built:
    """`module.lstm` of a `--baseline` revision, through the API every revision has
    (`LSTMConfig`, `init_params(key, config, dtype)`, `lstm(params, x, config=...)`), with that
    revision's default options (`proj_size` passed only when the config has one)."""
    projection = {"proj_size": cfg.proj_size} if cfg.proj_size else {}
    config = module.LSTMConfig(
        cfg.input_size,
        cfg.hidden,
        num_layers=cfg.layers,
        bidirectional=cfg.bidirectional,
        **projection,
    )
    dtype = jax_dtype(precision)
    params = module.init_params(jax.random.key(0), config, dtype)

    def apply(p, x):
        return module.lstm(p, x, config=config)[0]

    return (*jax_runner(apply, params, _input(cfg, dtype), mode), jax_sync)


def build_flax(cfg: BenchConfig, precision: str, mode: str) -> Built:
    """flax `nnx.RNN(OptimizedLSTMCell)` per layer (and `nnx.Bidirectional`), time-major."""
    from flax import nnx

    dtype = jax_dtype(precision)
    rngs = nnx.Rngs(0)
    layers = []
    for k in range(cfg.layers):
        in_k = cfg.input_size if k == 0 else cfg.directions * cfg.hidden

        def rnn(reverse: bool, in_k: int = in_k):
            cell = nnx.OptimizedLSTMCell(
                in_k, cfg.hidden, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
            )
            return nnx.RNN(cell, time_major=True, reverse=reverse, keep_order=True)

        if cfg.bidirectional:
            layers.append(nnx.Bidirectional(rnn(False), rnn(True), time_major=True))
        else:
            layers.append(rnn(False))
    model = nnx.List(layers)
    # Differentiate w.r.t. the parameters only (the module also holds RNG state).
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    # Zero initial carries given explicitly: flax would otherwise draw them from the module's
    # RNG stream, which cannot be mutated inside jit. Flax's carry is (c, h).
    zeros = jnp.zeros((cfg.batch, cfg.hidden), dtype)
    carry = (zeros, zeros)

    def apply(params, x):
        for layer in nnx.merge(graphdef, params, rest):
            x = layer(x, initial_carry=(carry, carry) if cfg.bidirectional else carry)
        return x

    return (*jax_runner(apply, params, _input(cfg, dtype), mode), jax_sync)


def build_cudnn(cfg: BenchConfig, precision: str, mode: str) -> Built:
    """`jax.experimental.rnn.lstm` (cuDNN); batch-first, weights as one flat vector."""
    from jax.experimental import rnn

    if precision == "bf16":
        raise NotImplementedError("jax.experimental.rnn.lstm has no bfloat16 support")
    # Its only precision knob: HIGHEST disables TF32 in cuDNN, HIGH allows it.
    lax_precision = "highest" if precision == "fp32" else "high"
    weights = rnn.init_lstm_weight(
        jax.random.key(0), cfg.input_size, cfg.hidden, cfg.layers, cfg.bidirectional
    )
    x = jax.random.normal(jax.random.key(1), (cfg.batch, cfg.steps, cfg.input_size), jnp.float32)
    state_shape = (cfg.directions * cfg.layers, cfg.batch, cfg.hidden)
    h0 = jnp.zeros(state_shape, jnp.float32)
    c0 = jnp.zeros(state_shape, jnp.float32)
    lengths = jnp.full((cfg.batch,), cfg.steps, jnp.int32)  # it accepts int32 only

    def apply(w, x):
        y, _, _ = rnn.lstm(
            x,
            h0,
            c0,
            w,
            lengths,
            input_size=cfg.input_size,
            hidden_size=cfg.hidden,
            num_layers=cfg.layers,
            dropout=0.0,
            bidirectional=cfg.bidirectional,
            precision=lax_precision,
        )
        return y

    return (*jax_runner(apply, weights, x, mode), jax_sync)


def build_torch(cfg: BenchConfig, precision: str, mode: str, threads: int | None = None) -> Built:
    """torch `nn.LSTM`; `threads` pins its CPU intra-op threads (None: torch's default)."""
    torch = import_torch()
    if torch is None:
        raise ModuleNotFoundError("torch is not installed")
    num_threads = threads or torch_default_threads()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    # Matched precision: fp32 forbids TF32 everywhere (matmul and cuDNN), tf32 allows it.
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    torch.manual_seed(0)
    model = torch.nn.LSTM(
        cfg.input_size,
        cfg.hidden,
        num_layers=cfg.layers,
        bidirectional=cfg.bidirectional,
        proj_size=cfg.proj_size,
    ).to(device=device, dtype=dtype)
    x = torch.randn(cfg.steps, cfg.batch, cfg.input_size, device=device, dtype=dtype)

    def sync(out):
        if cuda:
            torch.cuda.synchronize()
        return out

    if mode == "fwd":

        def run():
            torch.set_num_threads(num_threads)
            with torch.no_grad():
                return model(x)[0]
    else:
        x.requires_grad_(True)
        params = list(model.parameters())

        def run():
            torch.set_num_threads(num_threads)
            out = model(x)[0]
            return torch.autograd.grad(out.float().sum(), [*params, x])

    return run, None, sync


def make_builders(scan: jaxlstm.ScanOptions, baseline: Any = None) -> dict[str, Callable]:
    """`{impl: builder(cfg, precision, mode) -> (run, compile_s, sync)}` for this run.

    `jaxlstm` runs with `scan` as given (its backend None: the library's dispatch);
    `jaxlstm-xla` with the same options but `backend="xla"`.
    """
    builders: dict[str, Callable] = {
        "jaxlstm": functools.partial(build_jaxlstm, scan=scan),
        XLA_IMPL: functools.partial(build_jaxlstm, scan=dataclasses.replace(scan, backend="xla")),
        "torch": build_torch,
        "torch-1t": functools.partial(build_torch, threads=1),
        "flax": build_flax,
        "jax.experimental.rnn": build_cudnn,
    }
    if baseline is not None:
        builders[baseline.name] = functools.partial(build_baseline, module=baseline.module)
    return builders


def unsupported(impl: str, cfg: BenchConfig) -> str:
    """Why `impl` cannot build `cfg` ("" if it can): flax's and cuDNN's LSTMs have no
    projection."""
    if cfg.proj_size and impl in ("flax", "jax.experimental.rnn"):
        return f"{impl} has no proj_size"
    return ""
