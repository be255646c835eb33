"""The README's Python examples run as written (in a scratch directory holding the files they name)."""

from __future__ import annotations

import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _python_blocks() -> list[str]:
    with open(README, encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def test_readme_has_python_examples():
    assert len(_python_blocks()) >= 3


def test_readme_python_examples_run(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    # The quickstart loads "model.pt" with prefix "lstm.": a classifier's state_dict.
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(12, 10, num_layers=3, batch_first=True)
    torch.save({f"lstm.{k}": v for k, v in lstm.state_dict().items()}, "model.pt")
    namespace: dict = {}
    for i, block in enumerate(_python_blocks()):
        try:
            exec(compile(block, f"README.md python block {i}", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"README python block {i} failed: {e!r}\n{block}") from e
