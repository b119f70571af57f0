"""Metrics: energy distance, the reward-tilted oracle on a grid, realism/diversity, classifier FID.

Conventions: samples are (n, *shape) and are flattened to (n, D); metrics are computed in float64
and returned as Python floats (or frozen dataclasses).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch
from torch import Tensor, nn

from toyflow.rewards import check_mnist_images

__all__ = [
    "energy_distance",
    "EnergyDistanceFloor",
    "energy_distance_floor",
    "TiltedOracle",
    "tilted_oracle",
    "realism",
    "diversity",
    "frechet_distance",
    "classifier_features",
    "classifier_fid",
    "evaluator_accuracy",
    "feature_diversity",
]

logger = logging.getLogger(__name__)

_CHUNK_ELEMENTS = 4_000_000  # pairwise distances held in memory at once (~32 MB in float64)


def _flat64(x: Tensor, name: str) -> Tensor:
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor of shape (n, ...), got {type(x).__name__}")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch of shape (n, ...), got {tuple(x.shape)}")
    x = x.detach().reshape(x.shape[0], -1).to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf; check the sampler that produced it")
    return x


def _pairwise_distance_sum(x: Tensor, y: Tensor) -> float:
    """sum_{i,j} |x_i - y_j| over all pairs, in row chunks so memory stays bounded. x: (n, D), y: (m, D)."""
    rows = max(1, _CHUNK_ELEMENTS // max(1, y.shape[0]))
    total = 0.0
    for start in range(0, x.shape[0], rows):
        block = torch.cdist(x[start : start + rows], y, compute_mode="donot_use_mm_for_euclid_dist")
        total += float(block.sum())
    return total


def energy_distance(x: Tensor, y: Tensor, *, unbiased: bool = False) -> float:
    """Energy distance  2 E|X - Y| - E|X - X'| - E|Y - Y'|.  x: (n, ...), y: (m, ...).

    Default: the V-statistic (all pairs, including i = j in the within-set terms): >= 0 and exactly 0
    for identical sets. ``unbiased=True`` excludes i = j (the U-statistic): unbiased, may be < 0.
    O(n m) time, memory bounded by chunking (10k x 10k is fine).
    """
    x, y = _flat64(x, "x"), _flat64(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same number of features, got {x.shape[1]} and {y.shape[1]}")
    n, m = x.shape[0], y.shape[0]
    if unbiased and min(n, m) < 2:
        raise ValueError("the unbiased energy distance needs at least 2 samples in each set")
    xy = _pairwise_distance_sum(x, y) / (n * m)
    pairs_x, pairs_y = (n * (n - 1), m * (m - 1)) if unbiased else (n * n, m * m)
    xx = _pairwise_distance_sum(x, x) / pairs_x
    yy = _pairwise_distance_sum(y, y) / pairs_y
    return 2 * xy - xx - yy


@dataclass(frozen=True)
class EnergyDistanceFloor:
    """Energy distance between two independent data sets of size n (the sampling-noise floor)."""

    mean: float
    std: float
    values: tuple[float, ...]
    n: int


def energy_distance_floor(
    sampler: Callable[..., Tensor], n: int, generator: torch.Generator, repeats: int = 5, *, unbiased: bool = False
) -> EnergyDistanceFloor:
    """ED(data_a, data_b) for ``repeats`` pairs of independent draws ``sampler(n, generator=generator)``.

    A method whose energy distance to the data at sample size n is near ``mean`` is indistinguishable
    from exact sampling at that size.
    """
    if repeats < 1 or n < 1:
        raise ValueError(f"need n >= 1 and repeats >= 1, got n={n}, repeats={repeats}")
    values = tuple(
        energy_distance(sampler(n, generator=generator), sampler(n, generator=generator), unbiased=unbiased)
        for _ in range(repeats)
    )
    v = torch.tensor(values, dtype=torch.float64)
    std = float(v.std()) if repeats > 1 else 0.0
    return EnergyDistanceFloor(mean=float(v.mean()), std=std, values=values, n=n)


# --------------------------------------------------------------------------------------------
# Reward-tilted target on a grid
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TiltedOracle:
    """p*(x) = p_0(x) exp(r(x) / lam) / Z on a 2D grid.

    Arrays are indexed [iy, ix] (row = y), ready for ``plt.pcolormesh(xs, ys, density)``; densities are
    normalised so that sum(density) * cell_area = 1.
    """

    xs: Tensor  # (G,)
    ys: Tensor  # (G,)
    density: Tensor  # (G, G) p* on the grid
    base_density: Tensor  # (G, G) p_0 on the grid
    reward: Tensor  # (G, G) r at the grid points
    lam: float
    expected_reward: float  # E_{p*}[r]
    base_expected_reward: float  # E_{p_0}[r]
    best_reward_on_support: float  # max r over points where p_0 > support_threshold * max p_0
    base_mass_on_grid: float  # integral of p_0 over the grid (should be ~1; else widen the bounds)
    cell_area: float

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """n approximate draws from p*: pick grid cells by mass, jitter uniformly inside the cell. (n, 2)."""
        dx = float(self.xs[1] - self.xs[0])
        dy = float(self.ys[1] - self.ys[0])
        idx = torch.multinomial(self.density.reshape(-1), n, replacement=True, generator=generator)
        iy, ix = idx // self.xs.numel(), idx % self.xs.numel()
        jitter = torch.rand(n, 2, generator=generator, dtype=torch.float64) - 0.5
        return torch.stack([self.xs[ix] + dx * jitter[:, 0], self.ys[iy] + dy * jitter[:, 1]], dim=1)


def _bounds(bounds) -> tuple[tuple[float, float], tuple[float, float]]:
    b = torch.as_tensor(bounds, dtype=torch.float64)
    if b.shape == (2,):
        b = b.expand(2, 2)
    if b.shape != (2, 2) or not bool((b[:, 1] > b[:, 0]).all()):
        raise ValueError(f"bounds must be (lo, hi) or ((x_lo, x_hi), (y_lo, y_hi)) with lo < hi, got {bounds!r}")
    return (float(b[0, 0]), float(b[0, 1])), (float(b[1, 0]), float(b[1, 1]))


def tilted_oracle(
    gmm,
    reward: Callable[[Tensor], Tensor],
    lam: float,
    *,
    grid_size: int = 256,
    bounds: Union[Sequence[float], Sequence[Sequence[float]]] = (-3.0, 3.0),
    support_threshold: float = 1e-3,
    batch_size: int = 16384,
) -> TiltedOracle:
    """Grid density of p*(x) proportional to p_0(x) exp(r(x) / lam) for a 2D mixture ``gmm`` (t = 0).

    lam > 0 (lam = inf gives p* = p_0). Computed in log space, so small lam does not overflow.
    """
    if not lam > 0:
        raise ValueError(f"lam must be positive (lam = inf gives the base distribution), got {lam}")
    if getattr(gmm, "dim", 2) != 2:
        raise ValueError(f"tilted_oracle works on a 2D grid; the mixture has dimension {gmm.dim}")
    if grid_size < 2:
        raise ValueError(f"grid_size must be >= 2, got {grid_size}")
    (x_lo, x_hi), (y_lo, y_hi) = _bounds(bounds)
    xs = torch.linspace(x_lo, x_hi, grid_size, dtype=torch.float64)
    ys = torch.linspace(y_lo, y_hi, grid_size, dtype=torch.float64)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)  # (G*G, 2), row-major in [iy, ix]
    cell_area = float((xs[1] - xs[0]) * (ys[1] - ys[0]))

    log_p0, r = [], []
    with torch.no_grad():
        for start in range(0, pts.shape[0], batch_size):
            chunk = pts[start : start + batch_size]
            log_p0.append(gmm.log_prob(chunk, 0.0).to(torch.float64))
            r.append(reward(chunk.to(torch.float32)).to(torch.float64))
    log_p0, r = torch.cat(log_p0), torch.cat(r)

    base_mass = float(torch.exp(torch.logsumexp(log_p0, 0)) * cell_area)
    if not 0.99 <= base_mass <= 1.01:
        logger.warning(
            "the grid holds %.4f of p_0's mass (should be ~1): widen bounds or refine grid_size", base_mass
        )
    log_tilt = log_p0 + (r / lam if math.isfinite(lam) else torch.zeros_like(r))
    p_star = torch.softmax(log_tilt, 0)  # probabilities of the grid cells
    p_base = torch.softmax(log_p0, 0)
    on_support = log_p0 >= log_p0.max() + math.log(support_threshold)
    shape = (grid_size, grid_size)
    return TiltedOracle(
        xs=xs,
        ys=ys,
        density=(p_star / cell_area).reshape(shape),
        base_density=(p_base / cell_area).reshape(shape),
        reward=r.reshape(shape),
        lam=float(lam),
        expected_reward=float((p_star * r).sum()),
        base_expected_reward=float((p_base * r).sum()),
        best_reward_on_support=float(r[on_support].max()),
        base_mass_on_grid=base_mass,
        cell_area=cell_area,
    )


# --------------------------------------------------------------------------------------------
# Realism and diversity
# --------------------------------------------------------------------------------------------
def realism(samples: Tensor, gmm) -> float:
    """Mean log p_0(x) of the samples under the known data mixture (higher is more realistic)."""
    samples = samples.detach()
    if not bool(torch.isfinite(samples).all()):
        raise ValueError("samples contain NaN or inf; check the sampler that produced them")
    with torch.no_grad():
        return float(gmm.log_prob(samples.to(torch.float64), 0.0).mean())


def diversity(x: Tensor) -> float:
    """Mean pairwise Euclidean distance over pairs i != j (trailing dims flattened). x: (n, ...), n >= 2."""
    x = _flat64(x, "x")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"diversity needs at least 2 samples, got {n}")
    return _pairwise_distance_sum(x, x) / (n * (n - 1))


# --------------------------------------------------------------------------------------------
# Classifier-feature metrics (MNIST)
# --------------------------------------------------------------------------------------------
def _sqrtm_psd(a: Tensor) -> Tensor:
    """Symmetric square root of a symmetric PSD matrix via eigh (negative round-off eigenvalues -> 0)."""
    evals, evecs = torch.linalg.eigh((a + a.T) / 2)
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    """Frechet distance of Gaussians fitted to two feature sets. feats: (n, F), (m, F).

    d^2 = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2})  (covariances with 1/(n-1)).
    """
    a, b = _flat64(feats_a, "feats_a"), _flat64(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must have the same width, got {a.shape[1]} and {b.shape[1]}")
    if min(a.shape[0], b.shape[0]) < 2:
        raise ValueError("frechet_distance needs at least 2 samples in each set to estimate a covariance")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], a.shape[1]), torch.cov(b.T).reshape(b.shape[1], b.shape[1])
    root_a = _sqrtm_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    tr_cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    d2 = (mu_a - mu_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * tr_cross
    return max(float(d2), 0.0)


def _batched(images: Tensor, fn: Callable[[Tensor], Tensor], batch_size: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([fn(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)])


def classifier_features(images: Tensor, evaluator: nn.Module, batch_size: int = 512) -> Tensor:
    """evaluator.features(images): (B, F) float64, images (B, 1, 28, 28) in [-1, 1]."""
    check_mnist_images(images, "classifier_features")
    return _batched(images, evaluator.features, batch_size).to(torch.float64)


def classifier_fid(images: Tensor, reference_images: Tensor, evaluator: nn.Module, batch_size: int = 512) -> float:
    """Frechet distance between evaluator features of ``images`` and of ``reference_images``."""
    return frechet_distance(
        classifier_features(images, evaluator, batch_size), classifier_features(reference_images, evaluator, batch_size)
    )


def evaluator_accuracy(images: Tensor, evaluator: nn.Module, target_class: int, batch_size: int = 512) -> float:
    """Fraction of images the evaluator classifies as ``target_class`` (argmax of its logits)."""
    check_mnist_images(images, "evaluator_accuracy")
    if not 0 <= target_class <= 9:
        raise ValueError(f"target_class must be a digit 0..9, got {target_class}")
    logits = _batched(images, evaluator, batch_size)
    return float((logits.argmax(dim=1) == target_class).to(torch.float64).mean())


def feature_diversity(images: Tensor, evaluator: nn.Module, batch_size: int = 512) -> float:
    """Mean pairwise Euclidean distance of evaluator features (diversity as the evaluator sees it)."""
    return diversity(classifier_features(images, evaluator, batch_size))
