"""jaxlstm.keras_io: Keras LSTM layers from .keras and .h5 files, compared with Keras itself
(KERAS_BACKEND=jax); Keras 2 layouts (CuDNNLSTM, hard_sigmoid) written with h5py."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")

import jaxlstm
from jaxlstm import convert
from jaxlstm.keras_io import from_keras, read_keras
from jaxlstm.state_dict import StateDictError, find_lstms
from tests.harness import assert_close, expect

h5py = pytest.importorskip("h5py")
keras = pytest.importorskip("keras")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

B, T, I, H = 2, 5, 3, 4


def _x(features=I, seed=0):
    return np.random.default_rng(seed).standard_normal((B, T, features)).astype(np.float32)


def _np(value):
    return np.asarray(keras.ops.convert_to_numpy(value))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A Sequential with a plain, a Bidirectional and a bias-free LSTM, in both formats."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((T, I)),
            keras.layers.LSTM(H, return_sequences=True, name="first"),
            keras.layers.LSTM(H, return_sequences=True, name="second"),
            keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=True), name="bi"),
            keras.layers.LSTM(2, use_bias=False, return_sequences=True, name="nobias"),
        ]
    )
    for weight in model.weights:  # non-zero biases, so a wrong bias layout shows
        if "bias" in weight.path:
            weight.assign(np.random.default_rng(1).standard_normal(weight.shape) * 0.3)
    root = tmp_path_factory.mktemp("keras")
    model.save(root / "model.keras")
    model.save(root / "model.h5")
    return model, root


def _layer_outputs(model, x):
    """{layer name: (input, output)} of a Sequential, run by Keras."""
    out = {}
    for layer in model.layers:
        y = _np(layer(x))
        out[layer.name] = (x, y)
        x = y
    return out


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_every_layer_runs_like_keras(models, suffix):
    model, root = models
    path = root / f"model{suffix}"
    assert list(find_lstms(path)) == ["bi.", "first.", "nobias.", "second."]
    for name, (x, want) in _layer_outputs(model, _x()).items():
        port = from_keras(path, name)
        assert port.batch_first and not port.config.dropout
        assert_close(np.asarray(port(x)[0]), want, "float32", f"{suffix} {name}")


def test_stacked_layers_become_one_multi_layer_lstm(models):
    model, root = models
    outputs = _layer_outputs(model, _x())
    port = from_keras(root / "model.keras", ["first", "second"])
    assert port.config.num_layers == 2
    out, (h_n, _) = port(_x())
    assert_close(np.asarray(out), outputs["second"][1], "float32", "out")
    assert_close(np.asarray(h_n[1]), outputs["second"][1][:, -1], "float32", "h_n")
    expect(StateDictError, lambda: from_keras(root / "model.keras", ["first", "nope"]), "'nope'")


def test_final_states_match_keras_return_state(tmp_path):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((T, I))
    out, h, c = keras.layers.LSTM(H, return_sequences=True, return_state=True, name="l")(inputs)
    model = keras.Model(inputs, [out, h, c])
    model.save(tmp_path / "state.keras")
    want = [_np(v) for v in model(_x())]
    got, (h_n, c_n) = from_keras(tmp_path / "state.keras")(_x())
    for name, a, b in (("out", got, want[0]), ("h", h_n[0], want[1]), ("c", c_n[0], want[2])):
        assert_close(np.asarray(a), b, "float32", name)


@pytest.mark.parametrize(
    "kwargs, named",
    [
        (dict(recurrent_activation="hard_sigmoid"), "hard_sigmoid"),
        (dict(activation="relu"), "activation='relu'"),
    ],
    ids=["hard_sigmoid", "relu"],
)
def test_other_activations_are_refused_by_name(tmp_path, kwargs, named):
    model = keras.Sequential([keras.Input((T, I)), keras.layers.LSTM(H, name="odd", **kwargs)])
    model.save(tmp_path / "odd.keras")
    assert find_lstms(tmp_path / "odd.keras") == {}
    expect(StateDictError, lambda: from_keras(tmp_path / "odd.keras"), "'odd.'", named)


def test_bidirectional_sum_is_refused(tmp_path):
    layer = keras.layers.Bidirectional(keras.layers.LSTM(H), merge_mode="sum", name="b")
    keras.Sequential([keras.Input((T, I)), layer]).save(tmp_path / "sum.keras")
    expect(StateDictError, lambda: from_keras(tmp_path / "sum.keras"), "merge_mode='sum'")


def _keras2_h5(path, layer_class, layer_config, weights):
    """A Keras 2 model file, as Keras 2 lays it out: `model_config` and `model_weights`."""
    name = layer_config["name"]
    config = {
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [{"class_name": layer_class, "config": layer_config}],
        },
    }
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.2.4"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(config).encode()
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = [name.encode()]
        layer = group.create_group(name)
        names = [f"{name}/{k}:0" for k in weights]
        layer.attrs["weight_names"] = [n.encode() for n in names]
        for weight_name, value in zip(names, weights.values(), strict=True):
            layer.create_dataset(weight_name, data=value)


def _random_weights(seed, bias_size):
    rng = np.random.default_rng(seed)
    return {
        "kernel": rng.standard_normal((I, 4 * H)).astype(np.float32) * 0.5,
        "recurrent_kernel": rng.standard_normal((H, 4 * H)).astype(np.float32) * 0.5,
        "bias": rng.standard_normal(bias_size).astype(np.float32) * 0.5,
    }


def test_keras2_cudnnlstm_bias_pair_ports_exactly(tmp_path):
    torch = pytest.importorskip("torch")
    weights = _random_weights(0, 8 * H)
    config = {"name": "cu_dnnlstm", "units": H, "return_sequences": True}
    _keras2_h5(tmp_path / "cudnn.h5", "CuDNNLSTM", config, weights)
    port = from_keras(tmp_path / "cudnn.h5")
    # cuDNN's equations are torch's: two biases, gates i, f, g (c), o
    reference = torch.nn.LSTM(I, H, batch_first=True)
    with torch.no_grad():
        reference.weight_ih_l0.copy_(torch.from_numpy(weights["kernel"].T.copy()))
        reference.weight_hh_l0.copy_(torch.from_numpy(weights["recurrent_kernel"].T.copy()))
        reference.bias_ih_l0.copy_(torch.from_numpy(weights["bias"][: 4 * H]))
        reference.bias_hh_l0.copy_(torch.from_numpy(weights["bias"][4 * H :]))
        want, _ = reference(torch.from_numpy(_x()))
    assert_close(np.asarray(port(_x())[0]), want.numpy(), "float32", "CuDNNLSTM")


def test_keras2_lstm_sigmoid_matches_keras3_and_hard_sigmoid_is_refused(tmp_path):
    weights = _random_weights(1, 4 * H)
    config = {"name": "lstm", "units": H, "return_sequences": True, "activation": "tanh"}
    _keras2_h5(tmp_path / "k2.h5", "LSTM", config | {"recurrent_activation": "sigmoid"}, weights)
    layer = keras.layers.LSTM(H, return_sequences=True)
    layer.build((B, T, I))
    layer.set_weights(list(weights.values()))
    assert_close(np.asarray(from_keras(tmp_path / "k2.h5")(_x())[0]), _np(layer(_x())), "float32")
    _keras2_h5(tmp_path / "old.h5", "LSTM", config, weights)  # Keras 2's default: hard_sigmoid
    expect(StateDictError, lambda: from_keras(tmp_path / "old.h5"), "hard_sigmoid")


def test_convert_and_from_torch_read_keras_files(models, tmp_path):
    _, root = models
    assert (
        convert.main([str(root / "model.keras"), str(tmp_path / "bi.pt"), "--prefix", "bi."]) == 0
    )
    direct = from_keras(root / "model.keras", "bi")
    via = jaxlstm.from_torch(tmp_path / "bi.pt", batch_first=True)
    assert_close(np.asarray(via(_x(H))[0]), np.asarray(direct(_x(H))[0]), "float32")
    assert read_keras(root / "model.h5").modules["bi."].batch_first is True


def test_not_a_keras_file(tmp_path):
    (tmp_path / "w.h5").write_bytes(b"")
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f.create_dataset("x", data=np.ones(3))
    expect(StateDictError, lambda: from_keras(tmp_path / "w.h5"), "without a model configuration")


def test_go_backwards_layer_runs_on_the_reversed_sequence(tmp_path):
    keras.utils.set_random_seed(2)
    layer = keras.layers.LSTM(H, return_sequences=True, go_backwards=True, name="back")
    keras.Sequential([keras.Input((T, I)), layer]).save(tmp_path / "back.keras")
    with pytest.warns(UserWarning, match="go_backwards"):
        port = from_keras(tmp_path / "back.keras")
    x = _x()
    assert_close(np.asarray(port(x[:, ::-1])[0]), _np(layer(x)), "float32", "go_backwards")


def test_load_into_an_existing_module_refuses_a_refused_layer(tmp_path):
    model = keras.Sequential(
        [keras.Input((T, I)), keras.layers.LSTM(H, recurrent_activation="hard_sigmoid", name="h")]
    )
    model.save(tmp_path / "h.keras")
    target = jaxlstm.LSTM(I, H, batch_first=True, rngs=__import__("flax").nnx.Rngs(0))
    expect(
        StateDictError,
        lambda: jaxlstm.load_torch_state_dict(target, tmp_path / "h.keras", prefix="h."),
        "hard_sigmoid",
    )


def test_without_h5py_the_error_names_the_extra(models, monkeypatch):
    _, root = models
    monkeypatch.setitem(__import__("sys").modules, "h5py", None)
    expect(ImportError, lambda: from_keras(root / "model.h5"), "jaxlstm[keras]")
