"""The documentation site builds strictly, and every public name has its API reference entry.

`mkdocs build --strict` fails on any warning: a broken link or anchor, a page left out of the
nav, a docstring griffe cannot parse, a cross-reference that resolves to nothing, a command
line whose `--help` fails. The API pages are written by hand (which names go on which page),
so a test checks them against the code: every name in `jaxlstm.__all__` and in the `__all__`
of every public module must appear in the built site's inventory (`objects.inv`, the list of
documented objects mkdocstrings writes), and every module of the package must be declared
public or internal here, so that a new module cannot ship undocumented by accident.
"""

from __future__ import annotations

import glob
import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
import zlib

import pytest

import jaxlstm
from tests.harness import ROOT, subprocess_env

# Modules documented name by name, besides those in `jaxlstm.__all__`: the I/O modules that
# `jaxlstm/__init__.py` does not re-export.
EXTRA_PUBLIC_MODULES = ("jaxlstm.convert", "jaxlstm.torch_format")

# Modules whose names are not public API: their public objects are re-exported by
# `jaxlstm/__init__.py` (and documented there) or are implementation details.
INTERNAL_MODULES = (
    "jaxlstm._checks",
    "jaxlstm._lstm_kernels",  # the compiled extension, wrapped by jaxlstm.native
    "jaxlstm.cell",
    "jaxlstm.config",
    "jaxlstm.layer",
    "jaxlstm.lstm",
    "jaxlstm.nnx",
    "jaxlstm.options",
)


def public_modules() -> list[str]:
    """The modules in `jaxlstm.__all__`, then EXTRA_PUBLIC_MODULES."""
    listed = [
        f"jaxlstm.{name}" for name in jaxlstm.__all__ if inspect.ismodule(getattr(jaxlstm, name))
    ]
    return listed + list(EXTRA_PUBLIC_MODULES)


def public_names() -> dict[str, object]:
    """`{dotted path: object}` of every name the API reference must document."""
    names: dict[str, object] = {f"jaxlstm.{n}": getattr(jaxlstm, n) for n in jaxlstm.__all__}
    for module_name in public_modules():
        module = importlib.import_module(module_name)
        names[module_name] = module
        names.update({f"{module_name}.{n}": getattr(module, n) for n in module.__all__})
    return names


def documented_as(path: str, obj: object) -> str:
    """The inventory name that documents `obj`: where a function or class is defined.

    mkdocstrings lists an object documented through a re-export (`::: jaxlstm.from_torch`)
    under both names, so the defining one (`jaxlstm.torch_io.from_torch`) always works, and
    a module that shadows a function's name (`jaxlstm.lstm`) does not count for it.
    """
    if inspect.isfunction(obj) or inspect.isclass(obj):
        return f"{obj.__module__}.{obj.__qualname__}"
    return path


def read_inventory(path: str) -> set[str]:
    """The object names of a Sphinx inventory (`objects.inv`, version 2)."""
    with open(path, "rb") as f:
        for _ in range(4):  # four header lines, then zlib-compressed entries
            f.readline()
        body = zlib.decompress(f.read()).decode("utf-8")
    return {line.split(" ", 1)[0] for line in body.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> str:
    """The site, built strictly into a temporary directory (the build fails on any warning)."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    site_dir = str(tmp_path_factory.mktemp("site"))
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", site_dir],
        cwd=ROOT,
        env=subprocess_env(NO_MKDOCS_2_WARNING="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-5000:]}"
    return site_dir


def test_every_module_of_the_package_is_declared_public_or_internal():
    found = {f"jaxlstm.{m.name}" for m in pkgutil.iter_modules(jaxlstm.__path__)}
    declared = set(public_modules()) | set(INTERNAL_MODULES)
    assert found <= declared, (
        f"modules neither documented nor declared internal: {sorted(found - declared)}; "
        "give their public names an API page under docs/api/ and add them to "
        "EXTRA_PUBLIC_MODULES, or add them to INTERNAL_MODULES in tests/test_docs.py"
    )
    assert not declared - found, f"declared but missing: {sorted(declared - found)}"


@pytest.mark.parametrize(("path", "obj"), list(public_names().items()), ids=list(public_names()))
def test_public_name_has_a_docstring(path, obj):
    if inspect.ismodule(obj) or inspect.isfunction(obj) or inspect.isclass(obj):
        assert (inspect.getdoc(obj) or "").strip(), f"{path} has no docstring"


def test_site_builds_strictly_and_has_every_page(site):
    for page in ("index.html", "api/index.html", "api/cli/index.html", "performance/index.html"):
        assert os.path.isfile(os.path.join(site, page)), page
    assert os.path.isfile(os.path.join(site, "images", "performance.png"))


def test_every_public_name_is_in_the_api_reference(site):
    documented = read_inventory(os.path.join(site, "objects.inv"))
    missing = [
        path for path, obj in public_names().items() if documented_as(path, obj) not in documented
    ]
    assert not missing, (
        f"public names without an API reference entry: {missing}; add them to a page "
        "under docs/api/ (`::: jaxlstm.name`), with a docstring"
    )


@pytest.mark.parametrize(
    "module",
    ["jaxlstm.convert", "experiments.sine", "experiments.classify", "experiments.benchmark"],
)
def test_command_line_help_is_on_the_cli_page(site, module):
    with open(os.path.join(site, "api", "cli", "index.html"), encoding="utf-8") as f:
        page = f.read()
    assert f"usage: python -m {module}" in page, f"--help of {module} is not on the page"


def test_the_readmes_links_into_the_docs_resolve():
    """The README is outside the site (the strict build does not see it): its links, here."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme)
    assert len(links) >= 10, links
    missing = [link for link in links if not os.path.isfile(os.path.join(ROOT, link))]
    assert not missing, f"README.md links to missing files: {missing}"


def test_docstrings_use_the_section_names_griffe_reads():
    """`Examples:` is a section; `Example:` would render as a note with `>>>` as quotes."""
    bad = []
    for path in sorted(glob.glob(os.path.join(ROOT, "jaxlstm", "**", "*.py"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip() == "Example:":
                    bad.append(f"{os.path.relpath(path, ROOT)}:{number}")
    assert not bad, f"write `Examples:` (griffe's section name) at {bad}"
