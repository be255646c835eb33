"""lstm_cell and jaxlstm.LSTMCell against torch.nn.LSTMCell, one step and stepped by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxlstm
from tests.harness import assert_close, precision

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("with_hx", [True, False], ids=["hx", "nohx"])
def test_cell_matches_torch_with_grads(dtype, bias, batched, with_hx):
    torch_dtype = getattr(torch, dtype)
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(10, 20, bias=bias).to(torch_dtype)
    model = jaxlstm.from_torch(cell)
    rng = np.random.default_rng(0)
    shape = (3,) if batched else ()
    x = rng.standard_normal((*shape, 10)).astype(dtype)
    hx = tuple(rng.standard_normal((*shape, 20)).astype(dtype) for _ in range(2)) if with_hx else None
    wh, wc = (rng.standard_normal((*shape, 20)).astype(dtype) for _ in range(2))

    tx = torch.tensor(x, requires_grad=True)
    thx = tuple(torch.tensor(a, requires_grad=True) for a in hx) if with_hx else None
    th, tc = cell(tx, thx)
    ((th * torch.tensor(wh)).sum() + (tc * torch.tensor(wc)).sum()).backward()

    def loss(params, x, hx):
        h, c = jaxlstm.lstm_cell(params, x, hx)
        return (h * wh).sum() + (c * wc).sum(), (h, c)

    grads, (h, c) = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(model.params, x, hx)
    assert_close(h, th.detach().numpy(), dtype, "h")
    assert_close(c, tc.detach().numpy(), dtype, "c")
    for name, p in cell.named_parameters():
        assert_close(grads[0][name], p.grad.numpy(), dtype, f"d/d {name}")
    assert_close(grads[1], tx.grad.numpy(), dtype, "d/d x")
    if with_hx:
        assert_close(grads[2][0], thx[0].grad.numpy(), dtype, "d/d h")
        assert_close(grads[2][1], thx[1].grad.numpy(), dtype, "d/d c")


def test_cell_stepped_by_hand_like_the_tutorial():
    """Seed 004: `hx, cx = rnn(input[i], (hx, cx)); output.append(hx)` over time."""
    torch.manual_seed(0)
    rnn = torch.nn.LSTMCell(10, 20)
    cell = jaxlstm.from_torch(rnn)
    inputs = torch.randn(2, 3, 10)
    hx, cx = torch.randn(3, 20), torch.randn(3, 20)
    jh, jc = jnp.asarray(hx.numpy()), jnp.asarray(cx.numpy())
    t_out, j_out = [], []
    for i in range(inputs.size()[0]):
        hx, cx = rnn(inputs[i], (hx, cx))
        t_out.append(hx)
        jh, jc = cell(inputs[i].numpy(), (jh, jc))
        j_out.append(jh)
    assert_close(jnp.stack(j_out), torch.stack(t_out).detach().numpy())
    assert_close(jc, cx.detach().numpy())


def test_cell_step_equals_one_step_lstm():
    """LSTMCell weights run through lstm() for T=1 give the cell's output."""
    cell = jaxlstm.LSTMCell(4, 5, rngs=nnx.Rngs(3))
    cfg = jaxlstm.LSTMConfig(4, 5)
    params = {k + "_l0": v for k, v in cell.params.items()}
    x = jax.random.normal(jax.random.key(1), (2, 4))
    h, c = cell(x)
    out, (h_n, c_n) = jaxlstm.lstm(params, x[None], config=cfg)
    np.testing.assert_array_equal(h, h_n[0])
    np.testing.assert_array_equal(c, c_n[0])
    np.testing.assert_array_equal(h, out[0])


def test_cell_init_is_torch_uniform():
    cell = jaxlstm.LSTMCell(30, 64, rngs=nnx.Rngs(0))
    bound = 1 / np.sqrt(64)
    for name, value in cell.params.items():
        v = np.asarray(value)
        assert v.min() >= -bound and v.max() <= bound, name
        assert v.max() - v.min() > 1.8 * bound, f"{name} does not span U(-1/sqrt(H), 1/sqrt(H))"
    assert set(cell.params) == {"weight_ih", "weight_hh", "bias_ih", "bias_hh"}


def _ulps(got, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in units of the float32 spacing at `exact`."""
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(np.asarray(got, np.float64) - exact) / spacing


def test_float32_tanh_and_gate_activations_are_within_about_an_ulp():
    from jaxlstm.cell import gate_activations, tanh

    x = np.concatenate(
        [np.linspace(-30, 30, 600_001), np.random.default_rng(0).standard_normal(200_000) * 0.5]
    ).astype(np.float32)
    exact_tanh = np.tanh(x.astype(np.float64))
    exact_sigmoid = 1 / (1 + np.exp(-x.astype(np.float64)))
    columns = np.asarray(jax.jit(gate_activations)(np.repeat(x[:, None], 4, axis=1)))  # H = 1: i, f, g, o
    for what, got, exact, worst, mean in (
        ("tanh", jax.jit(tanh)(x), exact_tanh, 1.5, 0.15),
        ("tanh of the g block", columns[:, 2], exact_tanh, 1.5, 0.15),
        ("sigmoid of the i block", columns[:, 0], exact_sigmoid, 2.5, 0.3),
        ("sigmoid of the o block", columns[:, 3], exact_sigmoid, 2.5, 0.3),
    ):
        ulps = _ulps(got, exact)
        assert ulps.max() <= worst and ulps.mean() <= mean, f"{what}: max {ulps.max():.2f}, mean {ulps.mean():.3f} ulp"
    # A nearly closed gate keeps its relative precision (1/2 tanh(x/2) + 1/2 had none left).
    closed = np.linspace(-80, -15, 1001, dtype=np.float32)
    got = np.asarray(jax.jit(gate_activations)(np.repeat(closed[:, None], 4, axis=1)))[:, 1]
    exact = 1 / (1 + np.exp(-closed.astype(np.float64)))
    assert np.max(np.abs(got - exact) / exact) < 4e-7


def test_gate_activation_derivatives_come_from_the_outputs():
    from jaxlstm.cell import gate_activations

    with precision("float64"):
        z = jax.random.normal(jax.random.key(0), (3, 8), jnp.float64) * 4  # H = 2
        jac = jax.vmap(jax.jacfwd(gate_activations))(z)
        a = gate_activations(z)
        g_block = np.repeat([0, 0, 1, 0], 2)
        want = np.where(g_block, (1 + a) * (1 - a), a * (1 - a))
        np.testing.assert_allclose(np.diagonal(jac, axis1=1, axis2=2), want, rtol=1e-12)
        assert np.count_nonzero(jac - jnp.stack([jnp.diag(w) for w in want])) == 0
        np.testing.assert_allclose(a, np.where(g_block, np.tanh(z), 1 / (1 + np.exp(-z))), rtol=1e-14)
