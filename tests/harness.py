"""The one test harness: problems, the plain reference, jax and torch runners, tolerances.

* `make_problem` draws a configuration's weights (torch's init, optionally scaled), inputs,
  initial states and the cotangents of a loss on every output.
* `run_jax` and `run_torch` run a problem through `jaxlstm.lstm` and `torch.nn.LSTM` and
  return the outputs and the gradients of that loss with respect to every parameter (by
  torch name), the input and the initial states, under the same keys.
* `reference_lstm` is `jaxlstm.lstm` written as plain loops over `lstm_cell`: the reference
  that every fast path is compared with where torch is not needed.
* `TOLERANCES` holds the one set of tolerances (absolute and relative, per dtype);
  `assert_close` applies it, and `expect` checks an error's type and message.

Variable lengths go through torch's `pack_padded_sequence(..., enforce_sorted=False)` /
`pad_packed_sequence`; an unbatched sequence with a length `n` is run by torch on its first `n`
steps and padded with zeros.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlstm
from jaxlstm import LSTMConfig, lstm_cell
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


# Written-out tolerances for comparisons with torch or the reference (absolute and relative).
TOLERANCES = {
    "float32": {"atol": 1e-5, "rtol": 1e-5},
    "float64": {"atol": 1e-10, "rtol": 1e-10},
}


@contextlib.contextmanager
def precision(dtype: str):
    """Runs the body with jax's 64-bit mode on for float64, off for float32."""
    with jax.enable_x64(dtype == "float64"):
        yield


def assert_close(actual, expected, dtype: str = "float32", what: str = "") -> None:
    """`chex.assert_trees_all_close` with the tolerances of `dtype`, compared in float64."""
    as64 = lambda t: jax.tree.map(lambda a: np.asarray(a, dtype=np.float64), t)  # noqa: E731
    chex.assert_trees_all_close(as64(actual), as64(expected), custom_message=what, **TOLERANCES[dtype])


def expect(exc: type[Exception], fn, *fragments: str) -> None:
    """Asserts `fn()` raises `exc` with every fragment in its message."""
    with pytest.raises(exc) as info:
        fn()
    message = str(info.value)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"message {message!r} lacks {missing}"


def random_params(config, seed: int = 0, scale: float = 1.0, dtype: str = "float32") -> dict[str, np.ndarray]:
    """`{torch name: array}` drawn like torch's init, U(-1/√H, 1/√H) times `scale`, with numpy."""
    rng = np.random.default_rng(seed)
    bound = scale / np.sqrt(config.hidden_size)
    return {k: rng.uniform(-bound, bound, s).astype(dtype) for k, s in config.param_shapes().items()}


def random_lstm(config, seed: int = 0):
    """A `jaxlstm.LSTM` (or `LSTMCell`) of `config` holding `random_params(config, seed)`."""
    return jaxlstm.nnx.from_params(random_params(config, seed), config)


@dataclasses.dataclass
class Problem:
    """One call: configuration, weights, inputs and the loss's cotangents (numpy, one dtype).

    Attributes:
        config: the LSTM's structure.
        params: `{torch name: array}`.
        x: `[T, B, I]` (`[B, T, I]` with batch_first) or unbatched `[T, I]`.
        hx: `(h_0, c_0)` or None.
        seq_lengths: `[B]` ints (unbatched: a scalar) or None.
        g_out, g_h, g_c: cotangents shaped like `out`, `h_n`, `c_n`.
    """

    config: LSTMConfig
    params: dict[str, np.ndarray]
    x: np.ndarray
    hx: tuple[np.ndarray, np.ndarray] | None
    seq_lengths: np.ndarray | None
    g_out: np.ndarray
    g_h: np.ndarray
    g_c: np.ndarray


def make_problem(
    config: LSTMConfig,
    *,
    batch: int | None,
    steps: int,
    with_hx: bool,
    seq_lengths,
    dtype: str,
    seed: int,
    param_scale: float = 1.0,
    x_scale: float = 1.0,
    hx_scale: float = 1.0,
) -> Problem:
    """Draws weights (torch's U(-1/√H, 1/√H) times `param_scale`), inputs and cotangents.

    Args:
        batch: B, or None for unbatched input.
        seq_lengths: `[B]` ints, a scalar for unbatched input, or None.
    """
    params = random_params(config, seed, param_scale, dtype)
    rng = np.random.default_rng(seed + 1)
    D, L = config.num_directions, config.num_layers
    B = () if batch is None else (batch,)
    if batch is None:
        x_shape = (steps, config.input_size)
    elif config.batch_first:
        x_shape = (batch, steps, config.input_size)
    else:
        x_shape = (steps, batch, config.input_size)
    x = (x_scale * rng.standard_normal(x_shape)).astype(dtype)
    hx = None
    if with_hx:
        hx = (
            (hx_scale * rng.standard_normal((D * L, *B, config.output_size))).astype(dtype),
            (hx_scale * rng.standard_normal((D * L, *B, config.hidden_size))).astype(dtype),
        )
    out_shape = (*x_shape[:-1], D * config.output_size)
    return Problem(
        config=config,
        params=params,
        x=x,
        hx=hx,
        seq_lengths=None if seq_lengths is None else np.asarray(seq_lengths, np.int64),
        g_out=rng.standard_normal(out_shape).astype(dtype),
        g_h=rng.standard_normal((D * L, *B, config.output_size)).astype(dtype),
        g_c=rng.standard_normal((D * L, *B, config.hidden_size)).astype(dtype),
    )


def _loss(outputs, p: Problem):
    out, (h_n, c_n) = outputs
    return (out * p.g_out).sum() + (h_n * p.g_h).sum() + (c_n * p.g_c).sum()


def run_jax(p: Problem, fn=None, *, jit: bool = True, fast_compile: bool = False) -> dict[str, np.ndarray]:
    """Outputs and gradients from `fn` (default `jaxlstm.lstm`), keyed like `run_torch`'s.

    Must be called under the precision of the problem's dtype (`conftest.precision`).

    Args:
        p: the problem; `p.seq_lengths` is passed as a concrete numpy array (so it is
            validated even under jit).
        fn: a function with `jaxlstm.lstm`'s signature.
        jit: run `value_and_grad` under `jax.jit` (else op by op).
        fast_compile: compile with XLA's backend optimisation level 0. The traced program is
            the same; only LLVM's optimisation of it is skipped, which halves the compile time
            that dominates a randomized test drawing a new shape every example.
    """
    fn = jaxlstm.lstm if fn is None else fn

    def loss(params, x, hx):
        outputs = fn(params, x, hx, config=p.config, seq_lengths=p.seq_lengths)
        return _loss(outputs, p), outputs

    params = {k: jnp.asarray(v) for k, v in p.params.items()}
    hx = None if p.hx is None else tuple(jnp.asarray(a) for a in p.hx)
    args = (params, jnp.asarray(p.x), hx)
    grad_fn = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)
    if jit:
        options = {"xla_backend_optimization_level": 0} if fast_compile else None
        grad_fn = jax.jit(grad_fn).lower(*args).compile(compiler_options=options)
    (_, (out, (h_n, c_n))), grads = grad_fn(*args)
    result = {"out": out, "h_n": h_n, "c_n": c_n, "grad x": grads[1]}
    result |= {f"grad {k}": v for k, v in grads[0].items()}
    if hx is not None:
        result |= {"grad h_0": grads[2][0], "grad c_0": grads[2][1]}
    return {k: np.asarray(v) for k, v in result.items()}


def run_torch(p: Problem) -> dict[str, np.ndarray]:
    """The same outputs and gradients from `torch.nn.LSTM`."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    cfg = p.config
    tdtype = {"float32": torch.float32, "float64": torch.float64}[str(p.x.dtype)]
    module = torch.nn.LSTM(
        cfg.input_size,
        cfg.hidden_size,
        cfg.num_layers,
        bias=cfg.bias,
        batch_first=cfg.batch_first,
        bidirectional=cfg.bidirectional,
        proj_size=cfg.proj_size,
        dtype=tdtype,
    )
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in p.params.items()})
    x = torch.from_numpy(np.array(p.x)).requires_grad_(True)
    hx = None
    if p.hx is not None:
        hx = tuple(torch.from_numpy(np.array(a)).requires_grad_(True) for a in p.hx)
    unbatched = p.x.ndim == 2
    steps = p.x.shape[1] if (cfg.batch_first and not unbatched) else p.x.shape[0]
    if p.seq_lengths is None:
        out, (h_n, c_n) = module(x, hx)
    elif unbatched:
        n = int(p.seq_lengths)
        out, (h_n, c_n) = module(x[:n], hx)
        out = torch.cat([out, out.new_zeros((steps - n, out.shape[1]))])
    else:
        packed = pack_padded_sequence(
            x, torch.from_numpy(p.seq_lengths), batch_first=cfg.batch_first, enforce_sorted=False
        )
        out, (h_n, c_n) = module(packed, hx)
        out, _ = pad_packed_sequence(out, batch_first=cfg.batch_first, total_length=steps)
    loss = (
        (out * torch.from_numpy(p.g_out)).sum()
        + (h_n * torch.from_numpy(p.g_h)).sum()
        + (c_n * torch.from_numpy(p.g_c)).sum()
    )
    loss.backward()
    result = {"out": out, "h_n": h_n, "c_n": c_n, "grad x": x.grad}
    result |= {f"grad {k}": v.grad for k, v in module.named_parameters()}
    if hx is not None:
        result |= {"grad h_0": hx[0].grad, "grad c_0": hx[1].grad}
    return {k: v.detach().numpy().copy() for k, v in result.items()}


def deviation(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max(1, max |expected|): an error relative to the scale."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    if actual.size == 0:
        return 0.0
    return float(np.max(np.abs(actual - expected)) / max(1.0, float(np.max(np.abs(expected)))))


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
        h0 = jnp.zeros((config.num_layers * num_dirs, batch, config.output_size), x.dtype)
        c0 = jnp.zeros((config.num_layers * num_dirs, batch, config.hidden_size), x.dtype)
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
