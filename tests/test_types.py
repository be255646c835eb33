"""The package type-checks: mypy (configured in pyproject.toml's [tool.mypy]) is clean on jaxlstm/.

jaxlstm ships a `py.typed` marker, so its users' type checkers read these hints: they are part
of the API and are checked like the rest of it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.harness import ROOT


def test_the_package_is_marked_typed():
    assert os.path.isfile(os.path.join(ROOT, "jaxlstm", "py.typed"))


def test_mypy_is_clean_on_the_package(tmp_path):
    pytest.importorskip("mypy")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "jaxlstm"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
