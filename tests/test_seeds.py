"""The five PyTorch tutorials jaxlstm was made from (shared/seeds), ported with the same meaning.

Each test builds the tutorial's torch model, copies its weights into the jaxlstm port and checks
that the port computes the same thing, the way the tutorial uses it.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxlstm
from tests.harness import assert_close

torch = pytest.importorskip("torch")


def _linear_from_torch(linear) -> nnx.Linear:
    out = nnx.Linear(linear.in_features, linear.out_features, rngs=nnx.Rngs(0))
    out.kernel.set_value(jnp.asarray(linear.weight.detach().numpy().T))
    out.bias.set_value(jnp.asarray(linear.bias.detach().numpy()))
    return out


def test_000_lstmnet_classifier_on_last_step():
    """LstmNet: batch-first LSTM from explicit zero (h0, c0), Linear on lstm_out[:, -1, :]."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(28, 32, 2, batch_first=True)
    fc = torch.nn.Linear(32, 10)
    x = torch.randn(5, 7, 28)
    h0 = torch.zeros(2, 5, 32)
    t_logits = fc(lstm(x, (h0, h0))[0][:, -1, :])

    j_lstm, j_fc = jaxlstm.from_torch(lstm), _linear_from_torch(fc)
    zeros = jnp.zeros((2, 5, 32))
    out, _ = j_lstm(x.numpy(), (zeros, zeros))
    assert_close(j_fc(out[:, -1, :]), t_logits.detach().numpy())


def test_003_time_major_classifier_with_softmax():
    """LSTMClassifier: time-major LSTM, fc(output[-1]), softmax over classes."""
    torch.manual_seed(1)
    lstm = torch.nn.LSTM(3, 5, 2)
    fc = torch.nn.Linear(5, 2)
    x = torch.randn(10, 5, 3)
    t_probs = torch.softmax(fc(lstm(x)[0][-1]), dim=1)

    out, (h_n, _) = jaxlstm.from_torch(lstm)(x.numpy())
    probs = jax.nn.softmax(_linear_from_torch(fc)(out[-1]), axis=1)
    chex.assert_shape(out, (10, 5, 5))
    chex.assert_shape(h_n, (2, 5, 5))
    assert_close(probs, t_probs.detach().numpy())
    assert_close(probs.sum(axis=1), np.ones(5))


def test_002_three_layers_from_random_initial_state():
    """nn.LSTM(12, 10, 3, batch_first=True) from torch.rand (h0, c0) on input [2, 4, 12]."""
    module = torch.nn.LSTM(12, 10, 3, batch_first=True)
    model = jaxlstm.from_torch(module)
    x = torch.rand(2, 4, 12)
    hx = (torch.rand(3, 2, 10), torch.rand(3, 2, 10))
    t_out, (t_h, t_c) = module(x, hx)
    out, (h_n, c_n) = model(x.numpy(), (hx[0].numpy(), hx[1].numpy()))
    chex.assert_shape(out, (2, 4, 10))
    chex.assert_shape([h_n, c_n], (3, 2, 10))
    assert_close(out, t_out.detach().numpy())
    assert_close(h_n, t_h.detach().numpy())
    assert_close(c_n, t_c.detach().numpy())
    assert jnp.array_equal(out[:, -1], h_n[-1])


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_004_shapes_with_and_without_bidirectional(bidirectional):
    """out [seq_len, batch, H * D]; h_n, c_n [D * num_layers, batch, H]; last step = h_n."""
    lstm = jaxlstm.LSTM(8, 6, num_layers=3, bidirectional=bidirectional, rngs=nnx.Rngs(0))
    D = 2 if bidirectional else 1
    out, (h_n, c_n) = lstm(jnp.ones((4, 2, 8)))
    chex.assert_shape(out, (4, 2, 6 * D))
    chex.assert_shape([h_n, c_n], (3 * D, 2, 6))
    np.testing.assert_array_equal(out[-1, :, :6], h_n[-D])  # forward direction of the top layer
    if bidirectional:
        np.testing.assert_array_equal(out[0, :, 6:], h_n[-1])  # backward ends at t = 0


def test_001_sine_state_carried_and_predictions_fed_back():
    """The sine tutorial's test loop: one point at a time, (h, c) carried, output fed back."""
    torch.manual_seed(2)
    rnn = torch.nn.LSTM(1, 10, 1, batch_first=True)
    linear = torch.nn.Linear(10, 1)
    j_rnn, j_linear = jaxlstm.from_torch(rnn), _linear_from_torch(linear)

    hidden = (torch.zeros(1, 1, 10), torch.zeros(1, 1, 10))
    j_hidden = (jnp.zeros((1, 1, 10)), jnp.zeros((1, 1, 10)))
    inp = torch.tensor([[[0.5]]])
    j_inp = jnp.array([[[0.5]]])
    t_preds, j_preds = [], []
    for _ in range(20):
        out, hidden = rnn(inp, hidden)
        inp = linear(out.reshape(-1, 10)).reshape(1, 1, 1)
        t_preds.append(inp.item())
        j_out, j_hidden = j_rnn(j_inp, j_hidden)
        j_hidden = jax.lax.stop_gradient(j_hidden)  # the tutorial's .detach()
        j_inp = j_linear(j_out.reshape(-1, 10)).reshape(1, 1, 1)
        j_preds.append(float(j_inp[0, 0, 0]))
    np.testing.assert_allclose(j_preds, t_preds, atol=1e-5)


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
