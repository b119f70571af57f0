"""Regenerate the executed notebooks from their jupytext sources.

The ``.py`` files (jupytext percent format) are the sources you edit and review; each ``.ipynb``
beside it is generated from it and executed, so the committed notebooks show their outputs:

    python notebooks/build.py               # every notebook, solutions included
    python notebooks/build.py 02 05         # only those whose names start with 02 or 05
    python notebooks/build.py --no-execute  # convert only (no outputs)

Each notebook runs with nbclient (kernel "python3") in its own folder; the script prints each
one's execution time. ``tests/test_notebook_pairs.py`` checks that every pair is in sync.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jupytext
import nbformat

HERE = Path(__file__).resolve().parent


def sources() -> list[Path]:
    return sorted(HERE.glob("[0-9][0-9]_*.py")) + sorted((HERE / "solutions").glob("[0-9][0-9]_*_solutions.py"))


def build(src: Path, execute: bool = True, timeout: int = 900) -> float:
    nb = jupytext.read(src)
    nb.metadata.get("jupytext", {}).pop("text_representation", None)  # the .py's own header, not the notebook's
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"  # stable ids: regenerating does not churn the diff
    seconds = 0.0
    if execute:
        from nbclient import NotebookClient

        t0 = time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": str(src.parent)}}).execute()
        seconds = time.perf_counter() - t0
    nbformat.validate(nb)
    nbformat.write(nb, src.with_suffix(".ipynb"))
    return seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("only", nargs="*", help="name prefixes, e.g. 02 (default: all)")
    p.add_argument("--no-execute", action="store_true", help="write the .ipynb without executing them")
    args = p.parse_args(argv)
    todo = [s for s in sources() if not args.only or any(s.name.startswith(o) for o in args.only)]
    if not todo:
        print(f"no notebook source matches {args.only}", file=sys.stderr)
        return 2
    for src in todo:
        seconds = build(src, execute=not args.no_execute)
        out = src.with_suffix(".ipynb")
        print(f"{out.relative_to(HERE)}: {seconds:.1f} s, {out.stat().st_size / 1024:.0f} KiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
