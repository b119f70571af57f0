"""``toyflow figures``: every README figure is regenerated, seeded, as a readable PNG."""

import pytest
from PIL import Image

from toyflow import pretrained
from toyflow.figures import FIGURES_2D, FIGURES_MNIST, _fig_trajectories, make_all, save_figure

pytestmark = pytest.mark.slow


def test_make_all_writes_every_figure(tmp_path):
    paths = make_all(tmp_path, progress=False, quick=True)
    expected = list(FIGURES_2D)
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


def test_save_figure_is_atomic_and_stamp_free(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    p = save_figure(fig, tmp_path / "sub" / "x.png")
    data = p.read_bytes()
    assert data.startswith(b"\x89PNG") and b"Software" not in data
    assert save_figure(fig, p).read_bytes() == data
    assert sorted(q.name for q in p.parent.iterdir()) == ["x.png"]
