"""Each notebook is a jupytext pair: the percent-format ``.py`` (the source, reviewed in diffs) and the
``.ipynb`` generated from it (``python notebooks/build.py``). The pair must be in sync: the same cells,
of the same types, with the same sources (outputs are not compared). The exercise sections of a
notebook and of its solutions notebook must match too: the same exercise text and the same checks,
stubs in one and solutions in the other.
"""

import re
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbformat = pytest.importorskip("nbformat")

from toyflow import exercises

REPO = Path(__file__).resolve().parents[1]
NB_DIR = REPO / "notebooks"
SOL_DIR = NB_DIR / "solutions"
SOURCES = sorted(NB_DIR.glob("[0-9][0-9]_*.py")) + sorted(SOL_DIR.glob("[0-9][0-9]_*_solutions.py"))
CALL = re.compile(r"^exercises\.(check_\w+)\((\w+)\)\s*$", re.MULTILINE)


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def _ids(p):
    return str(p.relative_to(NB_DIR))


def test_every_notebook_has_its_source_and_solutions():
    students = sorted(p.stem for p in NB_DIR.glob("[0-9][0-9]_*.ipynb"))
    assert students and students == sorted(p.stem for p in NB_DIR.glob("[0-9][0-9]_*.py"))
    assert sorted(p.stem for p in SOL_DIR.glob("*.py")) == [s + "_solutions" for s in students]
    assert sorted(p.stem for p in SOL_DIR.glob("*.ipynb")) == [s + "_solutions" for s in students]
    assert sorted(s[:2] for s in students) == sorted(exercises.ALL)


@pytest.mark.parametrize("src", SOURCES, ids=_ids)
def test_pair_is_in_sync(src):
    ipynb = src.with_suffix(".ipynb")
    text, executed = _cells(jupytext.read(src)), _cells(nbformat.read(ipynb, as_version=4))
    assert len(text) == len(executed), (f"{ipynb.name} has {len(executed)} cells, {src.name} {len(text)}: "
                                        "regenerate it with `python notebooks/build.py " + src.name[:2] + "`")
    for i, (a, b) in enumerate(zip(text, executed)):
        assert a == b, (f"cell {i} differs between {src.name} and {ipynb.name}; regenerate with "
                        f"`python notebooks/build.py {src.name[:2]}`:\n--- .py ---\n{a[1][:400]}\n--- .ipynb ---\n{b[1][:400]}")


def _exercise_section(path):
    """[(markdown, code)] of the exercise cells: each '### Exercise N' markdown and the code cell after it."""
    nb = jupytext.read(path)
    out = []
    for i, c in enumerate(nb.cells):
        if c.cell_type == "markdown" and c.source.startswith("### Exercise "):
            nxt = nb.cells[i + 1]
            assert nxt.cell_type == "code", f"{path.name}: '{c.source.splitlines()[0]}' is not followed by its code cell"
            out.append((c.source, nxt.source))
    return out


@pytest.mark.parametrize("src", sorted(NB_DIR.glob("[0-9][0-9]_*.py")), ids=_ids)
def test_exercises_have_stubs_checks_and_solutions(src):
    key = src.name[:2]
    student = _exercise_section(src)
    solved = _exercise_section(SOL_DIR / f"{src.stem}_solutions.py")
    assert 3 <= len(student) <= 5, f"{src.name}: {len(student)} exercises (expected 3 to 5)"
    assert [m for m, _ in student] == [m for m, _ in solved], "the exercise text differs from the solutions notebook's"
    calls = [CALL.findall(code) for _, code in student]
    assert all(len(c) == 1 for c in calls), f"{src.name}: every exercise cell ends with one exercises.check_*(answer) call"
    assert [c[0][0] for c in calls] == list(exercises.ALL[key]), f"{src.name}: the checks differ from exercises.{key}"
    assert [CALL.findall(code) for _, code in solved] == calls, "the solutions call other checks or answers"
    for (_, stub), (_, sol) in zip(student, solved):
        assert "raise NotImplementedError  # your code" in stub, f"{src.name}: the exercise cell has no stub:\n{stub}"
        assert "NotImplementedError" not in sol, f"the solution is still a stub:\n{sol}"
