"""The notebooks: committed executed (outputs, <= 2 MB, ending with exercises) and they run top to bottom.

Executing them is slow (``-m notebooks``): each runs in a temporary copy, so the committed files are
never overwritten; a failure reports the failing cell and its error.
"""

import os
import shutil
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
EXPECTED = (
    "01_flow_matching_2d.ipynb",
    "02_ode_to_sde.ipynb",
    "03_linear_to_vp.ipynb",
    "04_inference_time_scaling_2d.ipynb",
    "05_mnist_sampler.ipynb",
    "06_custom_allocation.ipynb",
    "07_regimes.ipynb",
)
MAX_BYTES = 2 * 1024 * 1024
# CI's hard limit per notebook (the target is 60 s with FULL = False on a 2-core CPU)
TIME_LIMIT_S = float(os.environ.get("TOYFLOW_NOTEBOOK_LIMIT_S", "180"))
NEEDS_MNIST = {"05_mnist_sampler.ipynb"}


def _ids(p):
    return p.name


def test_every_notebook_is_there():
    assert [p.name for p in NOTEBOOKS] == list(EXPECTED)


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_committed_notebook_is_executed_small_and_ends_with_exercises(path):
    assert path.stat().st_size <= MAX_BYTES, f"{path.name} is {path.stat().st_size / 1e6:.1f} MB (limit 2 MB)"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and code[0].source.strip().startswith("FULL = False"), "the first code cell must set FULL = False"
    if path.name in NEEDS_MNIST and not any(c.get("outputs") for c in code):
        pytest.skip(f"{path.name} is committed unexecuted until the MNIST weights ship")
    not_run = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()
               and c.get("execution_count") is None]
    assert not not_run, f"{path.name}: code cells {not_run} were never executed; execute the notebook before committing"
    with_output = sum(1 for c in code if c.get("outputs"))
    assert with_output >= len(code) // 2, f"{path.name}: only {with_output} of {len(code)} code cells have outputs"
    errors = [o for c in code for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{path.name} was committed with an error output: {errors[0].ename}: {errors[0].evalue}"
    last = nb.cells[-1]
    assert last.cell_type == "markdown" and "## Exercises" in last.source
    n_ex = sum(1 for line in last.source.splitlines() if line[:3].strip().rstrip(".").isdigit())
    assert 3 <= n_ex <= 5, f"{path.name}: {n_ex} exercises (expected 3 to 5)"


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_runs_top_to_bottom(path, tmp_path):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from toyflow import pretrained

    if path.name in NEEDS_MNIST and "mnist-flow" not in pretrained.available():
        pytest.skip("the shipped MNIST flow model ('mnist-flow') is not installed: toyflow.pretrained.available() "
                    f"= {pretrained.available()}")
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    nb = nbformat.read(copy, as_version=4)
    client = NotebookClient(nb, timeout=int(TIME_LIMIT_S), kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as e:
        failing = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"
                        and any(o.output_type == "error" for o in c.get("outputs", []))), None)
        where = f"cell {failing}:\n{nb.cells[failing].source}\n" if failing is not None else ""
        pytest.fail(f"{path.name} failed at {where}{e}", pytrace=False)
    elapsed = time.perf_counter() - t0
    assert elapsed <= TIME_LIMIT_S, f"{path.name} took {elapsed:.0f} s (limit {TIME_LIMIT_S:.0f} s)"
