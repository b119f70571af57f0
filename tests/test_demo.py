"""``toyflow demo``: runs offline from the shipped weights, prints the table, writes three figures."""

import contextlib
import csv
import io

import pytest
from PIL import Image

from toyflow import search
from toyflow.demo import QUICK, REGIMES, format_table, notice_lines, run_demo

FIGURES = ("trajectories.png", "budget_allocation.png", "scaling.png")


def _run(out):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        folder = run_demo(out, quick=True)
    return folder, buf.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    folder, printed = _run(out)
    return folder, out, printed


def test_demo_writes_table_csv_and_figures(demo):
    folder, out, _ = demo
    assert folder == out
    for name in FIGURES:
        with Image.open(out / name) as im:  # a complete, readable PNG
            im.verify()
            assert im.format == "PNG" and min(im.size) > 300
    assert not list(out.glob(".*"))  # no temporary files left behind (atomic writes)

    table = (out / "table.txt").read_text()
    for label in ("BoN", "SMC", "SVDD", "RBF", "Linear ODE", "Linear SDE", "VP SDE", "reward ± s.e.", "realism", "NFE"):
        assert label in table

    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(REGIMES) * len(QUICK.methods) * len(QUICK.modes) * len(QUICK.budgets)
    # the paper's regime first, then the contrast
    assert [(r["task"], r["model"]) for r in rows[:: len(rows) // 2]] == [("rare-mode-x8", "flowmap-mlp"), ("rare-mode", "mlp")]
    for r in rows:
        assert r["status"] == "ok", r
        assert int(r["runs"]) == QUICK.runs
        assert int(r["nfe_max"]) <= int(r["budget"])  # no run over its budget
        assert 0.0 <= float(r["reward_mean"]) <= 1.0


def test_demo_what_to_notice_is_read_off_the_numbers(demo):
    """The 'what to notice' lines order the modes by the printed rewards, and each regime has them."""
    _, out, printed = demo
    assert printed.count("what to notice:") == len(REGIMES)
    rows = [{"method": m, "mode": mode, "budget": 100, "status": "ok", "reward_mean": v}
            for m, mode, v in (("svdd", "linear-ode", 0.1), ("svdd", "linear-sde", 0.5), ("svdd", "vp-sde", 0.9),
                               ("bon", "vp-sde", 0.3))]
    lines = notice_lines(rows, 100)
    assert lines[0] == "SVDD at budget 100: VP SDE 0.90 > Linear SDE 0.50 > Linear ODE 0.10"
    assert "best in VP SDE: SVDD (0.90); BoN 0.30" in lines


def test_demo_prints_the_table_and_folder(demo):
    _, out, printed = demo
    assert (out / "table.txt").read_text().strip() in printed
    assert printed.rstrip().endswith(str(out.resolve()))


def test_demo_is_seeded(demo, tmp_path):
    _, first, printed = demo
    _, again = _run(tmp_path)
    assert (tmp_path / "table.txt").read_text() == (first / "table.txt").read_text()
    assert (tmp_path / "results.csv").read_text().count("\n") == (first / "results.csv").read_text().count("\n")
    assert again.replace(str(tmp_path.resolve()), "OUT") == printed.replace(str(first.resolve()), "OUT")


def test_format_table_marks_skipped_rows():
    rows = [
        {"method": "rbf", "mode": "vp-sde", "budget": 5, "status": "skipped: budget too small"},
        {"method": "my-scheme", "mode": "linear-sde", "budget": 50, "status": "ok", "reward_mean": 0.5,
         "reward_se": 0.1, "realism": -1.0, "nfe_mean": 50.0},
    ]
    text = format_table(rows, title="t")
    assert "skipped: budget too small" in text and "my-scheme" in text and "0.500 ± 0.100" in text
    assert set(QUICK.modes) == set(search.MODES)
