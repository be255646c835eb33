"""MkDocs hook: `<!-- cli-help: MODULE -->` becomes the live `python -m MODULE --help` output.

The command lines' reference is their own `--help`, run at build time, so the pages can never
drift from the code. A command that fails fails the build.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mkdocs.exceptions import PluginError

MARKER = re.compile(r"^<!-- cli-help: ([\w.]+) -->$", re.M)
COLUMNS = "80"  # argparse wraps at the terminal width: fixed (reproducible), and fits the page


def help_text(module: str, root: str) -> str:
    """The `--help` output of `python -m module`, run from `root` with `root` on the path."""
    env = dict(
        os.environ, COLUMNS=COLUMNS, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", "")
    )
    env.pop("XLA_FLAGS", None)
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise PluginError(f"python -m {module} --help failed ({done.returncode}):\n{done.stderr}")
    return done.stdout.rstrip()


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    modules = MARKER.findall(markdown)
    if not modules:
        return markdown
    root = os.path.dirname(os.path.abspath(config.config_file_path))
    with ThreadPoolExecutor(len(modules)) as pool:
        texts = dict(zip(modules, pool.map(lambda m: help_text(m, root), modules), strict=True))
    return MARKER.sub(lambda m: f"```text\n{texts[m.group(1)]}\n```", markdown)
