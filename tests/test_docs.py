"""The documentation site builds with warnings as errors (``mkdocs build --strict``), from the docstrings,
the committed notebooks (rendered, never executed), README sections and bench/RESULTS.md.

Needs the ``docs`` extra (``pip install -e ".[dev,docs]"``, as CI installs); without mkdocs the test is
skipped. The site goes to a temporary folder and mkdocs-jupyter's cache with it, so nothing is written
into the repository. About 10 s on a 2-core CPU.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install -e '.[docs]' to build the docs")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, TOYFLOW_DOCS_CACHE=str(out.parent / "mkdocs-jupyter-cache"), NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"),
         "--site-dir", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return out


def test_every_notebook_is_a_page(site):
    notebooks = sorted(p.relative_to(REPO) for p in (REPO / "notebooks").glob("**/*.ipynb")
                       if not any(part.startswith((".", "_")) for part in p.parts))
    assert notebooks
    for nb in notebooks:
        page = site / nb.with_suffix("") / "index.html"
        assert page.is_file(), f"{nb} has no page"
        html = page.read_text(encoding="utf-8")
        title = next(line[2:].strip() for cell in json.loads((REPO / nb).read_text(encoding="utf-8"))["cells"]
                     if cell["cell_type"] == "markdown" for line in "".join(cell["source"]).splitlines()
                     if line.startswith("# "))
        assert title.split("·")[-1].strip() in html, f"{nb}: its title is not on its page"
        assert "data:image/png;base64" in html or "<img" in html, f"{nb}: no figure rendered"


def test_api_reference_has_the_public_search_api(site):
    html = (site / "api" / "search" / "index.html").read_text(encoding="utf-8")
    for name in ("run", "Method", "register", "SearchContext", "Sampler", "AllocationScheme", "AllocationState",
                 "Rollover", "SearchResult"):
        assert f'id="toyflow.search.{name}"' in html, f"toyflow.search.{name} is missing from the API reference"
    # the reST roles of the docstrings became links (docs/hooks/griffe_rst_roles.py), none is left raw
    # outside the "source code" boxes, which show the docstrings as written
    rendered = re.sub(r'<details class="mkdocstrings-source">.*?</details>', "", html, flags=re.S)
    assert ":class:`" not in rendered and ":func:`" not in rendered
    assert 'href="#toyflow.search.RBFOptions"' in html


def test_readme_sections_and_results_are_included(site):
    started = (site / "getting-started" / "index.html").read_text(encoding="utf-8")
    assert "rewards.task" in started and "<!-- readme:" not in started
    results = (site / "bench" / "RESULTS" / "index.html").read_text(encoding="utf-8")
    assert "Benchmark results" in results
    assert (site / "bench" / "table_regimes").is_dir() and (site / "figures" / "scaling_2d.png").is_file()


def test_command_reference_lists_every_command(site):
    html = (site / "api" / "cli" / "index.html").read_text(encoding="utf-8")
    for command in ("toyflow-train-2d", "toyflow-sample", "toyflow-bench-search", "toyflow-demo", "toyflow-figures"):
        assert f'id="{command}"' in html, f"{command} is missing from the command reference"
