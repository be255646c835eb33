"""Weights between torch and jaxlstm: from_torch, state_dict round trips, .pt/.safetensors, prefix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxlstm
import jaxlstm.linen as jl
from jaxlstm.torch_io import read_safetensors, write_safetensors
from tests.harness import assert_close

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


# ------------------------------------------------------------------------ jaxlstm.linen modules

LINEN_CONFIGS = {
    "uni": dict(),
    "bi_2layers": dict(num_layers=2, bidirectional=True),
    "proj_batch_first": dict(num_layers=2, proj_size=3, batch_first=True),
    "no_bias_bi_proj": dict(bias=False, bidirectional=True, proj_size=2),
}
IN, H, T, B = 3, 5, 6, 4


def _input(cfg, seed=0):
    rng = np.random.default_rng(seed)
    shape = (B, T, IN) if cfg.get("batch_first") else (T, B, IN)
    return jnp.asarray(rng.standard_normal(shape), jnp.float32)


def _hx(cfg, seed=1):
    rng = np.random.default_rng(seed)
    states = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)
    h = rng.standard_normal((states, B, cfg.get("proj_size") or H))
    c = rng.standard_normal((states, B, H))
    return jnp.asarray(h, jnp.float32), jnp.asarray(c, jnp.float32)


@pytest.mark.parametrize("name", list(LINEN_CONFIGS))
def test_linen_load_torch_state_dict_matches_torch(name):
    torch = pytest.importorskip("torch")
    cfg = LINEN_CONFIGS[name]
    torch.manual_seed(0)
    t = torch.nn.LSTM(IN, H, **cfg)
    model = jl.LSTM(H, **cfg)
    x, hx = _input(cfg), _hx(cfg)
    variables = model.init(jax.random.key(0), x)
    variables, result = jl.load_torch_state_dict(variables, t.state_dict())
    assert result == ([], [])
    out, (h_n, c_n) = model.apply(variables, x, hx)
    with torch.no_grad():
        t_out, (t_h, t_c) = t(torch.from_numpy(np.array(x)), tuple(torch.from_numpy(np.array(a)) for a in hx))
    for got, want in ((out, t_out), (h_n, t_h), (c_n, t_c)):
        assert_close(got, want.numpy(), "float32")  # atol = rtol = 1e-5
    sd = jl.torch_state_dict(variables)
    assert list(sd) == list(t.state_dict())
    assert all(v.flags.writeable for v in sd.values())  # torch.from_numpy warns on read-only arrays
    for k, v in t.state_dict().items():
        np.testing.assert_array_equal(sd[k], v.numpy())
    t2 = torch.nn.LSTM(IN, H, **cfg)
    t2.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})


def test_linen_from_torch_and_cell():
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    t = torch.nn.LSTM(IN, H, num_layers=2, batch_first=True, bidirectional=True)
    model, variables = jl.from_torch(t)
    assert model.batch_first and model.bidirectional and model.num_layers == 2
    x = _input({"batch_first": True})
    with torch.no_grad():
        want = t(torch.from_numpy(np.array(x)))[0].numpy()
    assert_close(model.apply(variables, x)[0], want, "float32")

    tc = torch.nn.LSTMCell(IN, H)
    cell, cvars = jl.from_torch(tc)
    xc = _input({})[0]
    with torch.no_grad():
        th, tcs = tc(torch.from_numpy(np.array(xc)))
    h, c = cell.apply(cvars, xc)
    assert_close(h, th.numpy(), "float32")
    assert_close(c, tcs.numpy(), "float32")
    assert list(jl.torch_state_dict(cvars)) == list(tc.state_dict())
    with pytest.raises(TypeError, match=r"torch\.nn\.LSTM"):
        jl.from_torch(torch.nn.GRU(3, 4))


def test_linen_load_from_file_with_prefix_and_bare_params(tmp_path):
    model = jl.LSTM(H, 2)
    x = _input({})
    variables = model.init(jax.random.key(0), x)
    source = jaxlstm.init_params(jax.random.key(7), jaxlstm.LSTMConfig(IN, H, 2))
    whole = {f"encoder.lstm.{k}": np.asarray(v) for k, v in source.items()}
    whole["head.weight"] = np.zeros((2, H), np.float32)
    path = tmp_path / "model.safetensors"
    write_safetensors(path, whole)
    params, result = jl.load_torch_state_dict(variables["params"], path, prefix="encoder.lstm.")
    assert result == ([], [])
    assert set(params) == set(source)
    for k in source:
        np.testing.assert_array_equal(np.asarray(params[k]), np.asarray(source[k]))
    want = jaxlstm.lstm(source, x, config=jaxlstm.LSTMConfig(IN, H, 2))
    got = model.apply({"params": params}, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_linen_load_errors_name_keys_and_strict_false_keeps_values():
    model = jl.LSTM(H, 2)
    variables = model.init(jax.random.key(0), _input({}))
    sd = {k: np.asarray(v) for k, v in variables["params"].items()}
    bad = dict(sd, weight_hh_l1=np.zeros((4 * H, H + 1), np.float32))
    with pytest.raises(ValueError, match=r"weight_hh_l1: expected \(20, 5\), got \(20, 6\)"):
        jl.load_torch_state_dict(variables, bad)
    partial = {k: v + 1 for k, v in sd.items() if k != "bias_hh_l1"}
    with pytest.raises(ValueError, match=r"missing keys.*bias_hh_l1"):
        jl.load_torch_state_dict(variables, partial)
    new, result = jl.load_torch_state_dict(variables, partial, strict=False)
    assert result.missing_keys == ["bias_hh_l1"]
    np.testing.assert_array_equal(np.asarray(new["params"]["bias_hh_l1"]), sd["bias_hh_l1"])
    np.testing.assert_array_equal(np.asarray(new["params"]["bias_ih_l1"]), sd["bias_ih_l1"] + 1)
    with pytest.raises(ValueError, match="torch names"):
        jl.load_torch_state_dict({"params": {"cell": {}}}, sd)
    with pytest.raises(TypeError, match="state_dict_or_path"):
        jl.load_torch_state_dict(variables, 3)
