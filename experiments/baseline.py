"""jaxlstm as it was at a git revision, importable beside the current one.

`python -m experiments.benchmark --baseline REV` times the package of revision REV in the same
process as the working tree's, so a change is measured "before vs after" in one run, on the
same machine state. `load_baseline` copies `jaxlstm/` of REV out of git (`git archive`, no
checkout: the working tree is untouched) into a temporary directory under the name
`jaxlstm_at_<short hash>`, rewrites its absolute imports (`from jaxlstm.x import ...`,
`import jaxlstm`) to that name, and imports it. The two packages share nothing but their
dependencies. Every revision has the functional API `lstm(params, x, config=LSTMConfig(...))`
and `init_params(key, config, dtype)`, which is what the benchmark times.
"""

from __future__ import annotations

import atexit
import dataclasses
import importlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from types import ModuleType

from experiments.training import UsageError

__all__ = ["ROOT", "Baseline", "load_baseline", "rename_imports"]

# The repository this checkout of experiments/ lives in.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "jaxlstm"

_FROM = re.compile(rf"^(\s*)from\s+{PACKAGE}(?=[\s.])", re.M)
_IMPORT_AS = re.compile(rf"^(\s*)import\s+{PACKAGE}(?=\s+as\s)", re.M)
_IMPORT = re.compile(rf"^(\s*)import\s+{PACKAGE}\s*$", re.M)


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A revision's jaxlstm, imported under its own name.

    Attributes:
        rev: the revision as given (e.g. `HEAD~3`, a tag, a hash).
        commit: its full commit hash.
        short: its abbreviated hash.
        module: the imported package (`jaxlstm_at_<short>`).
    """

    rev: str
    commit: str
    short: str
    module: ModuleType

    @property
    def name(self) -> str:
        """`jaxlstm@<short>`: how tables and plots call it."""
        return f"{PACKAGE}@{self.short}"


def rename_imports(source: str, new_name: str) -> str:
    """`source` with its absolute imports of `jaxlstm` pointed at `new_name`.

    `from jaxlstm.x import y` and `from jaxlstm import y` become `from <new_name>...`;
    `import jaxlstm as z` becomes `import <new_name> as z`; a bare `import jaxlstm` becomes
    `import <new_name> as jaxlstm`, so the code's `jaxlstm.` references keep working.
    """
    source = _FROM.sub(rf"\1from {new_name}", source)
    source = _IMPORT_AS.sub(rf"\1import {new_name}", source)
    return _IMPORT.sub(rf"\1import {new_name} as {PACKAGE}", source)


def _git(args: list[str], repo: str) -> bytes:
    done = subprocess.run(["git", "-C", repo, *args], capture_output=True, check=False)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(message[-1] if message else f"git {args[0]} failed")
    return done.stdout


def _resolve(rev: str, repo: str) -> tuple[str, str]:
    """`(full hash, short hash)` of `rev`.

    Raises:
        UsageError: `rev` names no commit of the repository at `repo`.
    """
    try:
        commit = _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], repo)
        short = _git(["rev-parse", "--short", commit.decode().strip()], repo)
    except (RuntimeError, OSError) as e:
        raise UsageError(
            f"--baseline must name a git revision of the repository at {repo!r} (a hash, tag, "
            f"branch or HEAD~N), got {rev!r} ({e or 'unknown revision'})"
        ) from e
    return commit.decode().strip(), short.decode().strip()


def _extract(commit: str, rev: str, repo: str, into: str) -> None:
    """Writes `jaxlstm/` of `commit` under `into`.

    Raises:
        UsageError: the revision has no `jaxlstm/` package.
    """
    try:
        archive = _git(["archive", "--format=tar", commit, PACKAGE], repo)
    except RuntimeError as e:
        raise UsageError(
            f"--baseline {rev!r}: that revision has no {PACKAGE}/ package ({e})"
        ) from e
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:  # Python < 3.11.4: git's own archive of our own repository
            tar.extractall(into)


def load_baseline(rev: str, repo: str = ROOT) -> Baseline:
    """Imports jaxlstm as it was at revision `rev` of the git repository `repo`.

    The copy lives in a temporary directory (removed when the process exits), which stays on
    `sys.path` so that the package's own lazy imports keep finding it.

    Args:
        rev: any git revision: a hash, tag, branch, `HEAD`, `HEAD~3`, ...
        repo: the repository (default: the one this file is in).

    Returns:
        The `Baseline`; `load_baseline(rev).module.lstm` is that revision's `jaxlstm.lstm`.

    Raises:
        UsageError: `rev` is not a revision of `repo`, or has no jaxlstm package.
    """
    commit, short = _resolve(rev, repo)
    name = f"{PACKAGE}_at_{short}"
    if name in sys.modules:
        return Baseline(rev, commit, short, sys.modules[name])
    tmp = tempfile.mkdtemp(prefix="jaxlstm-baseline-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    _extract(commit, rev, repo, tmp)
    package_dir = os.path.join(tmp, name)
    os.rename(os.path.join(tmp, PACKAGE), package_dir)
    for folder, _, files in os.walk(package_dir):
        for file in files:
            if file.endswith(".py"):
                path = os.path.join(folder, file)
                with open(path, encoding="utf-8") as f:
                    source = f.read()
                with open(path, "w", encoding="utf-8") as f:
                    f.write(rename_imports(source, name))
    sys.path.insert(0, tmp)
    importlib.invalidate_caches()
    return Baseline(rev, commit, short, importlib.import_module(name))
