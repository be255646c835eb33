"""CI runs exactly the README's test command, so the README's command is the one that is tested."""

from __future__ import annotations

import os
import re

from tests.harness import ROOT


def test_ci_runs_the_readmes_test_command_verbatim():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme[readme.index("## The two commands") :]
    commands = re.findall(r"```bash\n(.*?)\n```", section, re.S)[:2]
    assert len(commands) == 2 and "pytest" in commands[1], commands
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    assert commands[1].strip() in lines, (
        f"the README's test command is not a line of .ci/run:\n{commands[1]}"
    )
