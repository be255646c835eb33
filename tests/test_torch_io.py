"""jaxlstm.torch_io: torch LSTMs ported from every source (modules, TorchScript, nested checkpoints,
files), with torch's outputs, the torch module's mode, and the linen counterparts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxlstm
import jaxlstm.linen as jl
from jaxlstm import torch_io
from jaxlstm.config import LSTMCellConfig, LSTMConfig
from jaxlstm.state_dict import StateDictError, write_safetensors
from tests.harness import assert_close, expect

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Converting a tensor to a Python"),
    pytest.mark.filterwarnings("ignore:dropout option adds dropout after all but last"),
]

I, H, L, H_CELL, B, T = 3, 5, 2, 4, 2, 6
LSTM_CONFIG = LSTMConfig(I, H, L, batch_first=True, dropout=0.25)
CELL_CONFIG = LSTMCellConfig(H, H_CELL)


class Net(torch.nn.Module):
    """A small model: an LSTM, an LSTMCell on its last output, a linear head."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(I, H, L, batch_first=True, dropout=0.25)
        self.cell = torch.nn.LSTMCell(H, H_CELL)
        self.head = torch.nn.Linear(H_CELL, 2)

    def forward(self, x):
        y, _ = self.lstm(x)
        h, _ = self.cell(y[:, -1])
        return self.head(h)


def _x(seed=0):
    return torch.from_numpy(
        np.random.default_rng(seed).standard_normal((B, T, I)).astype(np.float32)
    )


def _hx(seed=1):
    rng = np.random.default_rng(seed)
    return tuple(
        torch.from_numpy(rng.standard_normal((L, B, H)).astype(np.float32)) for _ in range(2)
    )


def _assert_runs_like(model, torch_lstm):
    """out, h_n and c_n of the ported LSTM equal torch's (harness tolerances)."""
    x, hx = _x(), _hx()
    with torch.no_grad():
        want, (want_h, want_c) = torch_lstm(x, hx)
    got, (h_n, c_n) = model(x.numpy(), tuple(a.numpy() for a in hx))
    assert_close(got, want.numpy(), "float32", "out")
    assert_close(h_n, want_h.numpy(), "float32", "h_n")
    assert_close(c_n, want_c.numpy(), "float32", "c_n")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An eval-mode Net in every form it travels in: `{name: (source, LSTM prefix, module?)}`."""
    root = tmp_path_factory.mktemp("sources")
    torch.manual_seed(0)
    net = Net().eval()
    scripted = torch.jit.script(net)
    traced = torch.jit.trace(net, _x(), check_trace=False)
    for name, module in (("script", scripted), ("traced", traced)):
        for suffix in (".jit", ".pt"):
            torch.jit.save(module, root / f"{name}{suffix}")
    sd = net.state_dict()
    torch.save(
        {"checkpoint": {"state_dict": sd}, "hyper_parameters": {"lr": 0.1}}, root / "deep.ckpt"
    )
    torch.save(sd, root / "legacy.pth", _use_new_zipfile_serialization=False)
    write_safetensors(root / "net.safetensors", {k: v.numpy() for k, v in sd.items()})
    sources = {
        "nn.Module": (net, "lstm.", True),
        "nn.LSTM itself": (net.lstm, "", True),
        "jit.script": (scripted, "lstm.", True),
        "jit.trace": (traced, "lstm.", True),
        "jit.load": (torch.jit.load(root / "script.jit"), "lstm.", True),
        "jit.load traced, submodule": (torch.jit.load(root / "traced.pt").lstm, "", True),
        "scripted .jit": (root / "script.jit", "lstm.", True),
        "scripted .pt": (str(root / "script.pt"), "lstm.", True),
        "traced .jit": (root / "traced.jit", "lstm.", True),
        "traced .pt": (root / "traced.pt", "lstm.", True),
        "state_dict": (sd, "lstm.", False),
        "nested dict": ({"model_state": sd, "step": 3}, "model_state.lstm.", False),
        "nested .ckpt": (root / "deep.ckpt", "checkpoint.state_dict.lstm.", False),
        "legacy .pth": (root / "legacy.pth", "lstm.", False),
        ".safetensors": (root / "net.safetensors", "lstm.", False),
    }
    return net, sources


SOURCES = [
    "nn.Module",
    "nn.LSTM itself",
    "jit.script",
    "jit.trace",
    "jit.load",
    "jit.load traced, submodule",
    "scripted .jit",
    "scripted .pt",
    "traced .jit",
    "traced .pt",
    "state_dict",
    "nested dict",
    "nested .ckpt",
    "legacy .pth",
    ".safetensors",
]


@pytest.mark.parametrize("name", SOURCES)
def test_from_torch_every_source_runs_like_torch_in_eval_mode(saved, name):
    net, sources = saved
    source, prefix, is_module = sources[name]
    config = LSTM_CONFIG if is_module else LSTMConfig(I, H, L)  # weights cannot tell the flags
    found = jaxlstm.find_lstms(source)
    assert found[prefix] == config
    assert set(found) == ({""} if prefix == "" else {prefix, prefix[: -len("lstm.")] + "cell."})
    model = jaxlstm.from_torch(
        source, prefix=prefix, **({} if is_module else {"batch_first": True})
    )
    assert isinstance(model, jaxlstm.LSTM) and model.deterministic  # the net was in eval mode
    assert model.config.batch_first and model.config.dropout == (0.25 if is_module else 0.0)
    _assert_runs_like(model, net.lstm)
    if prefix == "":
        assert jaxlstm.from_torch(source).config == model.config  # the only LSTM: no prefix needed


@pytest.mark.parametrize("form", ["module", "scripted .pt", "traced archive, jit.load"])
def test_a_train_mode_module_ports_to_train_mode(tmp_path, form):
    torch.manual_seed(1)
    net = Net().train()
    if form == "scripted .pt":
        torch.jit.save(torch.jit.script(net), tmp_path / "m.pt")
        source = tmp_path / "m.pt"
    elif form == "traced archive, jit.load":
        torch.jit.save(torch.jit.trace(net, _x(), check_trace=False), tmp_path / "m.jit")
        source = torch.jit.load(tmp_path / "m.jit")
    else:
        source = net
    model = jaxlstm.from_torch(source, prefix="lstm.")
    assert not model.deterministic and model.dropout == 0.25
    x = _x().numpy()
    assert not np.allclose(model(x)[0], model(x)[0])  # dropout draws new masks each call
    model.eval()
    _assert_runs_like(model, net.lstm.eval())


def test_weights_alone_port_to_eval_mode_even_with_dropout():
    train_sd = {"model": Net().train().state_dict()}
    model = jaxlstm.from_torch(train_sd, prefix="model.lstm.", dropout=0.5)
    assert model.deterministic and model.dropout == 0.5
    x = _x().numpy()
    np.testing.assert_array_equal(model(x)[0], model(x)[0])
    model.train()
    assert not model.deterministic


def test_two_lstms_in_one_file(tmp_path):
    torch.manual_seed(2)
    encoder, decoder = torch.nn.LSTM(3, 5), torch.nn.LSTM(5, 7, bidirectional=True)
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state |= {f"decoder.{k}": v for k, v in decoder.state_dict().items()}
    torch.save({"model": state, "epoch": 4}, tmp_path / "seq2seq.pt")
    path = tmp_path / "seq2seq.pt"
    assert jaxlstm.find_lstms(path) == {
        "model.decoder.": LSTMConfig(5, 7, bidirectional=True),
        "model.encoder.": LSTMConfig(3, 5),
    }
    expect(
        StateDictError,
        lambda: jaxlstm.from_torch(path),
        "holds 2 LSTMs",
        "'model.decoder.': LSTMConfig(input_size=5, hidden_size=7",
        "; 'model.encoder.': LSTMConfig(input_size=3, hidden_size=5",
    )
    model = jaxlstm.from_torch(path, prefix="model.decoder.")
    assert model.config == LSTMConfig(5, 7, bidirectional=True)
    for k, v in decoder.state_dict().items():
        np.testing.assert_array_equal(np.asarray(model.params[k]), v.numpy())


def test_errors_name_what_is_wrong(saved):
    net, _ = saved
    expect(
        StateDictError,
        lambda: jaxlstm.from_torch(net),
        "holds 2 LSTMs and LSTM cells",
        "'cell.': LSTMCellConfig(input_size=5, hidden_size=4, bias=True); 'lstm.': LSTMConfig(",
    )
    expect(
        TypeError,
        lambda: jaxlstm.from_torch(net.lstm, batch_frist=True),
        "unknown keyword argument(s) 'batch_frist'",
        "batch_first, dropout, dtype, param_dtype",
    )
    expect(
        ValueError,
        lambda: jaxlstm.from_torch(net, prefix="cell.", batch_first=True),
        "batch_first apply to an nn.LSTM",
        "'cell.' are an nn.LSTMCell's",
    )
    expect(
        StateDictError,
        lambda: jaxlstm.from_torch(torch.nn.GRU(3, 4)),
        "holds no nn.LSTM",
        "'weight_ih_l0'",
    )
    expect(
        StateDictError,
        lambda: jaxlstm.from_torch(net, prefix="encoder."),
        "under prefix='encoder.'",
        "other prefixes: 'cell.'",
    )
    expect(TypeError, lambda: jaxlstm.from_torch(3), "source must be", "got int")
    expect(TypeError, lambda: jaxlstm.from_torch(net.lstm, rngs=0), "rngs must be an nnx.Rngs")
    expect(
        TypeError,
        lambda: jaxlstm.from_torch(net.lstm, param_dtype=jnp.int32),
        "param_dtype must be a floating",
    )
    expect(TypeError, lambda: jaxlstm.from_torch(net.lstm, param_dtype="nope"), "'nope'")


class _WithExtraState(torch.nn.Module):
    """A model whose state_dict holds a buffer and a non-tensor `_extra_state` entry."""

    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.LSTM(2, 3)
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    def get_extra_state(self):
        return {"vocabulary": ["a", "b"]}

    def set_extra_state(self, state):
        pass


def test_module_with_buffers_and_extra_state():
    module = _WithExtraState()
    assert "_extra_state" in module.state_dict()
    assert jaxlstm.find_lstms(module) == {"rnn.": LSTMConfig(2, 3)}
    assert jaxlstm.from_torch(module).config == LSTMConfig(2, 3)


def test_overrides_set_what_weights_cannot_tell(saved):
    net, sources = saved
    sd = sources["state_dict"][0]
    model = jaxlstm.from_torch(
        sd,
        prefix="lstm.",
        batch_first=False,
        dropout=0.1,
        dtype=jnp.bfloat16,
        param_dtype=jnp.bfloat16,
    )
    assert (model.batch_first, model.dropout, model.dtype) == (False, 0.1, jnp.bfloat16)
    assert model.params["weight_ih_l0"].dtype == jnp.bfloat16
    overridden = jaxlstm.from_torch(net.lstm, batch_first=False)  # overrides win over the module
    assert overridden.batch_first is False and overridden.dropout == 0.25


def test_lstm_cell_weights_run_a_whole_sequence_with_as_lstm(saved):
    net, sources = saved
    torch_cell = net.cell
    xs = torch.from_numpy(np.random.default_rng(3).standard_normal((T, B, H)).astype(np.float32))
    h = c = torch.zeros(B, H_CELL)
    steps = []
    with torch.no_grad():
        for x_t in xs:
            h, c = torch_cell(x_t, (h, c))
            steps.append(h)
    for source, prefix in (
        (net, "cell."),
        (sources["nested .ckpt"][0], "checkpoint.state_dict.cell."),
        (torch_cell, None),
    ):
        cell = jaxlstm.from_torch(source, prefix=prefix)
        assert isinstance(cell, jaxlstm.LSTMCell) and cell.config == CELL_CONFIG
        whole = cell.as_lstm()
        out, (h_n, c_n) = whole(xs.numpy())
        assert_close(out, torch.stack(steps).numpy(), "float32", "out")
        assert_close(h_n[0], h.numpy(), "float32", "h_n")
        assert_close(c_n[0], c.numpy(), "float32", "c_n")
        for k, v in whole.as_cell().params.items():
            np.testing.assert_array_equal(np.asarray(v), np.asarray(cell.params[k]))


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param(dict(), id="plain"),
        pytest.param(
            dict(num_layers=3, bidirectional=True, proj_size=2, bias=False), id="L3-bi-proj-nobias"
        ),
    ],
)
def test_round_trip_jax_torch_jax_is_bitwise(kwargs):
    model = jaxlstm.LSTM(4, 6, rngs=nnx.Rngs(0), **kwargs)
    sd = jaxlstm.torch_state_dict(model)
    module = torch.nn.LSTM(4, 6, **kwargs)
    assert list(sd) == list(module.state_dict())
    module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    back = jaxlstm.from_torch(module)
    for name, value in model.params.items():
        assert np.asarray(value).tobytes() == np.asarray(back.params[name]).tobytes(), name
        assert np.asarray(value).tobytes() == module.state_dict()[name].numpy().tobytes(), name
    assert back.config == model.config


def test_from_torch_copies_every_argument():
    module = torch.nn.LSTM(
        5, 7, 2, bias=False, batch_first=True, dropout=0.25, bidirectional=True, proj_size=3
    )
    model = jaxlstm.from_torch(module)
    assert model.config == LSTMConfig(5, 7, 2, False, True, 0.25, True, 3)
    assert not model.deterministic  # a new torch module is in train mode
    assert jaxlstm.from_torch(module.eval()).deterministic


def test_load_into_an_existing_module_with_prefix_and_strict(saved):
    net, sources = saved
    model = jaxlstm.LSTM(I, H, L, batch_first=True, rngs=nnx.Rngs(0))
    for name in ("nn.Module", "nested .ckpt", "scripted .jit"):
        source, prefix, _ = sources[name]
        assert jaxlstm.load_torch_state_dict(model, source, prefix=prefix) == ([], [])
        _assert_runs_like(model, net.lstm)
    extra = {"lstm." + k: v for k, v in net.lstm.state_dict().items()} | {
        "lstm.extra": torch.zeros(1)
    }
    expect(
        StateDictError,
        lambda: jaxlstm.load_torch_state_dict(model, extra, prefix="lstm."),
        "unexpected keys ['lstm.extra']",
    )
    result = jaxlstm.load_torch_state_dict(model, extra, prefix="lstm.", strict=False)
    assert result.unexpected_keys == ["lstm.extra"]


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


def test_bf16_torch_weights_load_exactly():
    module = torch.nn.LSTM(3, 4).to(torch.bfloat16)
    model = jaxlstm.from_torch(module)
    assert str(model.weight_ih_l0.get_value().dtype) == "bfloat16"
    np.testing.assert_array_equal(
        np.asarray(model.weight_ih_l0.get_value(), np.float32),
        module.weight_ih_l0.float().detach().numpy(),
    )


# ------------------------------------------------------------------------ jaxlstm.linen modules

LINEN_CONFIGS = {
    "bi_2layers": dict(num_layers=2, bidirectional=True),
    "no_bias_bi_proj_batch_first": dict(
        bias=False, bidirectional=True, proj_size=2, batch_first=True
    ),
}


def _linen_input(cfg, seed=0):
    rng = np.random.default_rng(seed)
    shape = (B, T, I) if cfg.get("batch_first") else (T, B, I)
    return jnp.asarray(rng.standard_normal(shape), jnp.float32)


def _linen_hx(cfg, seed=1):
    rng = np.random.default_rng(seed)
    states = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)
    h = rng.standard_normal((states, B, cfg.get("proj_size") or H))
    c = rng.standard_normal((states, B, H))
    return jnp.asarray(h, jnp.float32), jnp.asarray(c, jnp.float32)


@pytest.mark.parametrize("name", list(LINEN_CONFIGS))
def test_linen_load_torch_state_dict_matches_torch(name):
    cfg = LINEN_CONFIGS[name]
    torch.manual_seed(0)
    t = torch.nn.LSTM(I, H, **cfg)
    model = jl.LSTM(H, **cfg)
    x, hx = _linen_input(cfg), _linen_hx(cfg)
    variables = model.init(jax.random.key(0), x)
    variables, result = torch_io.linen_load_torch_state_dict(
        variables, {"net": t.state_dict()}, prefix="net."
    )
    assert result == ([], [])
    out, (h_n, c_n) = model.apply(variables, x, hx)
    with torch.no_grad():
        t_out, (t_h, t_c) = t(
            torch.from_numpy(np.array(x)), tuple(torch.from_numpy(np.array(a)) for a in hx)
        )
    for got, want, what in ((out, t_out, "out"), (h_n, t_h, "h_n"), (c_n, t_c, "c_n")):
        assert_close(got, want.numpy(), "float32", what)
    sd = torch_io.linen_torch_state_dict(variables)
    assert list(sd) == list(t.state_dict())
    assert all(v.flags.writeable for v in sd.values())  # torch.from_numpy warns on read-only arrays
    for k, v in t.state_dict().items():
        np.testing.assert_array_equal(sd[k], v.numpy())


def test_linen_from_torch_any_source_and_modes(saved):
    net, sources = saved
    for name in ("nn.Module", "traced .pt", "nested dict"):
        source, prefix, is_module = sources[name]
        model, variables = torch_io.linen_from_torch(source, prefix=prefix, batch_first=True)
        assert model.batch_first and model.deterministic  # eval-mode net / weights alone
        assert model.dropout == (0.25 if is_module else 0.0)
        x, hx = _x(), _hx()
        with torch.no_grad():
            want = net.lstm(x, hx)[0].numpy()
        assert_close(
            model.apply(variables, x.numpy(), tuple(a.numpy() for a in hx))[0],
            want,
            "float32",
            name,
        )
    train_model, _ = torch_io.linen_from_torch(Net().train(), prefix="lstm.")
    assert train_model.deterministic is False

    cell, cvars = torch_io.linen_from_torch(net, prefix="cell.")
    xc = np.random.default_rng(4).standard_normal((B, H)).astype(np.float32)
    with torch.no_grad():
        th, tcs = net.cell(torch.from_numpy(xc))
    h, c = cell.apply(cvars, xc)
    assert_close(h, th.numpy(), "float32", "h")
    assert_close(c, tcs.numpy(), "float32", "c")
    assert list(torch_io.linen_torch_state_dict(cvars)) == list(net.cell.state_dict())
    expect(
        StateDictError, lambda: torch_io.linen_from_torch(torch.nn.GRU(3, 4)), "holds no nn.LSTM"
    )


def test_linen_load_errors_name_keys_and_strict_false_keeps_values():
    model = jl.LSTM(H, 2)
    variables = model.init(jax.random.key(0), _linen_input({}))
    sd = {k: np.asarray(v) for k, v in variables["params"].items()}
    bad = dict(sd, weight_hh_l1=np.zeros((4 * H, H + 1), np.float32))
    expect(
        StateDictError,
        lambda: torch_io.linen_load_torch_state_dict(variables, bad),
        "weight_hh_l1: expected (20, 5), got (20, 6)",
    )
    partial = {k: v + 1 for k, v in sd.items() if k != "bias_hh_l1"}
    expect(
        StateDictError,
        lambda: torch_io.linen_load_torch_state_dict(variables, partial),
        "missing keys ['bias_hh_l1']",
    )
    new, result = torch_io.linen_load_torch_state_dict(variables, partial, strict=False)
    assert result.missing_keys == ["bias_hh_l1"]
    np.testing.assert_array_equal(np.asarray(new["params"]["bias_hh_l1"]), sd["bias_hh_l1"])
    np.testing.assert_array_equal(np.asarray(new["params"]["bias_ih_l1"]), sd["bias_ih_l1"] + 1)
    expect(
        ValueError,
        lambda: torch_io.linen_load_torch_state_dict({"params": {"cell": {}}}, sd),
        "torch names",
    )
    expect(TypeError, lambda: torch_io.linen_load_torch_state_dict(variables, 3), "source must be")
