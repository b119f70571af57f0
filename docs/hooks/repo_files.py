"""MkDocs hook: serve repository files that live outside docs/ without copying them into git.

* ``notebooks/**/*.ipynb`` (rendered by mkdocs-jupyter, never executed), ``bench/RESULTS.md`` and the
  tables, text outputs, CSVs and plots it links to, ``figures/*.png`` and ``examples/*.py`` join the site
  under their repository paths, so the relative links inside RESULTS.md (``table_regimes.md``,
  ``../figures/scaling_2d.png``, ``results_regime_a.csv``) resolve as they do on GitHub.
* A nav entry whose value is the string ``"notebooks/*.ipynb"`` becomes docs/notebooks/index.md and
  one entry per notebook (titled by the notebook's first heading, in file-name order), and
  ``notebooks/solutions/*.ipynb``, if any, become a "Solutions" subsection: renamed or added
  notebooks need no edit here.
* A line ``<!-- readme: Section title -->`` in a docs page is replaced by the body of the README
  section ``## Section title`` (up to the next ``## `` heading), so the docs show the README's
  examples instead of a copy that could drift. A missing section fails the build.
* A line ``<!-- toyflow-help -->`` is replaced by the ``--help`` of every ``toyflow`` command and
  subcommand, found by walking the real command line (``python -m toyflow.cli ... --help``), so the
  command reference is never out of date. A command whose help fails fails the build.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_NAV = "notebooks/*.ipynb"
SERVED = ("notebooks/**/*.ipynb", "bench/*.md", "bench/*.txt", "bench/*.csv", "bench/*.png", "figures/*.png",
          "examples/*.py")
_HELP_MARKER = re.compile(r"^<!--[ \t]*toyflow-help[ \t]*-->[ \t]*$", re.M)
_SUBCOMMAND = re.compile(r"^    (\S+)(?:\s{2,}.*)?$")
_README_MARKER = re.compile(r"^<!--[ \t]*readme:[ \t]*(.+?)[ \t]*-->[ \t]*$", re.M)


def _served_paths() -> list[str]:
    out = set()
    for pattern in SERVED:
        for p in ROOT.glob(pattern):
            rel = p.relative_to(ROOT).as_posix()
            if p.is_file() and not any(part.startswith((".", "_")) for part in Path(rel).parts):
                out.add(rel)
    return sorted(out)


def _notebook_title(path: Path) -> str:
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError) as e:
        raise PluginError(f"cannot read notebook {path}: {e}") from e
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", [])).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem.replace("_", " ")


def _notebook_nav() -> list:
    top = sorted(ROOT.glob("notebooks/*.ipynb"))
    nav = [{_notebook_title(p): p.relative_to(ROOT).as_posix()} for p in top]
    if (ROOT / "docs" / "notebooks" / "index.md").is_file():  # the section's overview page
        nav.insert(0, "notebooks/index.md")
    solutions = sorted(ROOT.glob("notebooks/solutions/*.ipynb"))
    if solutions:
        # "Solutions · 01 · Flow matching in 2D" reads "01 · Flow matching in 2D" inside the Solutions section
        nav.append({"Solutions": [{re.sub(r"^Solutions\s*·\s*", "", _notebook_title(p)): p.relative_to(ROOT).as_posix()}
                                  for p in solutions]})
    if not nav:
        raise PluginError("no notebooks found under notebooks/")
    return nav


def _expand(nav):
    if isinstance(nav, list):
        return [_expand(item) for item in nav]
    if isinstance(nav, dict):
        return {k: (_notebook_nav() if v == NOTEBOOK_NAV else _expand(v)) for k, v in nav.items()}
    return nav


def on_config(config):
    if config.nav:
        config.nav = _expand(config.nav)
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns the .ipynb files into pages
def on_files(files, config):
    for rel in _served_paths():
        if files.get_file_from_path(rel) is None:
            files.append(File(rel, src_dir=str(ROOT), dest_dir=config.site_dir, use_directory_urls=config.use_directory_urls))
    return files


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(title)}[ \t]*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    if m is None:
        raise PluginError(f"README.md has no section '## {title}' (asked for by a docs page)")
    return m.group(1).strip("\n")


def _help(args: list[str]) -> str:
    env = dict(os.environ, COLUMNS="88")  # fits the code column of the page
    proc = subprocess.run([sys.executable, "-m", "toyflow.cli", *args, "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise PluginError(f"'toyflow {' '.join(args)} --help' failed:\n{proc.stderr[-2000:]}")
    return proc.stdout.rstrip()


def _subcommands(text: str) -> list[str]:
    """The names listed under argparse's subcommand block (a line "  COMMAND" or "  WHAT")."""
    names, inside = [], False
    for line in text.splitlines():
        if re.fullmatch(r"  [A-Z]+", line):
            inside = True
        elif inside and not line.strip():
            break
        elif inside and (m := _SUBCOMMAND.match(line)):
            names.append(m.group(1))
    return names


def _cli_reference() -> str:
    out, todo = [], [[]]
    while todo:
        args = todo.pop(0)
        text = _help(args)
        subs = _subcommands(text)
        title = " ".join(["toyflow", *args])
        out.append(f"## `{title}`\n\n```text\n{text}\n```\n")
        todo[0:0] = [args + [name] for name in subs]
    return "\n".join(out)


def on_page_markdown(markdown, page, config, files):
    markdown = _README_MARKER.sub(lambda m: _readme_section(m.group(1)), markdown)
    if _HELP_MARKER.search(markdown):
        markdown = _HELP_MARKER.sub(lambda m: _cli_reference(), markdown)
    return markdown
