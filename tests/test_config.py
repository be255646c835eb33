"""jaxlstm.config: LSTMConfig and LSTMCellConfig (validation, torch's names and shapes, inference
from a state_dict) and the name helpers param_names, param_roles and layer_names."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from jaxlstm import LSTMCellConfig, LSTMConfig
from jaxlstm.config import layer_names, param_names, param_roles
from tests.harness import expect


def config(*args, **kwargs):
    def make():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dropout with one layer warns, as torch does
            return LSTMConfig(*args, **kwargs)

    return make


def cell_config(*args, **kwargs):
    return lambda: LSTMCellConfig(*args, **kwargs)


# --- constructor arguments: (call, exception, fragments naming argument, expected, got) -------

POSITIVE = "positive int"
PROJ_RANGE = "[0, hidden_size=5)"

CONSTRUCTOR_CASES = {
    "input_size=0": (config(0, 5), ValueError, "input_size", POSITIVE, "got 0"),
    "input_size=-1": (config(-1, 5), ValueError, "input_size", POSITIVE, "got -1"),
    "input_size=2.5": (config(2.5, 5), TypeError, "input_size", POSITIVE, "got 2.5 of type float"),
    "input_size=True": (
        config(True, 5),
        TypeError,
        "input_size",
        POSITIVE,
        "got True of type bool",
    ),
    "hidden_size=0": (config(3, 0), ValueError, "hidden_size", POSITIVE, "got 0"),
    "hidden_size=None": (config(3, None), TypeError, "hidden_size", POSITIVE, "got None"),
    "hidden_size='5'": (config(3, "5"), TypeError, "hidden_size", POSITIVE, "got '5' of type str"),
    "num_layers=0": (config(3, 5, num_layers=0), ValueError, "num_layers", POSITIVE, "got 0"),
    "num_layers=1.0": (config(3, 5, num_layers=1.0), TypeError, "num_layers", POSITIVE, "got 1.0"),
    "bias=1": (config(3, 5, bias=1), TypeError, "bias", "bool", "got 1 of type int"),
    "batch_first='yes'": (
        config(3, 5, batch_first="yes"),
        TypeError,
        "batch_first",
        "bool",
        "got 'yes'",
    ),
    "bidirectional=None": (
        config(3, 5, bidirectional=None),
        TypeError,
        "bidirectional",
        "bool",
        "got None",
    ),
    "dropout=-0.1": (config(3, 5, dropout=-0.1), ValueError, "dropout", "[0, 1]", "got -0.1"),
    "dropout=1.5": (config(3, 5, dropout=1.5), ValueError, "dropout", "[0, 1]", "got 1.5"),
    "dropout=nan": (
        config(3, 5, num_layers=2, dropout=float("nan")),
        ValueError,
        "dropout",
        "[0, 1]",
        "got nan",
    ),
    "dropout='0.5'": (
        config(3, 5, dropout="0.5"),
        TypeError,
        "dropout",
        "number",
        "got '0.5' of type str",
    ),
    "dropout=True": (
        config(3, 5, dropout=True),
        TypeError,
        "dropout",
        "number",
        "got True of type bool",
    ),
    "proj_size=-1": (config(3, 5, proj_size=-1), ValueError, "proj_size", PROJ_RANGE, "got -1"),
    "proj_size=H": (config(3, 5, proj_size=5), ValueError, "proj_size", PROJ_RANGE, "got 5"),
    "proj_size>H": (config(3, 5, proj_size=6), ValueError, "proj_size", PROJ_RANGE, "got 6"),
    "proj_size=1.0": (
        config(3, 5, proj_size=1.0),
        TypeError,
        "proj_size",
        "int",
        "got 1.0 of type float",
    ),
    # LSTMCellConfig
    "LSTMCellConfig(input_size=0)": (
        cell_config(0, 5),
        ValueError,
        "input_size",
        POSITIVE,
        "got 0",
    ),
    "LSTMCellConfig(hidden_size=2.0)": (
        cell_config(3, 2.0),
        TypeError,
        "hidden_size",
        POSITIVE,
        "got 2.0 of type float",
    ),
    "LSTMCellConfig(bias=None)": (
        cell_config(3, 5, bias=None),
        TypeError,
        "bias",
        "bool",
        "got None",
    ),
}


@pytest.mark.parametrize("case", CONSTRUCTOR_CASES.values(), ids=CONSTRUCTOR_CASES.keys())
def test_constructor_argument_errors(case):
    fn, exc, *fragments = case
    expect(exc, fn, *fragments)


def test_dropout_with_one_layer_warns_like_torch():
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        LSTMConfig(3, 4, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LSTMConfig(3, 4, num_layers=2, dropout=0.5)  # no warning with two layers


# --- torch's names and shapes -----------------------------------------------------------------


def test_config_matches_torch_state_dict_keys_and_shapes():
    torch = pytest.importorskip("torch")
    for kwargs in (dict(), dict(num_layers=3, bidirectional=True, proj_size=2, bias=False)):
        module = torch.nn.LSTM(4, 6, **kwargs)
        config = LSTMConfig(4, 6, **kwargs)
        assert config.param_shapes() == {k: tuple(v.shape) for k, v in module.state_dict().items()}
        assert LSTMConfig.from_state_dict(module.state_dict()) == config


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_cell_config_matches_torch_state_dict_keys_and_shapes(bias):
    torch = pytest.importorskip("torch")
    module = torch.nn.LSTMCell(4, 6, bias=bias)
    config = LSTMCellConfig(4, 6, bias=bias)
    state_dict = module.state_dict()
    assert config.param_shapes() == {k: tuple(v.shape) for k, v in state_dict.items()}
    assert list(config.param_shapes()) == list(state_dict)  # torch's order too
    assert LSTMCellConfig.from_state_dict(state_dict) == config


def test_derived_sizes():
    config = LSTMConfig(7, 16, num_layers=3, bidirectional=True, proj_size=5)
    assert (config.num_directions, config.output_size) == (2, 5)
    assert [config.layer_input_size(k) for k in range(3)] == [7, 10, 10]  # I, then D * P
    plain = LSTMConfig(7, 16, num_layers=2)
    assert (plain.num_directions, plain.output_size, plain.layer_input_size(1)) == (1, 16, 16)


def test_param_names_per_layer_and_direction():
    config = LSTMConfig(3, 5, num_layers=2, bidirectional=True, proj_size=2)
    assert param_names(config, 1, 1) == {
        "weight_ih": "weight_ih_l1_reverse",
        "weight_hh": "weight_hh_l1_reverse",
        "bias_ih": "bias_ih_l1_reverse",
        "bias_hh": "bias_hh_l1_reverse",
        "weight_hr": "weight_hr_l1_reverse",
    }
    assert param_names(LSTMConfig(3, 5, bias=False), 0, 0) == {
        "weight_ih": "weight_ih_l0",
        "weight_hh": "weight_hh_l0",
    }


def test_param_roles_cover_every_parameter_in_torch_order():
    config = LSTMConfig(3, 5, num_layers=2, bidirectional=True, proj_size=2)
    roles = param_roles(config)
    assert list(roles) == list(config.param_shapes())
    assert roles["weight_hr_l1_reverse"] == "weight_hr"
    assert roles["bias_ih_l0"] == "bias_ih"
    assert {role for role in roles.values()} == {
        "weight_ih",
        "weight_hh",
        "bias_ih",
        "bias_hh",
        "weight_hr",
    }
    cell = LSTMCellConfig(3, 5, bias=False)
    assert param_roles(cell) == {"weight_ih": "weight_ih", "weight_hh": "weight_hh"}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_cell_as_lstm_and_layer_names(bias):
    cell = LSTMCellConfig(3, 5, bias=bias)
    lstm = cell.as_lstm(batch_first=True)
    assert lstm == LSTMConfig(3, 5, bias=bias, batch_first=True)
    names = layer_names(cell)
    assert set(names) == set(cell.param_shapes())
    renamed = {names[k]: shape for k, shape in cell.param_shapes().items()}
    assert renamed == lstm.param_shapes()


# --- inference from a state_dict --------------------------------------------------------------


def test_from_state_dict_reads_under_a_prefix_and_keeps_the_given_flags():
    config = LSTMConfig(3, 5, num_layers=2, bidirectional=True, proj_size=2)
    state_dict = {f"model.lstm.{k}": np.zeros(s) for k, s in config.param_shapes().items()}
    state_dict["model.head.weight"] = np.zeros((2, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = LSTMConfig.from_state_dict(
            state_dict, prefix="model.lstm.", batch_first=True, dropout=0.25
        )
    want = LSTMConfig(
        3, 5, num_layers=2, bidirectional=True, proj_size=2, batch_first=True, dropout=0.25
    )
    assert got == want
    cell = {f"rnn.{k}": np.zeros(s) for k, s in LSTMCellConfig(4, 2).param_shapes().items()}
    assert LSTMCellConfig.from_state_dict(cell, prefix="rnn.") == LSTMCellConfig(4, 2)


def test_config_from_state_dict_errors():
    expect(
        ValueError,
        lambda: LSTMConfig.from_state_dict({"x": np.zeros(3)}),
        "prefix=''",
        "expected the key 'weight_ih_l0'",
        "found keys ['x']",
    )
    not_lstm = {"weight_ih_l0": np.zeros((7, 3)), "weight_hh_l0": np.zeros((7, 2))}
    expect(
        ValueError,
        lambda: LSTMConfig.from_state_dict(not_lstm),
        "weight_ih_l0 has shape (7, 3)",
        "expected (4H, I)",
    )


CELL_STATE_DICT_ERRORS = {
    "no weights": (
        {"bias_ih": np.zeros(8)},
        "",
        "prefix=''",
        "expected the keys 'weight_ih' and 'weight_hh'",
        "found keys ['bias_ih']",
    ),
    "wrong prefix": (
        {"cell.weight_ih": np.zeros((8, 3)), "cell.weight_hh": np.zeros((8, 2))},
        "rnn.",
        "prefix='rnn.'",
        "'rnn.weight_ih'",
        "found keys ['cell.weight_hh', 'cell.weight_ih']",
    ),
    "weight_hh not (4H, H)": (
        {"weight_ih": np.zeros((8, 3)), "weight_hh": np.zeros((8, 3))},
        "",
        "not an nn.LSTMCell's",
        "weight_hh (8, 3) (expected (4H, H))",
    ),
    "weight_ih rows not 4H": (
        {"weight_ih": np.zeros((7, 3)), "weight_hh": np.zeros((7, 2))},
        "",
        "weight_ih has shape (7, 3) (expected (4H, I))",
    ),
}


@pytest.mark.parametrize("case", CELL_STATE_DICT_ERRORS.values(), ids=CELL_STATE_DICT_ERRORS.keys())
def test_cell_config_from_state_dict_errors(case):
    state_dict, prefix, *fragments = case
    expect(
        ValueError, lambda: LSTMCellConfig.from_state_dict(state_dict, prefix=prefix), *fragments
    )
