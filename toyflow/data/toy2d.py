"""Toy 2D data sets, scaled to lie roughly inside [-3, 3]^2 with a spread of order 1.

    sample(name, n, generator=g) -> (n, 2)

Names: see :data:`DATASETS`. All randomness comes from the ``generator`` argument, so the same
seed gives the same points. ``"8gaussians"`` is exactly the mixture returned by
:func:`eight_gaussians_gmm`, so samples and the Gaussian-mixture oracle describe one distribution.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = [
    "DATASETS",
    "sample",
    "gaussian_mixture",
    "eight_gaussians_means",
    "eight_gaussians_gmm",
    "EIGHT_GAUSSIANS_RADIUS",
    "EIGHT_GAUSSIANS_STD",
]

DATASETS: tuple[str, ...] = ("8gaussians", "checkerboard", "moons", "spirals", "rings")

EIGHT_GAUSSIANS_RADIUS: float = 2.0
EIGHT_GAUSSIANS_STD: float = 0.1


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    return n


def _check_generator(generator: Optional[torch.Generator]) -> torch.Generator:
    if generator is None:
        raise ValueError(
            "pass generator=torch.Generator().manual_seed(seed); toyflow draws random numbers only "
            "through an explicit generator so results are reproducible"
        )
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def gaussian_mixture(
    means: Union[Tensor, Sequence],
    stds: Union[float, Tensor, Sequence],
    weights: Union[None, Tensor, Sequence],
    n: int,
    generator: torch.Generator,
    *,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """n draws of sum_k w_k N(mu_k, s_k^2 I).

    means: (K, D); stds: a number or (K,); weights: (K,) non-negative (normalised here) or None
    for uniform. Returns (n, D).
    """
    _check_n(n)
    generator = _check_generator(generator)
    means = torch.as_tensor(means, dtype=torch.float64)
    if means.dim() != 2:
        raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
    K, D = means.shape
    stds = torch.as_tensor(stds, dtype=torch.float64)
    if stds.dim() == 0:
        stds = stds.expand(K)
    if stds.shape != (K,) or bool((stds < 0).any()):
        raise ValueError(f"stds must be a non-negative number or shape (K,) = ({K},), got {stds}")
    if weights is None:
        weights = torch.full((K,), 1.0 / K, dtype=torch.float64)
    weights = torch.as_tensor(weights, dtype=torch.float64)
    if weights.shape != (K,) or bool((weights < 0).any()) or not float(weights.sum()) > 0:
        raise ValueError(f"weights must be (K,) = ({K},) non-negative with a positive sum, got {weights}")
    if n == 0:
        return torch.zeros(0, D, dtype=dtype)
    k = torch.multinomial(weights / weights.sum(), n, replacement=True, generator=generator)
    z = torch.randn(n, D, generator=generator, dtype=torch.float64)
    return (means[k] + stds[k, None] * z).to(dtype)


def eight_gaussians_means(radius: float = EIGHT_GAUSSIANS_RADIUS) -> Tensor:
    """(8, 2) means at angles 2 pi k / 8, k = 0..7, on a circle of ``radius`` (mode 0 at (radius, 0))."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)


def eight_gaussians_gmm(
    std: float = EIGHT_GAUSSIANS_STD,
    radius: float = EIGHT_GAUSSIANS_RADIUS,
    weights: Union[None, Tensor, Sequence] = None,
    schedule=None,
):
    """The "8gaussians" data set as an exact :class:`~toyflow.models.gmm.GaussianMixtureFlow`.

    p_0 = sum_k w_k N(mu_k, std^2 I), mu_k = radius (cos 2 pi k/8, sin 2 pi k/8); weights default uniform.
    """
    from toyflow.models.gmm import GaussianMixtureFlow  # local: data loading must not need the models

    return GaussianMixtureFlow(eight_gaussians_means(radius), float(std), weights, schedule)


_EIGHT_GAUSSIANS: dict = {}  # means, stds and weights, built once (the training loop draws a batch per step)


def _eight_gaussians(n: int, g: torch.Generator) -> Tensor:
    # gaussian_mixture(eight_gaussians_means(), EIGHT_GAUSSIANS_STD, None, n, g, dtype=torch.float64)
    # without re-checking its constant arguments on every call: the same draws, bit for bit
    if not _EIGHT_GAUSSIANS:
        _EIGHT_GAUSSIANS.update(means=eight_gaussians_means(), stds=torch.full((8, 1), EIGHT_GAUSSIANS_STD, dtype=torch.float64),
                                weights=torch.full((8,), 1.0 / 8, dtype=torch.float64) / 1.0)
    c = _EIGHT_GAUSSIANS
    k = torch.multinomial(c["weights"], n, replacement=True, generator=g)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return c["means"][k] + c["stds"][k] * z


def _checkerboard(n: int, g: torch.Generator) -> Tensor:
    """Uniform on the 8 dark squares of a 4x4 board of unit squares covering [-2, 2]^2."""
    x = 4 * torch.rand(n, generator=g, dtype=torch.float64) - 2  # column position in [-2, 2)
    y = 2 * torch.rand(n, generator=g, dtype=torch.float64)  # in [0, 2): two squares of each column
    # in column floor(x), the dark squares are those whose (column + row) index is even
    row = torch.floor(y) * 2 + (torch.floor(x) % 2)  # rows 0..3, parity matched to the column
    y = row + (y - torch.floor(y)) - 2
    return torch.stack([x, y], dim=1)


def _moons(n: int, g: torch.Generator, noise: float = 0.05) -> Tensor:
    """Two interleaved half circles (centred, scaled by 1.5) with Gaussian noise."""
    n_upper = n // 2
    theta = math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    upper = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    lower = torch.stack([1 - torch.cos(theta), 0.5 - torch.sin(theta)], dim=1)
    pts = torch.cat([upper[:n_upper], lower[n_upper:]], dim=0)
    pts = pts + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return 1.5 * (pts - torch.tensor([0.5, 0.25], dtype=torch.float64))


def _spirals(n: int, g: torch.Generator, noise: float = 0.05) -> Tensor:
    """Two interleaved spiral arms, r = 0.8 theta / pi, theta in [0, 3 pi], about uniform along the arc."""
    theta = 3 * math.pi * torch.sqrt(torch.rand(n, generator=g, dtype=torch.float64))
    r = 0.8 * theta / math.pi
    pts = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)
    sign = torch.ones(n, 1, dtype=torch.float64)
    sign[n // 2 :] = -1.0  # second arm: the first rotated by pi
    return sign * pts + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)


def _rings(n: int, g: torch.Generator, radii: Sequence[float] = (0.75, 1.5, 2.25), noise: float = 0.08) -> Tensor:
    """Concentric rings; points per ring proportional to its radius (uniform density along the rings)."""
    radii_t = torch.tensor(radii, dtype=torch.float64)
    ring = torch.multinomial(radii_t / radii_t.sum(), n, replacement=True, generator=g)
    theta = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    r = radii_t[ring]
    pts = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)
    return pts + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)


def sample(name: str, n: int, *, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor:
    """n points of the 2D data set ``name`` (one of :data:`DATASETS`): (n, 2), rows in random order."""
    makers = {
        "8gaussians": _eight_gaussians,
        "checkerboard": _checkerboard,
        "moons": _moons,
        "spirals": _spirals,
        "rings": _rings,
    }
    if name not in makers:
        raise ValueError(f"unknown 2D data set {name!r}; valid names: {', '.join(DATASETS)}")
    _check_n(n)
    generator = _check_generator(generator)
    if n == 0:
        return torch.zeros(0, 2, dtype=dtype)
    pts = makers[name](n, generator)
    order = torch.randperm(n, generator=generator)  # mix the classes (moons, spirals) in row order
    return pts[order].to(dtype)
