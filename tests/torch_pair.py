"""Runs one configuration through `jaxlstm.lstm` and `torch.nn.LSTM` with the same weights.

Both sides compute `out`, `h_n`, `c_n` and the gradients of the same scalar loss
`sum(out * g_out) + sum(h_n * g_h) + sum(c_n * g_c)` with respect to every parameter (by
torch name), the input and, when given, `h_0`/`c_0`. Variable lengths go through torch's
`pack_padded_sequence(..., enforce_sorted=False)` / `pad_packed_sequence`; an unbatched
sequence with a length `n` is run by torch on its first `n` steps and padded with zeros.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import jaxlstm
from jaxlstm import LSTMConfig


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
    rng = np.random.default_rng(seed)
    bound = param_scale / np.sqrt(config.hidden_size)
    params = {
        name: rng.uniform(-bound, bound, shape).astype(dtype)
        for name, shape in config.param_shapes().items()
    }
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
