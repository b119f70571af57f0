"""Toy 2D data: names, shapes, scale, reproducibility, and agreement of "8gaussians" with its mixture."""

import math

import pytest
import torch

from toyflow.data import toy2d
from toyflow.metrics import energy_distance


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", toy2d.DATASETS)
def test_shape_dtype_scale(name):
    x = toy2d.sample(name, 2001, generator=gen(0))
    assert x.shape == (2001, 2) and x.dtype == torch.float32
    assert bool(torch.isfinite(x).all())
    assert float(x.abs().max()) < 3.0  # fits in [-3, 3]^2
    std = float(x.std(dim=0).mean())
    assert 0.7 < std < 1.6  # spread of order one
    assert float(x.mean(dim=0).abs().max()) < 0.25  # roughly centred


@pytest.mark.parametrize("name", toy2d.DATASETS)
def test_seeded_reproducible_and_seeds_differ(name):
    a = toy2d.sample(name, 500, generator=gen(1))
    b = toy2d.sample(name, 500, generator=gen(1))
    c = toy2d.sample(name, 500, generator=gen(2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_datasets_is_read_only_tuple():
    assert isinstance(toy2d.DATASETS, tuple)
    assert set(toy2d.DATASETS) == {"8gaussians", "checkerboard", "moons", "spirals", "rings"}


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: 8gaussians, checkerboard"):
        toy2d.sample("swissroll", 10, generator=gen(0))


def test_generator_required():
    with pytest.raises(ValueError, match="generator"):
        toy2d.sample("moons", 10, generator=None)


def test_zero_and_odd_sizes():
    for name in toy2d.DATASETS:
        assert toy2d.sample(name, 0, generator=gen(0)).shape == (0, 2)
        assert toy2d.sample(name, 7, generator=gen(0)).shape == (7, 2)


def test_checkerboard_only_dark_squares():
    x = toy2d.sample("checkerboard", 4000, generator=gen(3)).double()
    col, row = torch.floor(x[:, 0]) + 2, torch.floor(x[:, 1]) + 2
    assert bool(((col + row) % 2 == 0).all())
    # all 8 dark squares are used, about equally
    counts = torch.bincount((col * 4 + row).long(), minlength=16)
    used = counts[counts > 0]
    assert used.numel() == 8 and float(used.min()) > 0.8 * 4000 / 8


def test_eight_gaussians_sampler_matches_its_mixture():
    gmm = toy2d.eight_gaussians_gmm()
    assert torch.allclose(gmm.means, toy2d.eight_gaussians_means())
    assert torch.allclose(gmm.stds, torch.full((8,), toy2d.EIGHT_GAUSSIANS_STD, dtype=torch.float64))
    assert torch.allclose(gmm.weights, torch.full((8,), 1 / 8, dtype=torch.float64))
    data = toy2d.sample("8gaussians", 1500, generator=gen(4))
    oracle = gmm.sample(1500, generator=gen(5))
    same = energy_distance(data, oracle)
    shifted = energy_distance(data, oracle + torch.tensor([0.2, 0.0]))
    assert same < 0.01 < shifted
    # every point sits near one of the eight means
    d = torch.cdist(data.double(), gmm.means).min(dim=1).values
    assert float(d.max()) < 6 * toy2d.EIGHT_GAUSSIANS_STD


def test_eight_gaussians_means_geometry():
    m = toy2d.eight_gaussians_means(radius=1.5)
    assert torch.allclose(m.norm(dim=1), torch.full((8,), 1.5, dtype=torch.float64))
    assert torch.allclose(m[0], torch.tensor([1.5, 0.0], dtype=torch.float64))
    assert torch.allclose(m[2], torch.tensor([0.0, 1.5], dtype=torch.float64), atol=1e-12)


def test_gaussian_mixture_moments():
    means = torch.tensor([[-1.0, 0.0], [2.0, 1.0]])
    x = toy2d.gaussian_mixture(means, torch.tensor([0.1, 0.3]), [0.25, 0.75], 20000, gen(6), dtype=torch.float64)
    expected_mean = 0.25 * means[0] + 0.75 * means[1]
    assert torch.allclose(x.mean(0), expected_mean.double(), atol=0.03)
    right = x[:, 0] > 0.5
    assert abs(float(right.double().mean()) - 0.75) < 0.015
    assert abs(float(x[right].std(dim=0).mean()) - 0.3) < 0.01


def test_gaussian_mixture_validates():
    with pytest.raises(ValueError, match="weights"):
        toy2d.gaussian_mixture([[0.0, 0.0]], 0.1, [-1.0], 5, gen(0))
    with pytest.raises(ValueError, match="means"):
        toy2d.gaussian_mixture([0.0, 0.0], 0.1, None, 5, gen(0))
    with pytest.raises(ValueError, match="stds"):
        toy2d.gaussian_mixture([[0.0, 0.0]], [0.1, 0.2], None, 5, gen(0))


def test_rings_radii():
    x = toy2d.sample("rings", 3000, generator=gen(7)).double()
    r = x.norm(dim=1)
    nearest = torch.tensor([0.75, 1.5, 2.25], dtype=torch.float64)
    gap = (r[:, None] - nearest[None]).abs().min(dim=1).values
    assert float(gap.max()) < 0.4
    # points per ring proportional to the radius: 1 : 2 : 3
    ring = (r[:, None] - nearest[None]).abs().argmin(dim=1)
    frac = torch.bincount(ring, minlength=3).double() / r.numel()
    assert torch.allclose(frac, torch.tensor([1, 2, 3], dtype=torch.float64) / 6, atol=0.03)
    assert math.isclose(float(frac.sum()), 1.0)
