"""Every Python block of README.md runs as written: alone, in its own process, in an empty dir.

A reader copies one block into a file and runs it; nothing prepares files for it or defines
names in an earlier block, so nothing does here either.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.harness import ROOT, subprocess_env

README = os.path.join(ROOT, "README.md")


def _python_blocks() -> list[tuple[int, str]]:
    """`(line number, code)` of every ```python block."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    return [
        (text.count("\n", 0, m.start()) + 1, m.group(1))
        for m in re.finditer(r"```python\n(.*?)```", text, re.S)
    ]


BLOCKS = _python_blocks()


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_readme_python_block_runs_alone_in_an_empty_directory(line, code, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (
        f"README.md block at line {line} failed:\n{code}\n--- stderr ---\n{done.stderr[-3000:]}"
    )
