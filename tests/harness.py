"""The one test harness: problems, the plain reference, jax and torch runners, tolerances.

* `make_problem` draws a configuration's weights (torch's init, optionally scaled), inputs,
  initial states and the cotangents of a loss on every output, for an `LSTMConfig` (a
  sequence through `nn.LSTM`) or an `LSTMCellConfig` (one step of `nn.LSTMCell`).
* `run_jax` and `run_torch` run a problem through jaxlstm (`jaxlstm.lstm` or
  `jaxlstm.lstm_cell`) and torch (`torch.nn.LSTM` or `torch.nn.LSTMCell`), chosen by the
  config's type, and return the outputs and the gradients of that loss with respect to every
  parameter (by torch name), the input and the initial states, under the same keys.
* `reference_lstm` is `jaxlstm.lstm` written as plain loops over `lstm_cell`: the reference
  that every fast path is compared with where torch is not needed.
* `TOLERANCES` holds the one set of tolerances, per dtype plus a few named, documented
  entries; `assert_close` applies any of them, and `expect` checks an error's type and message.
* `check_grads_rev2` checks first- and second-order reverse-mode derivatives against finite
  differences.

The initial state of a problem is made in one place (`state_shapes`, `_draw_state`): a change
to how `hx` works is a change here, not in the tests.

Variable lengths go through torch's `pack_padded_sequence(..., enforce_sorted=False)` /
`pad_packed_sequence`; an unbatched sequence with a length `n` is run by torch on its first `n`
steps and padded with zeros.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_vjp

import jaxlstm
from jaxlstm import LSTMCellConfig, LSTMConfig, lstm_cell
from jaxlstm.config import param_names

# The repository root, and the environment for running its modules in a subprocess (this
# checkout first on the path; no XLA_FLAGS inherited unless given).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env(**extra: str) -> dict[str, str]:
    """`os.environ` with ROOT on PYTHONPATH, XLA_FLAGS removed, then `extra` set."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env


def assert_png(path: str) -> None:
    """A real image, not an empty file: a PNG of at least 300 x 300 pixels."""
    from experiments import training  # here: most users of the harness need no experiments

    image = training.pyplot().imread(str(path))
    assert image.shape[0] >= 300 and image.shape[1] >= 300, (path, image.shape)


def timed_experiment(module: str, args: list[str]) -> tuple[float, dict]:
    """`(wall seconds, metrics.json)` of `python -m module *args` (args hold `--out-dir`)."""
    out = args[args.index("--out-dir") + 1]
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.perf_counter() - t0
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(os.path.join(out, "metrics.json")) as f:
        return wall, json.load(f)


# The written-out tolerances of every comparison with torch, the reference or finite
# differences. Two kinds of entry, both applied by `assert_close`:
#   elementwise {"atol", "rtol"}: |actual - expected| <= atol + rtol * |expected|;
#   scaled {"deviation"}: max |actual - expected| <= deviation * max(1, max |expected|) per
#     array (see `deviation`), for sums of many terms, where an element's error follows the
#     size of the terms, not of the element.
TOLERANCES = {
    # One computation against another (torch, the reference loop, another path of the
    # layer): both round differently, summation orders differ.
    "float32": {"atol": 1e-5, "rtol": 1e-5},
    "float64": {"atol": 1e-10, "rtol": 1e-10},
    # The same program jitted and op by op: XLA's fusion changes the rounding only.
    "float32-jit": {"atol": 1e-6, "rtol": 1e-6},
    # Against torch, scaled: random configurations (tests/test_torch_equivalence_random.py)
    # and padding garbage, outputs and gradients. float32: fused input projection and
    # summation order differ, gradients sum ~T·B terms; 2e-5 of the scale is a few float32
    # ulps per step.
    "float32-scaled": {"deviation": 2e-5},
    "float64-scaled": {"deviation": 1e-10},
    # Outputs only (out, h_n, c_n) of a short float32 run, no gradients: a few ulps.
    "float32-outputs": {"deviation": 1e-5},
    # T = 10,000 float32 steps: rounding differences do not grow along the sequence (the
    # LSTM forgets them), but gradients sum 10,000 terms, so their float32 error is larger.
    "float32-long": {"deviation": 1e-4},
    # Extreme magnitudes (inputs x1e4, weights x100, hx up to 1e30): a gate pre-activation of
    # size ~1e4 carries a float32 rounding error ~1e-3, so values may differ by that much
    # where a gate sits near its transition; what those tests check is where values are
    # finite, and that everything agrees to this tolerance.
    "float32-extreme": {"deviation": 1e-2},
    # bfloat16 compute against float32 on the same weights: bfloat16 keeps 8 significant
    # bits (relative rounding 2^-9 ≈ 2e-3) in every matmul and in h; the cell state stays
    # float32, so the rounding does not accumulate along the sequence: outputs and states
    # differ from float32's by ~1e-3 to 3e-3 (measured, up to 2 layers × 16 steps).
    "bfloat16": {"atol": 1e-2, "rtol": 0.0},
    # Central differences with step `eps` in float64 have an error ~eps² · (third
    # derivative): `check_grads_rev2` compares directional derivatives with these.
    "float64-finite-differences": {"eps": 1e-4, "atol": 1e-6, "rtol": 1e-6},
    # A Hessian-vector product against a central difference (step 1e-5) of the gradient.
    "float64-hvp": {"atol": 1e-7, "rtol": 1e-6},
}


@contextlib.contextmanager
def precision(dtype: str):
    """Runs the body with jax's 64-bit mode on for float64, off for float32."""
    with jax.enable_x64(dtype == "float64"):
        yield


def deviation(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max(1, max |expected|): an error relative to the scale."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    if actual.size == 0:
        return 0.0
    return float(np.max(np.abs(actual - expected)) / max(1.0, float(np.max(np.abs(expected)))))


def assert_close(actual, expected, dtype: str = "float32", what: str = "") -> None:
    """Asserts two pytrees agree to the tolerance `TOLERANCES[dtype]`, compared in float64.

    Elementwise entries go through `chex.assert_trees_all_close`; scaled entries check
    `deviation` leaf by leaf.

    Args:
        actual, expected: pytrees of arrays with the same structure and shapes.
        dtype: a key of `TOLERANCES`, usually the problem's dtype.
        what: names the compared quantity in the failure message.
    """
    as64 = lambda t: jax.tree.map(lambda a: np.asarray(a, dtype=np.float64), t)  # noqa: E731
    actual, expected = as64(actual), as64(expected)
    tolerance = TOLERANCES[dtype]
    if "deviation" not in tolerance:
        atol, rtol = tolerance["atol"], tolerance["rtol"]
        chex.assert_trees_all_close(actual, expected, custom_message=what, atol=atol, rtol=rtol)
        return
    chex.assert_trees_all_equal_shapes(actual, expected, custom_message=what)
    flat = jax.tree_util.tree_flatten_with_path(actual)[0]
    for (path, a), e in zip(flat, jax.tree.leaves(expected), strict=True):
        error = deviation(a, e)
        where = f"{what}{jax.tree_util.keystr(path)}"
        assert error <= tolerance["deviation"], (
            f"{where}: deviation {error:.3g} > {tolerance['deviation']} ({dtype})"
        )


def expect(exc: type[Exception], fn, *fragments: str) -> None:
    """Asserts `fn()` raises `exc` with every fragment in its message."""
    with pytest.raises(exc) as info:
        fn()
    message = str(info.value)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"message {message!r} lacks {missing}"


def random_params(
    config, seed: int = 0, scale: float = 1.0, dtype: str = "float32"
) -> dict[str, np.ndarray]:
    """`{torch name: array}` drawn like torch's init, U(-1/√H, 1/√H) times `scale`, with numpy.

    `config` is an `LSTMConfig` or an `LSTMCellConfig`.
    """
    rng = np.random.default_rng(seed)
    bound = scale / np.sqrt(config.hidden_size)
    shapes = config.param_shapes()
    return {k: rng.uniform(-bound, bound, s).astype(dtype) for k, s in shapes.items()}


def random_lstm(config, seed: int = 0):
    """A `jaxlstm.LSTM` (or `LSTMCell`) of `config` holding `random_params(config, seed)`."""
    return jaxlstm.nnx.from_params(random_params(config, seed), config)


def is_cell(config) -> bool:
    """Whether `config` describes one step of `nn.LSTMCell` rather than an `nn.LSTM`."""
    return isinstance(config, LSTMCellConfig)


@dataclasses.dataclass
class Problem:
    """One call: configuration, weights, inputs and the loss's cotangents (numpy, one dtype).

    Attributes:
        config: the LSTM's (or the cell's) structure.
        params: `{torch name: array}`.
        x: `[T, B, I]` (`[B, T, I]` with batch_first) or unbatched `[T, I]`; for a cell
            `[B, I]` or unbatched `[I]`.
        hx: `(h_0, c_0)` or None (for a cell `(h [B, H], c [B, H])`).
        seq_lengths: `[B]` ints (unbatched: a scalar) or None; always None for a cell.
        g_out: cotangent shaped like `out`; None for a cell, which has no `out`.
        g_h, g_c: cotangents shaped like `h_n`, `c_n` (for a cell, like `h'`, `c'`).
    """

    config: LSTMConfig | LSTMCellConfig
    params: dict[str, np.ndarray]
    x: np.ndarray
    hx: tuple[np.ndarray, np.ndarray] | None
    seq_lengths: np.ndarray | None
    g_out: np.ndarray | None
    g_h: np.ndarray
    g_c: np.ndarray

    def jax_inputs(self) -> tuple[dict[str, jax.Array], jax.Array, tuple | None]:
        """`(params, x, hx)` as jax arrays, the arguments of `jaxlstm.lstm`/`lstm_cell`.

        Call it under the precision of the problem's dtype (`precision`).
        """
        params = {k: jnp.asarray(v) for k, v in self.params.items()}
        hx = None if self.hx is None else tuple(jnp.asarray(a) for a in self.hx)
        return params, jnp.asarray(self.x), hx


def state_shapes(config, batch: int | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The shapes of `(h, c)`: `([D*L, B, H_out], [D*L, B, H])` for an LSTM's `hx`/`h_n`/`c_n`
    and `([B, H], [B, H])` for a cell's; without the B axis for unbatched input."""
    batch_axis = () if batch is None else (batch,)
    if is_cell(config):
        return (*batch_axis, config.hidden_size), (*batch_axis, config.hidden_size)
    states = config.num_layers * config.num_directions
    return (states, *batch_axis, config.output_size), (states, *batch_axis, config.hidden_size)


def _draw_state(rng, config, batch, scale: float, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    h_shape, c_shape = state_shapes(config, batch)
    return (
        (scale * rng.standard_normal(h_shape)).astype(dtype),
        (scale * rng.standard_normal(c_shape)).astype(dtype),
    )


def make_problem(
    config: LSTMConfig | LSTMCellConfig,
    *,
    batch: int | None,
    steps: int | None = None,
    with_hx: bool,
    seq_lengths=None,
    dtype: str,
    seed: int,
    param_scale: float = 1.0,
    x_scale: float = 1.0,
    hx_scale: float = 1.0,
) -> Problem:
    """Draws weights (torch's U(-1/√H, 1/√H) times `param_scale`), inputs and cotangents.

    Args:
        config: an `LSTMConfig`, or an `LSTMCellConfig` for one step of a cell.
        batch: B, or None for unbatched input.
        steps: T (an LSTM's); must be None for a cell.
        with_hx: draw an initial state (standard normal times `hx_scale`), else None.
        seq_lengths: `[B]` ints, a scalar for unbatched input, or None (a cell: None).
        dtype: `"float32"` or `"float64"`, of every array.
        seed: fixes every draw.
    """
    cell = is_cell(config)
    if cell and (steps is not None or seq_lengths is not None):
        raise ValueError("a cell problem is one step: pass steps=None and seq_lengths=None")
    if not cell and steps is None:
        raise ValueError("an LSTM problem needs steps=T")
    params = random_params(config, seed, param_scale, dtype)
    rng = np.random.default_rng(seed + 1)
    if cell:
        x_shape = (config.input_size,) if batch is None else (batch, config.input_size)
    elif batch is None:
        x_shape = (steps, config.input_size)
    elif config.batch_first:
        x_shape = (batch, steps, config.input_size)
    else:
        x_shape = (steps, batch, config.input_size)
    x = (x_scale * rng.standard_normal(x_shape)).astype(dtype)
    hx = _draw_state(rng, config, batch, hx_scale, dtype) if with_hx else None
    g_out = None
    if not cell:
        out_shape = (*x_shape[:-1], config.num_directions * config.output_size)
        g_out = rng.standard_normal(out_shape).astype(dtype)
    g_h, g_c = _draw_state(rng, config, batch, 1.0, dtype)
    return Problem(
        config=config,
        params=params,
        x=x,
        hx=hx,
        seq_lengths=None if seq_lengths is None else np.asarray(seq_lengths, np.int64),
        g_out=g_out,
        g_h=g_h,
        g_c=g_c,
    )


def output_names(config) -> tuple[str, ...]:
    """The names of the outputs in `run_jax`/`run_torch` results: `("out", "h_n", "c_n")`
    for an LSTM, `("h", "c")` for a cell."""
    return ("h", "c") if is_cell(config) else ("out", "h_n", "c_n")


def _loss(outputs, p: Problem):
    """The fixed random linear functional of every output whose gradients are compared."""
    if is_cell(p.config):
        h, c = outputs
        return (h * p.g_h).sum() + (c * p.g_c).sum()
    out, (h_n, c_n) = outputs
    return (out * p.g_out).sum() + (h_n * p.g_h).sum() + (c_n * p.g_c).sum()


def _flat_outputs(outputs, config) -> tuple:
    return tuple(outputs) if is_cell(config) else (outputs[0], *outputs[1])


def run_jax(
    p: Problem,
    fn=None,
    *,
    jit: bool = True,
    fast_compile: bool = False,
    traced_lengths: bool = False,
) -> dict[str, np.ndarray]:
    """Outputs and gradients from `fn`, keyed like `run_torch`'s.

    Must be called under the precision of the problem's dtype (`precision`).

    Args:
        p: the problem.
        fn: for an LSTM problem a function with `jaxlstm.lstm`'s signature (default
            `jaxlstm.lstm`); for a cell problem one with `jaxlstm.lstm_cell`'s (default
            `jaxlstm.lstm_cell`).
        jit: run `value_and_grad` under `jax.jit` (else op by op).
        fast_compile: compile with XLA's backend optimisation level 0. The traced program is
            the same; only LLVM's optimisation of it is skipped, which halves the compile time
            that dominates a randomized test drawing a new shape every example.
        traced_lengths: pass `p.seq_lengths` as an argument of the jitted function (traced,
            as in a jitted training step) instead of as a concrete numpy array (validated
            even under jit).

    Returns:
        `{"out", "h_n", "c_n"}` (a cell: `{"h", "c"}`), `"grad x"`, `"grad <torch name>"`
        for every parameter and, with an initial state, `"grad h_0"`, `"grad c_0"`.
    """
    cell = is_cell(p.config)
    fn = (lstm_cell if cell else jaxlstm.lstm) if fn is None else fn

    def loss(params, x, hx, lengths):
        if cell:
            outputs = fn(params, x, hx)
        else:
            outputs = fn(params, x, hx, config=p.config, seq_lengths=lengths)
        return _loss(outputs, p), _flat_outputs(outputs, p.config)

    params, x, hx = p.jax_inputs()
    lengths = p.seq_lengths
    if traced_lengths and lengths is not None:
        lengths = jnp.asarray(lengths)
    else:
        loss = functools.partial(loss, lengths=lengths)
    args = (params, x, hx) + ((lengths,) if traced_lengths and lengths is not None else ())
    grad_fn = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)
    if jit:
        options = {"xla_backend_optimization_level": 0} if fast_compile else None
        grad_fn = jax.jit(grad_fn).lower(*args).compile(compiler_options=options)
    (_, outputs), grads = grad_fn(*args)
    result = dict(zip(output_names(p.config), outputs, strict=True)) | {"grad x": grads[1]}
    result |= {f"grad {k}": v for k, v in grads[0].items()}
    if hx is not None:
        result |= {"grad h_0": grads[2][0], "grad c_0": grads[2][1]}
    return {k: np.asarray(v) for k, v in result.items()}


def torch_module(config, params, dtype: str = "float32"):
    """The `torch.nn.LSTM` (or `nn.LSTMCell`) of `config` holding `params` (numpy arrays)."""
    import torch

    tdtype = {"float32": torch.float32, "float64": torch.float64}[str(np.dtype(dtype))]
    if is_cell(config):
        module = torch.nn.LSTMCell(
            config.input_size, config.hidden_size, bias=config.bias, dtype=tdtype
        )
    else:
        module = torch.nn.LSTM(
            config.input_size,
            config.hidden_size,
            config.num_layers,
            bias=config.bias,
            batch_first=config.batch_first,
            bidirectional=config.bidirectional,
            proj_size=config.proj_size,
            dtype=tdtype,
        )
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in params.items()})
    return module


def run_torch(p: Problem) -> dict[str, np.ndarray]:
    """The same outputs and gradients from `torch.nn.LSTM` (a cell: `torch.nn.LSTMCell`)."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    cfg = p.config
    module = torch_module(cfg, p.params, str(p.x.dtype))
    x = torch.from_numpy(np.array(p.x)).requires_grad_(True)
    hx = None
    if p.hx is not None:
        hx = tuple(torch.from_numpy(np.array(a)).requires_grad_(True) for a in p.hx)
    if is_cell(cfg):
        outputs = module(x, hx)
    else:
        unbatched = p.x.ndim == 2
        steps = p.x.shape[1] if (cfg.batch_first and not unbatched) else p.x.shape[0]
        if p.seq_lengths is None:
            out, (h_n, c_n) = module(x, hx)
        elif unbatched:
            n = int(p.seq_lengths)
            out, (h_n, c_n) = module(x[:n], hx)
            out = torch.cat([out, out.new_zeros((steps - n, out.shape[1]))])
        else:
            lengths = torch.from_numpy(p.seq_lengths)
            packed = pack_padded_sequence(
                x, lengths, batch_first=cfg.batch_first, enforce_sorted=False
            )
            out, (h_n, c_n) = module(packed, hx)
            out, _ = pad_packed_sequence(out, batch_first=cfg.batch_first, total_length=steps)
        outputs = (out, (h_n, c_n))
    as_torch = lambda a: None if a is None else torch.from_numpy(a)  # noqa: E731
    cotangents = dataclasses.replace(
        p, g_out=as_torch(p.g_out), g_h=as_torch(p.g_h), g_c=as_torch(p.g_c)
    )
    _loss(outputs, cotangents).backward()
    result = dict(zip(output_names(cfg), _flat_outputs(outputs, cfg), strict=True))
    result |= {"grad x": x.grad}
    result |= {f"grad {k}": v.grad for k, v in module.named_parameters()}
    if hx is not None:
        result |= {"grad h_0": hx[0].grad, "grad c_0": hx[1].grad}
    return {k: v.detach().numpy().copy() for k, v in result.items()}


def reference_lstm(params, x, hx=None, *, config: LSTMConfig, seq_lengths=None):
    """`jaxlstm.lstm` written as loops over layers, directions, batch rows and time steps.

    Args:
        params: `{torch name: array}`.
        x: `[T, B, I]` (or `[B, T, I]` with batch_first); batched only.
        hx: `(h_0 [D*L, B, H_out], c_0 [D*L, B, H])` or None.
        config: the configuration.
        seq_lengths: `[B]` ints or None.

    Returns:
        `(out, (h_n, c_n))` as `jaxlstm.lstm` returns them.
    """
    x = jnp.asarray(x)
    if config.batch_first:
        x = jnp.swapaxes(x, 0, 1)
    steps, batch = x.shape[:2]
    lengths = [steps] * batch if seq_lengths is None else [int(n) for n in seq_lengths]
    num_dirs = config.num_directions
    if hx is None:
        h_shape, c_shape = state_shapes(config, batch)
        h0, c0 = jnp.zeros(h_shape, x.dtype), jnp.zeros(c_shape, x.dtype)
    else:
        h0, c0 = hx
    layer_in = x
    h_n, c_n = [], []
    for k in range(config.num_layers):
        outs = []
        for d in range(num_dirs):
            p = {role: params[name] for role, name in param_names(config, k, d).items()}
            rows_out, rows_h, rows_c = [], [], []
            for b in range(batch):
                h, c = h0[k * num_dirs + d, b], c0[k * num_dirs + d, b]
                ys = [jnp.zeros((config.output_size,), x.dtype)] * steps
                order = range(lengths[b]) if d == 0 else reversed(range(lengths[b]))
                for t in order:
                    h, c = lstm_cell(p, layer_in[t, b], (h, c))
                    ys[t] = h
                rows_out.append(jnp.stack(ys))
                rows_h.append(h)
                rows_c.append(c)
            outs.append(jnp.stack(rows_out, axis=1))
            h_n.append(jnp.stack(rows_h))
            c_n.append(jnp.stack(rows_c))
        layer_in = jnp.concatenate(outs, axis=-1)
    out = jnp.swapaxes(layer_in, 0, 1) if config.batch_first else layer_in
    return out, (jnp.stack(h_n), jnp.stack(c_n))


def float32_errors(p: Problem) -> tuple[np.ndarray, np.ndarray]:
    """Per sequence, jaxlstm's and torch's float32 errors against a float64 reference.

    The reference is torch in float64 on exactly the problem's float32 weights and inputs, so
    the errors measure the arithmetic, not the rounding of the weights. A sequence's error is
    the RMS over all its outputs: `out` at every step, `h_n` and `c_n` of every layer and
    direction. Must be called with jax's 64-bit mode off.

    Args:
        p: a float32 problem, batched.

    Returns:
        `(jaxlstm_error, torch_error)`, each `[B]`.
    """
    as64 = lambda a: None if a is None else np.asarray(a, np.float64)  # noqa: E731
    p64 = dataclasses.replace(
        p,
        params={k: as64(v) for k, v in p.params.items()},
        x=as64(p.x),
        hx=None if p.hx is None else tuple(as64(a) for a in p.hx),
        g_out=as64(p.g_out),
        g_h=as64(p.g_h),
        g_c=as64(p.g_c),
    )
    reference, torch32, jax32 = run_torch(p64), run_torch(p), run_jax(p)
    batch_axis = 0 if p.config.batch_first else 1

    def rms(got: dict[str, np.ndarray]) -> np.ndarray:
        squares, count = 0.0, 0
        for name, axis in (("out", batch_axis), ("h_n", 1), ("c_n", 1)):
            diff = np.moveaxis(np.asarray(got[name], np.float64) - reference[name], axis, 0)
            squares = squares + (diff**2).reshape(diff.shape[0], -1).sum(axis=1)
            count += diff[0].size
        return np.sqrt(squares / count)

    return rms(jax32), rms(torch32)


# --- derivatives against finite differences ----------------------------------------------------

# XLA's backend optimisation level 0: the programs are the same, only LLVM's optimisation of
# them is skipped, which halves the compile time that dominates tiny float64 checks.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def compiled(fn, *example):
    """`fn` jitted and compiled for the arguments `example` with `FAST_COMPILE`."""
    return jax.jit(fn).lower(*example).compile(compiler_options=FAST_COMPILE)


def check_grads_rev2(f, args) -> None:
    """What `check_grads(f, args, order=2, modes=["rev"])` checks, with three compiled programs.

    The same two checks (`jax.test_util.check_vjp`) jax's order-2 reverse check makes: the
    VJP of `f` against central differences of `f`, then the VJP of
    `f_vjp(*args) = vjp(f, *args)(f(*args))` against central differences of `f_vjp`, with
    the tolerance `TOLERANCES["float64-finite-differences"]`. Here `f`, its VJP and the VJP
    of `f_vjp` are each compiled once (op by op, or jitting `f` alone and letting jax
    differentiate through it, costs several times more on CPU). Call it in float64.

    Raises:
        AssertionError: naming "VJP" or "VJP of VJP", whichever derivative is wrong.
    """
    args = tuple(args)
    f_c = compiled(f, *args)
    out = f_c(*args)
    vjp_c = compiled(lambda args, ct: jax.vjp(f, *args)[1](ct), args, out)

    def f_vjp(*args):
        return vjp_c(args, f_c(*args))

    def f_vjp_traceable(*args):
        out, vjp = jax.vjp(f, *args)
        return vjp(out)

    vjp2_c = compiled(lambda args, ct: jax.vjp(f_vjp_traceable, *args)[1](ct), args, f_vjp(*args))
    tol = TOLERANCES["float64-finite-differences"]
    tol = dict(eps=tol["eps"], atol=tol["atol"], rtol=tol["rtol"])
    check_vjp(f_c, lambda *a: (f_c(*a), lambda ct: vjp_c(a, ct)), args, err_msg="VJP", **tol)
    check_vjp(
        f_vjp, lambda *a: (f_vjp(*a), lambda ct: vjp2_c(a, ct)), args, err_msg="VJP of VJP", **tol
    )
