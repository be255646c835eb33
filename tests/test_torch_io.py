"""Weights between torch and jaxlstm: from_torch, state_dict round trips, .pt/.safetensors, prefix."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

import jaxlstm
from jaxlstm.torch_io import read_safetensors, write_safetensors
from tests.conftest import assert_close

torch = pytest.importorskip("torch")


class LstmNet(torch.nn.Module):
    """The classifier of seed 000: batch-first LSTM + Linear on the last step."""

    def __init__(self, input_size=8, hidden_size=16, num_layers=2, num_classes=10):
        super().__init__()
        self.lstm = torch.nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)
        self.fc = torch.nn.Linear(hidden_size, num_classes)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out[:, -1, :])


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param(dict(), id="plain"),
        pytest.param(dict(num_layers=3, bidirectional=True, proj_size=2, bias=False), id="L3-bi-proj-nobias"),
    ],
)
def test_round_trip_jax_torch_jax_is_bitwise(kwargs):
    model = jaxlstm.LSTM(4, 6, rngs=nnx.Rngs(0), **kwargs)
    sd = jaxlstm.torch_state_dict(model)
    assert list(sd) == list(torch.nn.LSTM(4, 6, **kwargs).state_dict())
    module = torch.nn.LSTM(4, 6, **kwargs)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    back = jaxlstm.from_torch(module)
    for name, value in model.params.items():
        np.testing.assert_array_equal(np.asarray(back.params[name]), np.asarray(value), err_msg=name)
        assert np.asarray(value).tobytes() == module.state_dict()[name].numpy().tobytes()
    assert back.config == model.config


def test_from_torch_copies_every_argument():
    module = torch.nn.LSTM(5, 7, 2, bias=False, batch_first=True, dropout=0.25, bidirectional=True, proj_size=3)
    model = jaxlstm.from_torch(module)
    assert model.config == jaxlstm.LSTMConfig(5, 7, 2, False, True, 0.25, True, 3)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_load_whole_classifier_file_with_prefix(tmp_path, suffix):
    torch.manual_seed(0)
    net = LstmNet()
    path = tmp_path / f"model{suffix}"
    if suffix == ".pt":
        torch.save(net.state_dict(), path)
    else:
        safetensors_torch = pytest.importorskip("safetensors.torch")
        safetensors_torch.save_file(net.state_dict(), str(path))
    model = jaxlstm.LSTM(8, 16, 2, batch_first=True, rngs=nnx.Rngs(0))
    result = jaxlstm.load_torch_state_dict(model, path, prefix="lstm.")
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = torch.randn(3, 5, 8)
    t_out, _ = net.lstm(x)
    out, _ = model(x.numpy())
    assert_close(out, t_out.detach().numpy())


def test_load_with_extra_keys_needs_prefix_or_strict_false():
    net = LstmNet()
    model = jaxlstm.LSTM(8, 16, 2, batch_first=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="missing keys"):
        jaxlstm.load_torch_state_dict(model, net.state_dict())
    result = jaxlstm.load_torch_state_dict(model, {"lstm." + k: v for k, v in net.lstm.state_dict().items()} | {"lstm.extra": torch.zeros(1)}, prefix="lstm.", strict=False)
    assert result.unexpected_keys == ["lstm.extra"]
    np.testing.assert_array_equal(model.weight_ih_l1.get_value(), net.lstm.weight_ih_l1.detach().numpy())


def test_numpy_dict_and_lstmcell_loading():
    cell = torch.nn.LSTMCell(3, 4)
    model = jaxlstm.LSTMCell(3, 4, rngs=nnx.Rngs(0))
    jaxlstm.load_torch_state_dict(model, {k: v.numpy() for k, v in cell.state_dict().items()})
    for k, v in cell.state_dict().items():
        np.testing.assert_array_equal(model.params[k], v.numpy())
    sd = jaxlstm.torch_state_dict(model)
    cell2 = torch.nn.LSTMCell(3, 4)
    cell2.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    x = torch.randn(2, 3)
    assert torch.equal(cell(x)[0], cell2(x)[0])


def test_safetensors_writer_is_read_by_the_safetensors_package(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    tensors = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(5, np.float64)}
    write_safetensors(tmp_path / "x.safetensors", tensors)
    loaded = safetensors_numpy.load_file(str(tmp_path / "x.safetensors"))
    mine = read_safetensors(tmp_path / "x.safetensors")
    for k, v in tensors.items():
        np.testing.assert_array_equal(loaded[k], v)
        np.testing.assert_array_equal(mine[k], v)
        assert mine[k].dtype == v.dtype


def test_bf16_torch_weights_load_exactly():
    module = torch.nn.LSTM(3, 4).to(torch.bfloat16)
    model = jaxlstm.from_torch(module)
    assert str(model.weight_ih_l0.get_value().dtype) == "bfloat16"
    np.testing.assert_array_equal(
        np.asarray(model.weight_ih_l0.get_value(), np.float32), module.weight_ih_l0.float().detach().numpy()
    )
