"""Torch checkpoints in the wild: archives around torch files, storage quirks, weight-dropped
and dynamically quantized LSTMs, and look-alikes that must be refused, all built offline here
and compared with torch's own outputs."""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import numpy as np
import pytest

import jaxlstm
from jaxlstm import convert
from jaxlstm.state_dict import StateDictError, find_lstms
from tests.harness import assert_close, expect

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning"),
]

I, H, B, T = 3, 4, 2, 5


def _x(batch_first=False, seed=0, features=I):
    shape = (B, T, features) if batch_first else (T, B, features)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _torch_lstm(seed=0, **kwargs):
    torch.manual_seed(seed)
    return torch.nn.LSTM(kwargs.pop("input_size", I), H, **kwargs).eval()


def _assert_like(model, torch_lstm, x, atol=None, what=""):
    """The port's out, h_n, c_n equal the torch LSTM's on `x` (float32 tolerances)."""
    with torch.no_grad():
        want, (want_h, want_c) = torch_lstm(torch.from_numpy(x))
    got, (h_n, c_n) = model(x)
    for name, a, b in (("out", got, want), ("h_n", h_n, want_h), ("c_n", c_n, want_c)):
        if atol is None:
            assert_close(np.asarray(a), b.numpy(), "float32", f"{what} {name}")
        else:
            np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=atol, err_msg=name)


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- 1. archives


class RecurrentPolicy(torch.nn.Module):
    """An actor-critic policy with two LSTMs, as recurrent RL libraries build them."""

    def __init__(self):
        super().__init__()
        self.lstm_actor = torch.nn.LSTM(I, H, num_layers=2)
        self.lstm_critic = torch.nn.LSTM(I, H)
        self.action_net = torch.nn.Linear(H, 2)
        self.value_net = torch.nn.Linear(H, 1)


@pytest.fixture(scope="module")
def policy_zip(tmp_path_factory):
    """A `.zip` like a recurrent RL policy's: JSON data, torch members, a version file."""
    torch.manual_seed(0)
    policy = RecurrentPolicy().eval()
    path = tmp_path_factory.mktemp("archive") / "ppo_lstm.zip"
    optimizer = torch.optim.Adam(policy.parameters())
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data", json.dumps({"gamma": 0.99, "n_steps": 8}))
        archive.writestr("policy.pth", _torch_bytes(policy.state_dict()))
        archive.writestr("policy.optimizer.pth", _torch_bytes(optimizer.state_dict()))
        archive.writestr("pytorch_variables.pth", _torch_bytes({}))
        archive.writestr("_stable_baselines3_version", "2.3.0")
        archive.writestr("system_info.txt", "OS: Linux")
    return policy, path


def test_zip_of_torch_files_lists_and_ports_both_lstms(policy_zip, capsys):
    policy, path = policy_zip
    found = find_lstms(path)
    assert list(found) == ["policy.lstm_actor.", "policy.lstm_critic."]
    assert found["policy.lstm_actor."].num_layers == 2
    for prefix, module in (
        ("policy.lstm_actor.", policy.lstm_actor),
        ("policy.lstm_critic.", policy.lstm_critic),
    ):
        _assert_like(jaxlstm.from_torch(path, prefix=prefix), module, _x(), what=prefix)
    assert convert.main(["--list", str(path)]) == 0
    assert "'policy.lstm_critic.'" in capsys.readouterr().out
    expect(StateDictError, lambda: jaxlstm.from_torch(path), "2 LSTMs", "policy.lstm_actor.")


def test_zip_without_torch_members_says_what_it_holds(tmp_path):
    path = tmp_path / "notes.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    expect(StateDictError, lambda: find_lstms(path), "holds no torch files", "readme.txt")


def _numpy1_pickle(obj) -> bytes:
    """A protocol-2 pickle with numpy 1's module path (`numpy.core`), as numpy 1 writes it."""
    return pickle.dumps(obj, protocol=2).replace(b"numpy._core", b"numpy.core")


@pytest.mark.parametrize(
    "how",
    ["protocol 2", "protocol 4", "protocol 5", "numpy 1 paths"],
)
def test_pickle_of_numpy_arrays_under_torch_names(tmp_path, how):
    module = _torch_lstm(bidirectional=True)
    arrays = {k: v.numpy() for k, v in module.state_dict().items()}
    tree = {"model": arrays, "epoch": np.int64(7), "note": "trained"}
    path = tmp_path / "weights.pkl"
    if how == "numpy 1 paths":
        raw = _numpy1_pickle(tree)
        assert b"numpy.core.multiarray" in raw
    else:
        raw = pickle.dumps(tree, protocol=int(how[-1]))
    path.write_bytes(raw)
    assert list(find_lstms(path)) == ["model."]
    _assert_like(jaxlstm.from_torch(path), module, _x())


def test_pickle_of_torch_tensors(tmp_path):
    module = _torch_lstm(num_layers=2)
    (tmp_path / "tensors.pkl").write_bytes(pickle.dumps({"lstm": dict(module.state_dict())}))
    _assert_like(jaxlstm.from_torch(tmp_path / "tensors.pkl"), module, _x())


def test_a_pickle_never_runs_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran code from the file",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"x": Evil(), "w": np.ones(3, np.float32)}))
    assert jaxlstm.read_state_dict(path).keys() == {"w"}  # `print` became an inert placeholder


def test_safetensors_under_another_suffix_with_metadata(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    module = _torch_lstm(num_layers=2)
    path = tmp_path / "model.ckpt"
    sd = {f"rnn.{k}": v.contiguous() for k, v in module.state_dict().items()}
    safetensors_torch.save_file(sd, str(path), metadata={"format": "pt", "epoch": "3"})
    assert list(find_lstms(path)) == ["rnn."]
    _assert_like(jaxlstm.from_torch(path), module, _x())


# ----------------------------------------------------------------------------- 2. storage quirks


def _flattened_state_dict(module, order_seed=0):
    """Every parameter a view into one flat storage, at shuffled offsets (as cuDNN packs)."""
    sd = module.state_dict()
    total = sum(v.numel() for v in sd.values())
    flat = torch.zeros(total)
    order = np.random.default_rng(order_seed).permutation(len(sd))
    offsets, offset = {}, 0
    names = list(sd)
    for i in order:
        offsets[names[i]] = offset
        offset += sd[names[i]].numel()
    views = {}
    for name, value in sd.items():
        start = offsets[name]
        views[name] = flat[start : start + value.numel()].view(value.shape)
        views[name].copy_(value)
    return views


@pytest.mark.parametrize("location", ["cpu", "cuda:0"])
def test_views_into_one_flattened_storage_at_any_location(tmp_path, location):
    module = _torch_lstm(num_layers=2, bidirectional=True)
    views = _flattened_state_dict(module)
    assert len({v.untyped_storage().data_ptr() for v in views.values()}) == 1
    raw = _torch_bytes(views)
    if location != "cpu":  # what a GPU run writes: the storages' location, nothing else
        member = "archive/data.pkl"
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            names = archive.namelist()
            prefix = next(n for n in names if n.endswith("data.pkl"))[: -len("data.pkl")]
            records = {n: archive.read(n) for n in names}
        member = prefix + "data.pkl"
        old = b"X\x03\x00\x00\x00cpu"
        assert old in records[member]
        records[member] = records[member].replace(old, b"X\x06\x00\x00\x00cuda:0")
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            for n, data in records.items():
                archive.writestr(n, data)
        raw = out.getvalue()
    path = tmp_path / "flat.pt"
    path.write_bytes(raw)
    back = torch.load(path, map_location="cpu", weights_only=True)
    for k, v in module.state_dict().items():
        assert torch.equal(back[k], v), k
    _assert_like(jaxlstm.from_torch(path), module, _x())


def test_float16_state_dict_ports_as_float32_unless_asked(tmp_path):
    module = _torch_lstm(num_layers=2)
    half = {k: v.half() for k, v in module.state_dict().items()}
    torch.save(half, tmp_path / "half.pt")
    model = jaxlstm.from_torch(tmp_path / "half.pt")
    assert {str(v.dtype) for v in model.params.values()} == {"float32"}
    reference = _torch_lstm(num_layers=2)
    reference.load_state_dict({k: v.float() for k, v in half.items()})
    _assert_like(model, reference, _x())
    asked = jaxlstm.from_torch(tmp_path / "half.pt", param_dtype=np.float16)
    assert {str(v.dtype) for v in asked.params.values()} == {"float16"}


# ----------------------------------------------------------------------------- 3. weight drop


class WeightDrop(torch.nn.Module):
    """AWD-LSTM's wrapper: `weight_hh_l0_raw` here, the LSTM's other weights under `module.`."""

    def __init__(self, module, names=("weight_hh_l0",), p=0.5):
        super().__init__()
        self.module, self.names, self.p = module, names, p
        for name in names:
            raw = getattr(module, name)
            del module._parameters[name]
            self.register_parameter(f"{name}_raw", torch.nn.Parameter(raw.data))

    def forward(self, x):
        for name in self.names:
            raw = getattr(self, f"{name}_raw")
            setattr(self.module, name, torch.nn.functional.dropout(raw, self.p, self.training))
        self.module.flatten_parameters = lambda: None
        return self.module(x)


class AWDModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnns = torch.nn.ModuleList(
            [WeightDrop(torch.nn.LSTM(I, H)), WeightDrop(torch.nn.LSTM(H, H))]
        )


@pytest.mark.parametrize("with_dropped_copy", [False, True], ids=["raw only", "raw and copy"])
def test_weight_dropped_lstm_ports_with_its_raw_weights(tmp_path, with_dropped_copy):
    torch.manual_seed(0)
    model = AWDModel().eval()
    sd = dict(model.state_dict())
    assert "rnns.0.weight_hh_l0_raw" in sd and "rnns.0.module.weight_hh_l0" not in sd
    if with_dropped_copy:  # a file saved after a training step also holds the dropped copy
        sd["rnns.0.module.weight_hh_l0"] = torch.zeros_like(sd["rnns.0.weight_hh_l0_raw"])
    torch.save({"model": sd}, tmp_path / "awd.pt")
    assert list(find_lstms(tmp_path / "awd.pt")) == ["model.rnns.0.module.", "model.rnns.1.module."]
    for k, rnn in enumerate(model.rnns):
        with pytest.warns(UserWarning, match=r"raw weight .*weight_hh_l0_raw.* eval time"):
            port = jaxlstm.from_torch(tmp_path / "awd.pt", prefix=f"model.rnns.{k}.module.")
        with torch.no_grad():
            x = _x(features=I if k == 0 else H)
            want, _ = rnn(torch.from_numpy(x))
        assert_close(np.asarray(port(x)[0]), want.numpy(), "float32", f"layer {k}")


# ----------------------------------------------------------------------------- 4. quantized


def _quantized(dtype, **kwargs):
    float_model = torch.nn.Sequential(_torch_lstm(**kwargs))
    quantized = torch.ao.quantization.quantize_dynamic(float_model, {torch.nn.LSTM}, dtype=dtype)
    return quantized.eval()


def _dequantized_reference(quantized, **kwargs):
    """A float nn.LSTM holding the weights torch's own dequantization gives."""
    qlstm = quantized[0]
    weights = qlstm._weight_bias()
    reference = _torch_lstm(**kwargs)
    state = {}
    for k, w in weights["weight"].items():
        state[k] = w.dequantize() if w.is_quantized else w.float()
    state |= {k: b.detach().float() for k, b in weights["bias"].items()}
    reference.load_state_dict(state)
    return reference


QUANTIZED = {
    "qint8": (torch.qint8, {}),
    "qint8 bidirectional 2 layers": (torch.qint8, dict(num_layers=2, bidirectional=True)),
    "float16": (torch.float16, dict(num_layers=2, input_size=H + 1)),
}


@pytest.mark.parametrize("form", ["state_dict file", "TorchScript", "module in memory"])
@pytest.mark.parametrize("name", list(QUANTIZED))
def test_dynamically_quantized_lstm_ports_as_a_float_model(tmp_path, name, form):
    dtype, kwargs = QUANTIZED[name]
    quantized = _quantized(dtype, **kwargs)
    source = quantized
    if form == "state_dict file":
        source = tmp_path / "q.pt"
        torch.save(quantized.state_dict(), source)
    elif form == "TorchScript":
        source = tmp_path / "q.jit"
        torch.jit.save(torch.jit.script(quantized), source)
    with pytest.warns(UserWarning, match="dequantized with their recorded scales"):
        port = jaxlstm.from_torch(source)
    x = _x(features=kwargs.get("input_size", I))
    _assert_like(port, _dequantized_reference(quantized, **kwargs), x, what="dequantized")
    # torch's quantized kernels also round activations: close, not equal
    with torch.no_grad():
        want, _ = quantized(torch.from_numpy(x))
    np.testing.assert_allclose(np.asarray(port(x)[0]), want.numpy(), atol=0.05)


def test_a_pickled_quantized_module_is_refused_naming_it(tmp_path):
    torch.save(_quantized(torch.qint8), tmp_path / "whole.pt")
    expect(
        StateDictError,
        lambda: jaxlstm.from_torch(tmp_path / "whole.pt"),
        "dynamically quantized torch.ao.nn.quantized.dynamic.modules.rnn.LSTM",
        "torch.save(model.state_dict(), path)",
    )


# ----------------------------------------------------------------------------- 7. look-alikes


def _lstm_state(cell=False):
    module = torch.nn.LSTMCell(I, H) if cell else _torch_lstm()
    return {k: v.numpy() for k, v in module.state_dict().items()}


LOOK_ALIKES = {
    "peephole weight_ip_l0": (
        {**_lstm_state(), "weight_ip_l0": np.ones(H, np.float32)},
        "weight_ip_l0",
    ),
    "peephole weight_ch cell": (
        {**_lstm_state(cell=True), "weight_ch": np.ones((4 * H, H), np.float32)},
        "weight_ch",
    ),
    "layer-normalised cell": (
        {
            **_lstm_state(cell=True),
            "g_norm.weight": np.ones(4 * H, np.float32),
            "c_norm.weight": np.ones(H, np.float32),
        },
        "g_norm.weight",
    ),
}


@pytest.mark.parametrize("name", list(LOOK_ALIKES))
def test_look_alike_state_dicts_are_refused_with_why(name):
    sd, named = LOOK_ALIKES[name]
    assert find_lstms({"cell": sd}) == {}
    expect(StateDictError, lambda: jaxlstm.from_torch({"cell": sd}), "'cell.'", named)


class LayerNormLSTMCell(torch.nn.LSTMCell):
    """A layer-normalised cell: torch's parameters plus norms, its own forward."""

    def __init__(self):
        super().__init__(I, H)
        self.g_norm = torch.nn.LayerNorm(4 * H)
        self.c_norm = torch.nn.LayerNorm(H)

    def forward(self, x, hx):
        h, c = hx
        gates = self.g_norm(x @ self.weight_ih.T + h @ self.weight_hh.T + self.bias_ih)
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(self.c_norm(c)), c


class XGateLNCell(torch.nn.Module):
    """A layer-normalised cell built from Linear layers (x2g, p2g, g_norm, c_norm)."""

    def __init__(self):
        super().__init__()
        self.x2g = torch.nn.Linear(I, 4 * H)
        self.p2g = torch.nn.Linear(H, 4 * H)
        self.g_norm = torch.nn.LayerNorm(4 * H)
        self.c_norm = torch.nn.LayerNorm(H)


class ReorderedCell(torch.nn.Module):
    """torch's names, another gate order (i, o, f, g) in its own forward."""

    def __init__(self):
        super().__init__()
        cell = torch.nn.LSTMCell(I, H)
        for name, value in cell.named_parameters():
            self.register_parameter(name, value)


class ReluLSTM(torch.nn.LSTM):
    """A subclass that changes what forward computes."""

    def forward(self, x, hx=None):
        out, state = super().forward(x, hx)
        return torch.relu(out), state


class ScaledLSTM(torch.nn.LSTM):
    """A subclass that adds a parameter (used by a forward defined elsewhere)."""

    def __init__(self):
        super().__init__(I, H)
        self.scale = torch.nn.Parameter(torch.ones(H))


class NamedLSTM(torch.nn.LSTM):
    """A subclass that only adds a method: still an nn.LSTM."""

    def describe(self) -> str:
        return f"LSTM({self.input_size}, {self.hidden_size})"


@pytest.mark.parametrize(
    "make, named",
    [
        (LayerNormLSTMCell, "LayerNormLSTMCell"),
        (ReorderedCell, "ReorderedCell"),
        (lambda: ReluLSTM(I, H), "ReluLSTM"),
        (ScaledLSTM, "adds parameters (scale)"),
    ],
    ids=[
        "LSTMCell subclass with norms",
        "torch names, other class",
        "overrides forward",
        "adds a parameter",
    ],
)
def test_look_alike_modules_are_refused_naming_their_class(make, named):
    module = make()
    assert find_lstms(module) == {}
    expect(StateDictError, lambda: jaxlstm.from_torch(module), named, "something else")


class ScriptedLookAlike(torch.nn.Module):
    """torch's LSTM parameter names on a scriptable module that computes something else."""

    def __init__(self):
        super().__init__()
        for name, value in torch.nn.LSTM(I, H).named_parameters():
            self.register_parameter(name, value)

    def forward(self, x):
        return torch.tanh(x @ self.weight_ih_l0.T + self.bias_ih_l0)


def test_scripted_look_alike_is_refused_naming_its_class(tmp_path):
    torch.jit.save(torch.jit.script(ScriptedLookAlike()), tmp_path / "look.pt")
    assert find_lstms(tmp_path / "look.pt") == {}
    expect(StateDictError, lambda: jaxlstm.from_torch(tmp_path / "look.pt"), "ScriptedLookAlike")


def test_linear_built_cells_are_not_lstms_and_plain_subclasses_are():
    assert find_lstms(XGateLNCell()) == {}
    expect(StateDictError, lambda: jaxlstm.from_torch(XGateLNCell()), "holds no nn.LSTM")
    module = NamedLSTM(I, H).eval()
    _assert_like(jaxlstm.from_torch(module), module, _x())


@pytest.mark.parametrize("dst", ["out.keras", "out.onnx", "out.zip", "out.pkl"])
def test_read_only_formats_are_refused_as_destinations_before_reading(tmp_path, dst, capsys):
    src = tmp_path / "missing.pt"  # never read: the destination is refused first
    assert convert.main([str(src), str(tmp_path / dst)]) == 2
    assert "are read, not written" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", [torch.qint8, torch.float16], ids=["qint8", "float16"])
def test_dynamically_quantized_lstm_cell(tmp_path, dtype):
    torch.manual_seed(0)
    float_model = torch.nn.Sequential(torch.nn.LSTMCell(I, H))
    quantized = torch.ao.quantization.quantize_dynamic(
        float_model, {torch.nn.LSTMCell}, dtype=dtype
    )
    torch.save(quantized.state_dict(), tmp_path / "cell.pt")
    with pytest.warns(UserWarning, match="quantized LSTM cell"):
        port = jaxlstm.from_torch(tmp_path / "cell.pt")
    unpack = torch.ops.quantized.linear_unpack_fp16 if dtype == torch.float16 else None
    unpack = unpack or torch.ops.quantized.linear_unpack
    for kind in ("ih", "hh"):
        weight, bias = unpack(getattr(quantized[0], f"_packed_weight_{kind}"))
        weight = weight.dequantize() if weight.is_quantized else weight.float()
        np.testing.assert_array_equal(np.asarray(port.params[f"weight_{kind}"]), weight.numpy())
        np.testing.assert_array_equal(
            np.asarray(port.params[f"bias_{kind}"]), bias.detach().numpy()
        )
    x = _x()[0]
    with torch.no_grad():
        want, _ = quantized(torch.from_numpy(x))
    np.testing.assert_allclose(np.asarray(port(x)[0]), want.numpy(), atol=0.05)
