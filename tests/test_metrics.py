"""Metrics: energy distance, tilted oracle, realism/diversity, Frechet distance and classifier metrics."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from toyflow import metrics, rewards
from toyflow.data import toy2d
from toyflow.models.gmm import GaussianMixtureFlow


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class TinyEvaluator(nn.Module):
    """Random evaluator with the toyflow interface: forward -> logits (B, 10), features -> (B, 8)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.Tanh())
        self.head = nn.Linear(8, 10)
        g = gen(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
        self.eval()

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


# ---------------------------------------------------------------------------------------------
# energy distance
# ---------------------------------------------------------------------------------------------
def test_energy_distance_zero_for_identical_sets():
    x = torch.randn(300, 2, generator=gen(0))
    assert metrics.energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    assert metrics.energy_distance(x, x[torch.randperm(300, generator=gen(1))]) == pytest.approx(0.0, abs=1e-12)


def test_energy_distance_point_masses():
    a, b = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])
    assert metrics.energy_distance(a, b) == pytest.approx(2 * 5.0)
    # two-point sets: x = {0, 2}, y = {1, 1} on a line: 2 * 1 - (2 * 2 / 4) - 0 = 1
    x, y = torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [1.0]])
    assert metrics.energy_distance(x, y) == pytest.approx(1.0)
    # unbiased: within-set means over i != j: 2 * 1 - 2 - 0 = 0
    assert metrics.energy_distance(x, y, unbiased=True) == pytest.approx(0.0)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(1, 4), st.integers(0, 10_000))
def test_energy_distance_symmetric_nonnegative(n, m, d, seed):
    g = gen(seed)
    x, y = torch.randn(n, d, generator=g), torch.randn(m, d, generator=g) + 0.5
    exy, eyx = metrics.energy_distance(x, y), metrics.energy_distance(y, x)
    assert exy == pytest.approx(eyx, rel=1e-10, abs=1e-12)
    assert exy >= -1e-12


def test_energy_distance_grows_with_shift():
    x = torch.randn(2000, 2, generator=gen(2))
    y = torch.randn(2000, 2, generator=gen(3))
    x, y = x - x.mean(0), y - y.mean(0)  # remove the sample-mean noise, the dominant error term
    shifts = (0.0, 0.5, 1.0, 2.0, 4.0)
    values = [metrics.energy_distance(x, y + torch.tensor([s, 0.0])) for s in shifts]
    assert all(a < b for a, b in zip(values, values[1:]))
    # N(0, I) vs N(m, I) in 2D: X - Y ~ N(m, 2I), |X - Y| is Rice(nu = |m|, s = sqrt 2) with mean
    # s sqrt(pi/2) L_{1/2}(-nu^2 / (2 s^2)); E|X - X'| = sqrt(pi) (Rayleigh)
    for shift, value in zip(shifts, values):
        q = torch.tensor(-(shift**2) / 4, dtype=torch.float64)
        laguerre = torch.exp(q / 2) * ((1 - q) * torch.special.i0(-q / 2) - q * torch.special.i1(-q / 2))
        rice_mean = math.sqrt(math.pi) * float(laguerre)
        assert value == pytest.approx(2 * rice_mean - 2 * math.sqrt(math.pi), abs=0.05)


def test_energy_distance_chunking_matches_direct(monkeypatch):
    x = torch.randn(123, 3, generator=gen(4))
    y = torch.randn(77, 3, generator=gen(5))
    direct = 2 * torch.cdist(x.double(), y.double()).mean() - torch.cdist(x.double(), x.double()).mean()
    direct = float(direct - torch.cdist(y.double(), y.double()).mean())
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 500)  # force many chunks
    assert metrics.energy_distance(x, y) == pytest.approx(direct, rel=1e-10)


def test_energy_distance_flattens_and_validates():
    x = torch.randn(10, 1, 2, 2, generator=gen(6))
    assert metrics.energy_distance(x, x.reshape(10, 4)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="same number of features"):
        metrics.energy_distance(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="NaN"):
        metrics.energy_distance(torch.tensor([[float("nan"), 0.0]]), torch.zeros(3, 2))


def test_energy_distance_floor():
    gmm = toy2d.eight_gaussians_gmm()
    floor = metrics.energy_distance_floor(gmm.sample, 200, gen(7), repeats=4)
    assert len(floor.values) == 4 and floor.n == 200
    assert 0 < floor.mean < 0.1 and floor.std >= 0
    shifted = metrics.energy_distance(gmm.sample(200, generator=gen(8)), gmm.sample(200, generator=gen(9)) + 0.5)
    assert shifted > floor.mean + 5 * floor.std


# ---------------------------------------------------------------------------------------------
# tilted oracle
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rare_task():
    return rewards.rare_mode_task()


def test_tilted_oracle_normalised_and_base_limit(rare_task):
    gmm, r = rare_task
    big = metrics.tilted_oracle(gmm, r, 1e9, grid_size=128)
    assert float(big.density.sum()) * big.cell_area == pytest.approx(1.0, rel=1e-9)
    assert torch.allclose(big.density, big.base_density, rtol=1e-6, atol=1e-12)
    assert big.expected_reward == pytest.approx(big.base_expected_reward, rel=1e-6)
    assert big.base_mass_on_grid == pytest.approx(1.0, abs=1e-3)
    inf = metrics.tilted_oracle(gmm, r, math.inf, grid_size=128)
    assert torch.allclose(inf.density, inf.base_density)


def test_tilted_oracle_matches_mixture_density(rare_task):
    gmm, r = rare_task
    o = metrics.tilted_oracle(gmm, r, 1e9, grid_size=64, bounds=((-3, 3), (-2.5, 2.5)))
    assert o.density.shape == (64, 64) and o.xs.shape == (64,) and o.ys.shape == (64,)
    iy, ix = 20, 50  # [row = y, column = x]
    pt = torch.tensor([[float(o.xs[ix]), float(o.ys[iy])]], dtype=torch.float64)
    assert float(o.base_density[iy, ix]) == pytest.approx(math.exp(float(gmm.log_prob(pt, 0.0))), rel=1e-2, abs=1e-9)


def test_tilted_oracle_reward_increases_as_lam_decreases(rare_task):
    gmm, r = rare_task
    lams = [10.0, 1.0, 0.3, 0.1, 0.03]
    exp_r = [metrics.tilted_oracle(gmm, r, lam, grid_size=96).expected_reward for lam in lams]
    assert all(a < b for a, b in zip(exp_r, exp_r[1:]))
    o = metrics.tilted_oracle(gmm, r, 0.03, grid_size=96)
    assert o.best_reward_on_support == pytest.approx(1.0, abs=0.01)
    assert o.expected_reward <= o.best_reward_on_support
    # base: only the rare mode (weight 0.02) earns reward
    assert o.base_expected_reward < 0.03


def test_tilted_oracle_exact_two_component_weights():
    """For a reward constant on each of two far-apart modes, p* reweights them: w_k exp(r_k / lam)."""
    gmm = GaussianMixtureFlow([[-1.5, 0.0], [1.5, 0.0]], 0.2, [0.8, 0.2])
    r = rewards.FunctionReward(lambda x: (x[:, 0] > 0).to(x.dtype), "right", differentiable=False)
    lam = 0.5
    o = metrics.tilted_oracle(gmm, r, lam, grid_size=201)
    right_mass = float(o.density[:, o.xs > 0].sum()) * o.cell_area
    expected = 0.2 * math.exp(2.0) / (0.2 * math.exp(2.0) + 0.8)
    assert right_mass == pytest.approx(expected, abs=1e-4)
    assert o.expected_reward == pytest.approx(expected, abs=1e-4)
    s = o.sample(4000, gen(10))
    assert s.shape == (4000, 2)
    assert float((s[:, 0] > 0).double().mean()) == pytest.approx(expected, abs=0.03)


def test_tilted_oracle_small_lam_no_overflow(rare_task):
    gmm, r = rare_task
    o = metrics.tilted_oracle(gmm, r, 1e-4, grid_size=64)
    assert bool(torch.isfinite(o.density).all())
    assert float(o.density.sum()) * o.cell_area == pytest.approx(1.0, rel=1e-9)


def test_tilted_oracle_validates(rare_task):
    gmm, r = rare_task
    with pytest.raises(ValueError, match="lam must be positive"):
        metrics.tilted_oracle(gmm, r, 0.0)
    with pytest.raises(ValueError, match="bounds"):
        metrics.tilted_oracle(gmm, r, 1.0, bounds=(1.0, -1.0))


# ---------------------------------------------------------------------------------------------
# realism and diversity
# ---------------------------------------------------------------------------------------------
def test_realism_prefers_data_over_noise():
    gmm = toy2d.eight_gaussians_gmm()
    data = gmm.sample(500, generator=gen(11))
    noise = torch.randn(500, 2, generator=gen(12))
    assert metrics.realism(data, gmm) > metrics.realism(noise, gmm) + 5
    # one component's entropy: E[log p] ~ log(1/8) - log(2 pi s^2) - 1 for well separated modes
    expected = math.log(1 / 8) - math.log(2 * math.pi * 0.01) - 1
    assert metrics.realism(data, gmm) == pytest.approx(expected, abs=0.15)


def test_diversity():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert metrics.diversity(x) == pytest.approx(5.0)
    assert metrics.diversity(torch.zeros(5, 1, 2, 2)) == 0.0
    three = torch.tensor([[0.0], [1.0], [3.0]])
    assert metrics.diversity(three) == pytest.approx((1 + 3 + 2) / 3)
    with pytest.raises(ValueError, match="at least 2"):
        metrics.diversity(torch.zeros(1, 2))


# ---------------------------------------------------------------------------------------------
# Frechet distance and classifier metrics
# ---------------------------------------------------------------------------------------------
def test_frechet_identical_is_zero():
    f = torch.randn(500, 6, generator=gen(13))
    assert metrics.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-8)


def test_frechet_mean_shift_with_equal_covariances():
    f = torch.randn(400, 5, generator=gen(14), dtype=torch.float64) @ torch.randn(5, 5, generator=gen(15), dtype=torch.float64)
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    assert metrics.frechet_distance(f, f + shift) == pytest.approx(float(shift.pow(2).sum()), rel=1e-8)


def test_frechet_diagonal_closed_form():
    """Diagonal covariances: d^2 = sum (m_a - m_b)^2 + sum (s_a - s_b)^2 (per-dimension stds)."""
    g = gen(16)
    a = torch.randn(300, 3, generator=g, dtype=torch.float64)
    a = (a - a.mean(0)) / a.std(0)
    # decorrelate exactly: whiten with the sample covariance
    evals, evecs = torch.linalg.eigh(torch.cov(a.T))
    a = a @ evecs / evals.sqrt()
    s_a, s_b = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64), torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)
    fa, fb = a * s_a, a * s_b + 1.0
    expected = 3 * 1.0 + float((s_a - s_b).pow(2).sum())
    assert metrics.frechet_distance(fa, fb) == pytest.approx(expected, rel=1e-8)


def test_frechet_rank_deficient_is_finite():
    f = torch.zeros(50, 4)
    f[:, 0] = torch.randn(50, generator=gen(17))
    d = metrics.frechet_distance(f, f + 1.0)
    assert d == pytest.approx(4.0, rel=1e-6)


def test_classifier_metrics_shapes_and_values():
    ev = TinyEvaluator()
    g = gen(18)
    imgs = torch.rand(40, 1, 28, 28, generator=g) * 2 - 1
    ref = torch.rand(60, 1, 28, 28, generator=g) * 2 - 1
    assert metrics.classifier_fid(imgs, imgs, ev) == pytest.approx(0.0, abs=1e-8)
    assert metrics.classifier_fid(imgs, ref, ev, batch_size=7) >= 0.0
    preds = ev(imgs).argmax(1)
    k = int(preds.mode().values)
    assert metrics.evaluator_accuracy(imgs, ev, k, batch_size=9) == pytest.approx(float((preds == k).double().mean()))
    fd = metrics.feature_diversity(imgs, ev)
    assert fd == pytest.approx(metrics.diversity(ev.features(imgs).detach()), rel=1e-5)
    assert metrics.feature_diversity(imgs[:1].expand(5, -1, -1, -1), ev) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        metrics.evaluator_accuracy(torch.zeros(3, 28, 28), ev, 1)
