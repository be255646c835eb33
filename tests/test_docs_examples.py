"""Every example of README.md and docs/ runs as written: alone, in its own process, in an empty dir.

A reader copies one block into a file (or a shell) and runs it; nothing prepares files for it
or defines names in an earlier block, so nothing does here either. Every ```python block runs;
every ```bash block runs too, unless the line before it is `<!-- skip-test: REASON -->` (for
what is slow or installs packages: the two commands, a benchmark, a training run).
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

import pytest

from tests.harness import ROOT, subprocess_env

BLOCK = re.compile(
    r"^(<!-- skip-test: (?P<reason>.+?) -->\n)?```(?P<lang>\w+)\n(?P<code>.*?)^```", re.S | re.M
)


def markdown_files() -> list[str]:
    """README.md and every page under docs/, as paths relative to ROOT."""
    pages = sorted(glob.glob("docs/**/*.md", root_dir=ROOT, recursive=True))
    return ["README.md", *pages]


def code_blocks(lang: str) -> list[tuple[str, str | None]]:
    """`(id, code, skip reason or None)` of every ```lang block, the id `file:line`."""
    blocks = []
    for name in markdown_files():
        with open(os.path.join(ROOT, name), encoding="utf-8") as f:
            text = f.read()
        for m in BLOCK.finditer(text):
            if m.group("lang") == lang:
                line = text.count("\n", 0, m.start("code"))
                blocks.append((f"{name}:{line}", m.group("code"), m.group("reason")))
    return blocks


PYTHON = code_blocks("python")
BASH = code_blocks("bash")


def _run(argv: list[str], cwd: str) -> subprocess.CompletedProcess:
    # The interpreter running the tests first on PATH, so `python` in a shell block is it.
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    return subprocess.run(
        argv, cwd=cwd, env=subprocess_env(PATH=path), capture_output=True, text=True, timeout=300
    )


def test_the_readme_and_the_docs_have_examples():
    where = {block_id.split(":")[0] for block_id, _, _ in PYTHON}
    assert "README.md" in where and len(where) >= 8, sorted(where)
    assert len(PYTHON) >= 12 and len(BASH) >= 6


@pytest.mark.parametrize(("where", "code", "skip"), PYTHON, ids=[b[0] for b in PYTHON])
def test_python_block_runs_alone_in_an_empty_directory(where, code, skip, tmp_path):
    assert skip is None, f"{where}: python blocks always run ({skip!r})"
    done = _run([sys.executable, "-c", code], str(tmp_path))
    assert done.returncode == 0, (
        f"{where}: the block failed:\n{code}\n--- stderr ---\n{done.stderr[-3000:]}"
    )


@pytest.mark.parametrize(("where", "code", "skip"), BASH, ids=[b[0] for b in BASH])
def test_bash_block_runs_alone_in_an_empty_directory(where, code, skip, tmp_path):
    if skip is not None:
        pytest.skip(f"{where}: {skip}")
    done = _run(["bash", "-e", "-c", code], str(tmp_path))
    assert done.returncode == 0, (
        f"{where}: the block failed:\n{code}\n--- stdout ---\n{done.stdout[-2000:]}"
        f"\n--- stderr ---\n{done.stderr[-3000:]}"
    )
