"""``toyflow figures``: every README figure is regenerated, seeded, as a readable PNG."""

import pytest
from PIL import Image

from toyflow import pretrained
from toyflow.figures import (BENCH_CSV, FIGURES_2D, FIGURES_BENCH, FIGURES_MNIST, _fig_scaling_2d, _fig_trajectories,
                             make_all, pinned_style, save_figure)

pytestmark = pytest.mark.slow


def test_make_all_writes_every_figure(tmp_path):
    paths = make_all(tmp_path, progress=False, quick=True)
    expected = list(FIGURES_2D) + (list(FIGURES_BENCH) if BENCH_CSV.is_file() else [])
    if "mnist-flow" in pretrained.available() and "mnist-reward" in pretrained.available():
        expected += list(FIGURES_MNIST)
    assert [p.name for p in paths] == expected
    for p in paths:
        assert p.parent == tmp_path
        with Image.open(p) as im:
            im.verify()
            assert im.format == "PNG"
    assert not list(tmp_path.glob(".*"))  # atomic writes leave no temporary files


def test_figures_are_byte_identical_for_the_same_seed(tmp_path):
    a = _fig_trajectories(tmp_path / "a")[0].read_bytes()
    b = _fig_trajectories(tmp_path / "b")[0].read_bytes()
    assert a == b


def test_scaling_2d_is_drawn_from_the_committed_table(tmp_path):
    """figures/scaling_2d.png comes from bench/results_regime_a.csv (nothing rerun): same bytes twice,
    one panel per task, model and mode."""
    if not BENCH_CSV.is_file():
        pytest.skip(f"no benchmark table at {BENCH_CSV} (an installed copy without bench/)")
    with pinned_style():
        a = _fig_scaling_2d(tmp_path / "a", BENCH_CSV)[0]
        b = _fig_scaling_2d(tmp_path / "b", BENCH_CSV)[0]
    assert a.name == "scaling_2d.png" and a.read_bytes() == b.read_bytes()
    with Image.open(a) as im:
        assert im.size[0] > im.size[1]  # a wide grid, for a slide


def test_make_all_skips_scaling_2d_without_the_table(tmp_path, capsys, monkeypatch):
    import toyflow.figures as F

    ran = []
    for name in ("_fig_trajectories", "_fig_densities", "_fig_search", "_fig_scaling", "_fig_eta_ratio", "_fig_mnist"):
        monkeypatch.setattr(F, name, lambda *a, _n=name, **k: ran.append(_n) or [])
    make_all(tmp_path, bench_csv=tmp_path / "missing.csv")
    assert "scaling_2d.png skipped (no benchmark table at" in capsys.readouterr().err
    assert "_fig_scaling" in ran


def test_save_figure_is_atomic_and_stamp_free(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    p = save_figure(fig, tmp_path / "sub" / "x.png")
    data = p.read_bytes()
    assert data.startswith(b"\x89PNG") and b"Software" not in data
    assert save_figure(fig, p).read_bytes() == data
    assert sorted(q.name for q in p.parent.iterdir()) == ["x.png"]
