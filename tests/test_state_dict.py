"""jaxlstm.state_dict: every source read the same way, LSTMs found by prefix, loads that name the
key or file and change nothing on failure."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

import jaxlstm
from jaxlstm.config import LSTMCellConfig, LSTMConfig
from jaxlstm.state_dict import (
    StateDictError,
    detect_format,
    find_lstms,
    match_state_dict,
    read_checkpoint,
    read_lstm,
    read_orbax,
    read_safetensors,
    read_state_dict,
    write_safetensors,
    write_state_dict,
)
from tests.harness import ROOT, expect, random_params, subprocess_env

CFG = LSTMConfig(3, 5, num_layers=2)
CELL = LSTMCellConfig(5, 4)


def _sd(config=CFG, seed=0, prefix=""):
    return {prefix + k: v for k, v in random_params(config, seed).items()}


# --- nested checkpoints and find_lstms ----------------------------------------------------------

NESTED = {
    "flat": (lambda sd: sd, ""),
    "model_state": (lambda sd: {"model_state": sd, "step": 3, "lr": 0.1}, "model_state."),
    "state_dict": (lambda sd: {"state_dict": sd, "epoch": 7}, "state_dict."),
    "three deep": (
        lambda sd: {
            "ckpt": {"module": {"net": sd}},
            "opt": {"state": {0: {"exp_avg": np.zeros(3)}}},
        },
        "ckpt.module.net.",
    ),
    "in a list": (lambda sd: {"models": [{"note": "x"}, sd]}, "models.1."),
}


@pytest.mark.parametrize("case", NESTED.values(), ids=NESTED.keys())
def test_find_lstms_searches_nested_checkpoints(case):
    wrap, outer = case
    sd = (
        _sd(prefix="encoder.lstm.")
        | _sd(CELL, 1, "decoder.cell.")
        | {"head.weight": np.zeros((2, 4), np.float32)}
    )
    source = wrap(sd)
    found = find_lstms(source)
    assert found == {outer + "decoder.cell.": CELL, outer + "encoder.lstm.": CFG}
    assert list(found) == sorted(found)
    weights = read_lstm(source, prefix=outer + "encoder.lstm.")
    assert weights.config == CFG and list(weights.params) == list(CFG.param_shapes())
    for k, v in weights.params.items():
        np.testing.assert_array_equal(v, sd["encoder.lstm." + k])
    assert weights.training is None  # weights alone record no mode
    head = read_state_dict(source, prefix=outer + "head.")
    assert list(head) == ["weight"] and head["weight"].shape == (2, 4)


def test_several_lstms_error_lists_every_prefix_sorted_with_its_config():
    sd = _sd(prefix="b.lstm.") | _sd(LSTMConfig(3, 6), 1, "a.lstm.") | _sd(CELL, 2, "c.")
    with pytest.raises(StateDictError) as info:
        read_lstm({"model": sd})
    message = str(info.value)
    expected = [
        ("'model.a.lstm.'", "hidden_size=6"),
        ("'model.b.lstm.'", "num_layers=2"),
        ("'model.c.'", "LSTMCellConfig"),
    ]
    positions = [message.index(p) for p, _ in expected]
    assert positions == sorted(positions), message
    for prefix, config in expected:
        assert config in message[message.index(prefix) :], message
    assert "3 LSTMs and LSTM cells" in message


def test_no_lstm_error_says_what_was_found():
    source = {
        "model": {"fc.weight": np.zeros((2, 3), np.float32)},
        "optim": {"m": np.zeros(3)},
        "step": 1,
    }
    expect(
        StateDictError,
        lambda: read_lstm(source),
        "holds no nn.LSTM or nn.LSTMCell weights",
        "2 tensors",
        "'model.fc.weight'",
        "nested dicts searched: 'model', 'optim'",
    )
    bad = _sd() | {"weight_hh_l0": np.zeros((20, 4), np.float32)}
    expect(
        StateDictError,
        lambda: read_lstm(bad),
        "look like one but are not",
        "weight_hh_l0 has shape (20, 4)",
    )
    expect(
        StateDictError,
        lambda: read_lstm(_sd(prefix="x."), prefix="y."),
        "under prefix='y.'",
        "other prefixes: 'x.': LSTMConfig(input_size=3",
    )
    ints = {k: v.astype(np.int64) for k, v in _sd().items()}
    expect(StateDictError, lambda: read_lstm(ints), "weight_ih_l0 has dtype int64")


def test_gru_weights_are_not_taken_for_an_lstm():
    sd = {
        "weight_ih_l0": np.zeros((12, 3), np.float32),
        "weight_hh_l0": np.zeros((12, 4), np.float32),
    }  # GRU(3, 4)
    assert find_lstms(sd) == {}


def test_hint_does_not_depend_on_the_hash_seed_and_files_read_without_torch(tmp_path):
    """Candidates are sorted: the message never depends on PYTHONHASHSEED (set order). The same
    processes write and read a torch file and never import torch."""
    code = (
        "import sys, numpy as np\n"
        "from jaxlstm.state_dict import find_lstms, match_state_dict, write_state_dict\n"
        "w = {p + k: np.zeros(s, np.float32) for p in ('z.', 'a.', 'm.', 'q.')\n"
        "     for k, s in {'weight_ih_l0': (8, 1), 'weight_hh_l0': (8, 2)}.items()}\n"
        "write_state_dict(sys.argv[1], w, force=True)\n"
        "print(list(find_lstms(sys.argv[1])), 'torch' in sys.modules)\n"
        "try:\n    match_state_dict(w, {'weight_ih_l0': (8, 1), 'weight_hh_l0': (8, 2)})\n"
        "except ValueError as e:\n    print(e)\n"
    )
    env = {"JAX_PLATFORMS": "cpu"}
    outputs = [
        subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "w.pt")],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env=subprocess_env(PYTHONHASHSEED=seed, **env),
        ).stdout
        for seed in ("1", "2")
    ]
    assert outputs[0] == outputs[1]
    assert outputs[0].startswith("['a.', 'm.', 'q.', 'z.'] False\n"), outputs[0]
    assert "pass prefix= one of 'a.', 'm.', 'q.', 'z.'" in outputs[0], outputs[0]


# --- load_torch_state_dict (nnx) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A model's state_dict as .pt and .safetensors files, and broken variants of them."""
    torch = pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("state_dicts")
    model = jaxlstm.LSTM(3, 5, num_layers=2, rngs=nnx.Rngs(1))
    sd = jaxlstm.torch_state_dict(model)
    paths = {"pt": root / "ok.pt", "safetensors": root / "ok.safetensors"}
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, paths["pt"])
    write_safetensors(paths["safetensors"], sd)
    for kind in ("pt", "safetensors"):
        data = paths[kind].read_bytes()
        paths[f"truncated.{kind}"] = root / f"truncated.{kind}"
        paths[f"truncated.{kind}"].write_bytes(data[: len(data) // 2])
        paths[f"text.{kind}"] = root / f"text.{kind}"
        paths[f"text.{kind}"].write_text("hello, I am not a checkpoint")
    paths["empty.safetensors"] = root / "empty.safetensors"
    paths["empty.safetensors"].write_bytes(b"")
    paths["list.pt"] = root / "list.pt"
    torch.save([1, 2, 3], paths["list.pt"])
    paths["tensor.pt"] = root / "tensor.pt"
    torch.save(torch.zeros(3), paths["tensor.pt"])
    paths["pickled-module.pt"] = root / "pickled-module.pt"
    torch.save(torch.nn.Linear(2, 2), paths["pickled-module.pt"])
    paths["nested-module.pt"] = root / "nested-module.pt"
    torch.save({"model": torch.nn.LSTM(3, 5, 2), "epoch": 1}, paths["nested-module.pt"])
    paths["dir.pt"] = root / "dir.pt"
    paths["dir.pt"].mkdir()
    paths["missing.pt"] = root / "missing.pt"
    paths["bad suffix"] = root / "weights.npz"
    return sd, paths


SD_CASES = {
    "missing key": (
        lambda sd: {k: v for k, v in sd.items() if k != "bias_hh_l1"},
        {},
        "missing keys ['bias_hh_l1']",
    ),
    "unexpected key": (
        lambda sd: {**sd, "weight_hr_l0": np.zeros((2, 5))},
        {},
        "unexpected keys ['weight_hr_l0']",
    ),
    "mis-shaped key": (
        lambda sd: {**sd, "weight_hh_l0": np.zeros((20, 4))},
        {},
        "weight_hh_l0: expected (20, 5), got (20, 4)",
    ),
    "mis-shaped, not strict": (
        lambda sd: {**sd, "weight_hh_l0": np.zeros((20, 4))},
        {"strict": False},
        "expected (20, 5), got (20, 4)",
    ),
    "integer weights": (
        lambda sd: {**sd, "bias_ih_l0": np.zeros(20, np.int32)},
        {},
        "bias_ih_l0: dtype int32 is not floating point",
    ),
    "wrong prefix given": (
        lambda sd: sd,
        {"prefix": "lstm."},
        "missing keys ['lstm.weight_ih_l0'",
        "pass prefix=''",
    ),
    "no LSTM keys at all": (
        lambda sd: {"fc.weight": np.zeros(2)},
        {},
        "missing keys ['weight_ih_l0'",
        "unexpected keys ['fc.weight']",
    ),
    "prefix not given": (
        lambda sd: {f"lstm.{k}": v for k, v in sd.items()},
        {},
        "missing keys",
        "pass prefix='lstm.'",
    ),
    "other prefix given": (
        lambda sd: {f"enc.lstm.{k}": v for k, v in sd.items()},
        {"prefix": "lstm."},
        "pass prefix='enc.lstm.'",
    ),
    "nested, prefix not given": (
        lambda sd: {"model_state": {f"rnn.{k}": v for k, v in sd.items()}, "step": 3},
        {},
        "pass prefix='model_state.rnn.'",
    ),
    "two candidates": (
        lambda sd: {f"{p}.{k}": v for p in ("b", "a") for k, v in sd.items()},
        {},
        "pass prefix= one of 'a.', 'b.'",
    ),
    "prefix absent": (
        lambda sd: {f"x.{k}": v for k, v in sd.items()} | {"y.w": np.zeros(1)},
        {"prefix": "z."},
        "pass prefix='x.'",
    ),
}


def _assert_unchanged(model, before):
    for k, v in jaxlstm.torch_state_dict(model).items():
        np.testing.assert_array_equal(v, before[k], err_msg=f"{k} changed by a failed load")


@pytest.mark.parametrize("case", SD_CASES.values(), ids=SD_CASES.keys())
def test_load_state_dict_errors_leave_the_model_unchanged(case, files):
    make, kwargs, *fragments = case
    sd, _ = files
    model = jaxlstm.LSTM(3, 5, num_layers=2, rngs=nnx.Rngs(0))
    before = jaxlstm.torch_state_dict(model)
    expect(
        StateDictError, lambda: jaxlstm.load_torch_state_dict(model, make(sd), **kwargs), *fragments
    )
    _assert_unchanged(model, before)


FILE_CASES = {
    "text as .pt": (
        "text.pt",
        StateDictError,
        "is a text file",
        "torch.save(model.state_dict(), path)",
    ),
    "truncated .pt": ("truncated.pt", StateDictError, "truncated or damaged"),
    "pickled module .pt": (
        "pickled-module.pt",
        StateDictError,
        "pickled torch.nn.Module (torch.nn.modules.linear.Linear)",
        "torch.save(model.state_dict(), path)",
        "torch.jit.save(torch.jit.script(model), path)",
    ),
    "module inside a checkpoint": (
        "nested-module.pt",
        StateDictError,
        "pickled torch.nn.Module",
        "under the key 'model'",
    ),
    "list in .pt": ("list.pt", StateDictError, "holds a list, expected a state_dict"),
    "one tensor in .pt": ("tensor.pt", StateDictError, "holds a single tensor of shape (3,)"),
    "text as .safetensors": (
        "text.safetensors",
        StateDictError,
        "is not a valid .safetensors file",
    ),
    "truncated .safetensors": (
        "truncated.safetensors",
        StateDictError,
        "is not a valid .safetensors file",
    ),
    "empty .safetensors": ("empty.safetensors", StateDictError, "is not a valid .safetensors file"),
    "directory": ("dir.pt", StateDictError, "is a directory, expected a torch file"),
    "missing file": ("missing.pt", FileNotFoundError, "does not exist"),
    "unknown suffix": ("bad suffix", StateDictError, "cannot tell the format", "suffix '.npz'"),
}


@pytest.mark.parametrize("case", FILE_CASES.values(), ids=FILE_CASES.keys())
def test_load_bad_file_errors_name_the_file_and_leave_the_model_unchanged(case, files):
    name, exc, *fragments = case
    _, paths = files
    model = jaxlstm.LSTM(3, 5, num_layers=2, rngs=nnx.Rngs(0))
    before = jaxlstm.torch_state_dict(model)
    expect(
        exc,
        lambda: jaxlstm.load_torch_state_dict(model, paths[name]),
        repr(str(paths[name])),
        *fragments,
    )
    _assert_unchanged(model, before)


def test_load_good_files_work(files):
    """The broken files are broken versions of files that load (so the cases above can pass)."""
    sd, paths = files
    for kind in ("pt", "safetensors"):
        model = jaxlstm.LSTM(3, 5, num_layers=2, rngs=nnx.Rngs(0))
        assert jaxlstm.load_torch_state_dict(model, paths[kind]) == ([], [])
        for k, v in jaxlstm.torch_state_dict(model).items():
            np.testing.assert_array_equal(v, sd[k])


def test_load_argument_type_errors():
    model = jaxlstm.LSTM(3, 5, rngs=nnx.Rngs(0))
    expect(
        TypeError,
        lambda: jaxlstm.load_torch_state_dict(model, [1, 2]),
        "source must be a state_dict",
        "torch nn.Module",
        "file path",
        "got list",
    )
    expect(
        TypeError,
        lambda: jaxlstm.load_torch_state_dict(object(), {}),
        "model",
        "jaxlstm.LSTM or jaxlstm.LSTMCell",
        "got object",
    )
    cell = jaxlstm.LSTMCell(3, 5, rngs=nnx.Rngs(0))
    expect(
        StateDictError,
        lambda: jaxlstm.load_torch_state_dict(cell, jaxlstm.torch_state_dict(model)),
        "missing keys ['weight_ih'",
        "unexpected keys ['weight_ih_l0'",
    )


def test_a_jaxlstm_module_and_linen_variables_are_sources():
    model = jaxlstm.LSTM(3, 5, num_layers=2, batch_first=True, rngs=nnx.Rngs(0))
    assert find_lstms(model) == {"": LSTMConfig(3, 5, num_layers=2, batch_first=True)}
    other = jaxlstm.LSTM(3, 5, num_layers=2, rngs=nnx.Rngs(1))
    jaxlstm.load_torch_state_dict(other, model)
    np.testing.assert_array_equal(other.weight_hh_l1.get_value(), model.weight_hh_l1.get_value())
    variables = {"params": dict(model.params), "batch_stats": {"x": np.zeros(2)}}
    assert list(find_lstms(variables)) == ["params."]


# --- formats ------------------------------------------------------------------------------------


def test_detect_format_by_suffix():
    names = (
        "m.PT",
        "m.pth",
        "pytorch_model.bin",
        "last.ckpt",
        "model.jit",
        "m.safetensors",
        "ckpt",
        "run/step_100",
    )
    assert [detect_format(p) for p in names] == ["torch"] * 5 + ["safetensors", "orbax", "orbax"]
    read_only = ("policy.zip", "w.pkl", "model.keras", "weights.h5", "model.onnx")
    assert [detect_format(p) for p in read_only] == ["archive", "pickle", "keras", "keras", "onnx"]
    for bad in ("m.npz", "weights.npy", "m.v2"):
        expect(
            StateDictError, lambda bad=bad: detect_format(bad), "cannot tell the format", repr(bad)
        )


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


def test_write_state_dict_refuses_to_overwrite(tmp_path):
    (tmp_path / "a.safetensors").write_bytes(b"old")
    expect(
        FileExistsError,
        lambda: write_state_dict(tmp_path / "a.safetensors", _sd()),
        "already exists",
    )
    assert (tmp_path / "a.safetensors").read_bytes() == b"old"
    write_state_dict(tmp_path / "a.safetensors", _sd(), force=True)
    assert list(read_safetensors(tmp_path / "a.safetensors")) == list(CFG.param_shapes())
    expect(StateDictError, lambda: write_state_dict(tmp_path / "ckpt", _sd()), "pass config")


def test_reads_orbax_pytrees_nested_and_through_a_checkpoint_manager(tmp_path):
    import orbax.checkpoint as ocp

    sd = _sd(LSTMConfig(3, 5, bidirectional=True))
    tree = {"params": {"lstm": sd, "head": {"kernel": np.zeros((10, 2), np.float32)}}}
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.abspath(tmp_path / "model_ckpt"), tree)
    assert find_lstms(tmp_path / "model_ckpt") == {
        "params.lstm.": LSTMConfig(3, 5, bidirectional=True)
    }
    weights = read_lstm(tmp_path / "model_ckpt")
    for k in sd:
        np.testing.assert_array_equal(weights.params[k].view(np.int32), sd[k].view(np.int32))
    with ocp.CheckpointManager(os.path.abspath(tmp_path / "runs")) as manager:
        manager.save(7, args=ocp.args.StandardSave(sd))
        manager.wait_until_finished()
    tensors, recorded = read_orbax(tmp_path / "runs" / "7")
    assert recorded is None
    np.testing.assert_array_equal(tensors["weight_hh_l0_reverse"], sd["weight_hh_l0_reverse"])
    expect(
        StateDictError,
        lambda: read_checkpoint(tmp_path / "runs"),
        "CheckpointManager directory: pass one step",
    )
    (tmp_path / "empty").mkdir()
    expect(
        StateDictError,
        lambda: read_checkpoint(tmp_path / "empty"),
        "not a readable orbax checkpoint",
    )
    expect(FileNotFoundError, lambda: read_checkpoint(tmp_path / "nowhere"), "does not exist")


def test_match_state_dict_returns_numpy_in_expected_order():
    sd = _sd(prefix="m.")
    values, result = match_state_dict(
        dict(reversed(list(sd.items()))), CFG.param_shapes(), prefix="m."
    )
    assert list(values) == list(CFG.param_shapes()) and result == ([], [])
    assert all(isinstance(v, np.ndarray) for v in values.values())
