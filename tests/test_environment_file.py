"""environment.yml: conda-forge only, Python pinned to the version CI tests, every dependency of
pyproject.toml (and of its dev / notebooks extras) there under its conda-forge name."""

import re

import pytest

from conftest import REPO

CONDA_NAME = {"torch": "pytorch", "matplotlib": "matplotlib-base"}  # pip name -> conda-forge name
CI_PYTHON = "3.11"


def _section(lines, key):
    """The '- item' lines under a top-level 'key:' of a simple YAML file."""
    out, inside = [], False
    for line in lines:
        if re.match(r"^\S", line):
            inside = line.startswith(f"{key}:")
        elif inside and line.strip().startswith("- ") and line.startswith("  - "):
            out.append(line.strip()[2:].strip())
    return out


def test_conda_forge_only_and_python_pinned():
    lines = [ln for ln in (REPO / "environment.yml").read_text().splitlines() if not ln.lstrip().startswith("#")]
    assert _section(lines, "channels") == ["conda-forge", "nodefaults"]
    deps = _section(lines, "dependencies")
    assert f"python={CI_PYTHON}" in deps


def test_every_pyproject_dependency_is_listed():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in ("dev", "notebooks"):
        wanted += project["optional-dependencies"].get(extra, [])
    lines = (REPO / "environment.yml").read_text().splitlines()
    have = {re.split(r"[<>=! ]", d, maxsplit=1)[0] for d in _section(lines, "dependencies")}
    missing = sorted({CONDA_NAME.get(n, n) for n in (re.split(r"[<>=!\[ ;]", w, maxsplit=1)[0] for w in wanted)} - have)
    assert not missing, f"environment.yml lacks {missing} (pyproject.toml dependencies)"
