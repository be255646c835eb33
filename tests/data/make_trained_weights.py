"""Trains the models whose weights test float32 accuracy, with the project's own experiments.

`tests/test_torch_equivalence.py` compares jaxlstm's and torch's float32 errors against a float64
reference on trained weights: trained networks saturate their gates and grow large cell
states, which random weights do not. This script trains three models to convergence with
the experiments' command lines and writes each LSTM's weights (torch names, float32) to
`tests/data/trained/<name>.safetensors`:

- `counting-3layer-bidirectional`: `experiments.classify --dataset counting`, 3 layers, both
  directions, H=32 (variable lengths 5-60 over a 4-token alphabet);
- `sine-2layer`: `experiments.sine`, 2 layers, H=32;
- `digits-2layer-bidirectional`: `experiments.classify` on the 8x8 digits, 2 layers, both
  directions, H=48.

Run from the repository root: `python tests/data/make_trained_weights.py` (a few minutes on
2 CPU cores). The files are committed so that the tests need no training.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "trained")

MODELS = {
    "counting-3layer-bidirectional": [
        "experiments.classify",
        "--dataset",
        "counting",
        "--num-layers",
        "3",
        "--bidirectional",
        "--hidden-size",
        "32",
        "--steps",
        "1500",
    ],
    "sine-2layer": [
        "experiments.sine",
        "--num-layers",
        "2",
        "--hidden-size",
        "32",
        "--steps",
        "3000",
    ],
    "digits-2layer-bidirectional": [
        "experiments.classify",
        "--dataset",
        "digits",
        "--num-layers",
        "2",
        "--bidirectional",
        "--hidden-size",
        "48",
        "--steps",
        "1500",
    ],
}


def train(name: str, command: list[str], workdir: str) -> dict[str, np.ndarray]:
    """Runs one experiment with checkpoints on; returns its LSTM's weights by torch name."""
    sys.path.insert(0, ROOT)
    from experiments import training

    checkpoints = os.path.join(workdir, name, "checkpoints")
    steps = command[command.index("--steps") + 1]
    argv = [
        sys.executable,
        "-m",
        *command,
        "--out-dir",
        os.path.join(workdir, name, "out"),
        "--checkpoint-dir",
        checkpoints,
        "--save-every",
        steps,
        "--no-progress",
        "--no-plots",
    ]
    subprocess.run(argv, cwd=ROOT, check=True)
    store = training.Checkpoints(checkpoints, must_exist=True)
    arrays = store.read_arrays(store.latest_step())
    store.close()
    prefix = "model.lstm."
    return {
        k[len(prefix) :]: np.asarray(v, np.float32)
        for k, v in arrays.items()
        if k.startswith(prefix)
    }


def main() -> None:
    from safetensors.numpy import save_file

    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:
        for name, command in MODELS.items():
            weights = train(name, command, workdir)
            path = os.path.join(OUT, f"{name}.safetensors")
            save_file(weights, path, metadata={"trained_with": "python -m " + " ".join(command)})
            print(
                f"wrote {path}: {len(weights)} tensors, "
                f"{sum(v.size for v in weights.values())} values"
            )


if __name__ == "__main__":
    main()
