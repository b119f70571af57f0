"""Interpolants are values: == and hash by type and parameters; convert uses value equality, so a
user interpolant with a parameter converts exactly (checked against the Gaussian-mixture oracle)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from toyflow import interpolants as I
from toyflow.models.gmm import GaussianMixtureFlow

F64 = dict(dtype=torch.float64)


class Power(I.Interpolant):
    """alpha = 1 - t^p, sigma = t^p (p = 1 is Linear): a user path with a parameter and no __eq__ / __repr__."""

    def __init__(self, p: float):
        self.p = p

    def coefficients(self, t):
        s = t**self.p
        ds = self.p * t ** (self.p - 1)
        return I.Coefficients(alpha=1 - s, sigma=s, d_alpha=-ds, d_sigma=ds)

    def snr_inverse(self, rho):
        return (1 / (1 + rho)) ** (1 / self.p)


@dataclasses.dataclass(frozen=True)
class Shifted(I.Interpolant):
    """A dataclass user path: alpha = 1 - t, sigma = t + c t (1 - t)."""

    c: float = 0.5

    def coefficients(self, t):
        return I.Coefficients(alpha=1 - t, sigma=t + self.c * t * (1 - t), d_alpha=-torch.ones_like(t),
                              d_sigma=1 + self.c * (1 - 2 * t))


def test_builtins_compare_and_hash_by_parameters():
    assert I.VP() == I.VP(0.1, 20) == I.VP(beta_min=0.1, beta_max=20.0) and hash(I.VP()) == hash(I.VP(0.1, 20))
    assert I.VP() != I.VP(beta_max=10.0) and I.Polynomial(2) != I.Polynomial(3) and I.Polynomial(1) != I.Linear()
    assert len({I.Linear(), I.Linear(), I.Cosine(), I.Polynomial(2), I.Polynomial(2.0)}) == 3
    assert repr(I.VP()) == "VP(beta_min=0.1, beta_max=20)" and repr(I.Polynomial(2)) == "Polynomial(n=2)"
    assert I.Polynomial(2).name == "polynomial-2" and I.get("polynomial-2") == I.Polynomial(2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        I.VP().beta_min = 1.0
    with pytest.raises(ValueError, match="beta_min < beta_max"):
        I.VP(1.0, 0.5)


def test_user_subclasses_compare_by_parameters():
    assert Power(2) == Power(2.0) and Power(1) != Power(2) and hash(Power(2)) == hash(Power(2))
    assert repr(Power(2)) == "Power(p=2)" and Shifted(0.5) == Shifted() != Shifted(0.2)
    assert Power(1) != I.Linear()  # another type is another path, even with the same formulas


def test_convert_uses_value_equality():
    model = GaussianMixtureFlow(torch.zeros(1, 2, **F64), torch.ones(1, **F64))
    assert I.convert(model, Power(2), Power(2.0)) is model and I.convert(model, "vp", I.VP(0.1, 20)) is model
    assert isinstance(I.convert(model, Power(1), Power(2)), I.ConvertedVelocity)


@pytest.mark.parametrize("source, target", [(Power(1), Power(2)), (Power(2), Power(0.5)), (I.Linear(), Power(3)),
                                            (Power(2), I.VP())], ids=repr)
def test_user_path_with_a_parameter_converts_exactly(source, target):
    """convert(exact velocity on source) = exact velocity on target, for a 3-component mixture."""
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], **F64)
    stds = torch.tensor([0.3, 0.5, 0.4], **F64)
    weights = torch.tensor([0.5, 0.3, 0.2], **F64)
    oracle = GaussianMixtureFlow(means, stds, weights)
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), **F64) * 2
    t = torch.linspace(0.05, 0.95, 256, **F64)
    got = I.convert(oracle.with_schedule(source), source, target)(x, t)
    torch.testing.assert_close(got, oracle.with_schedule(target)(x, t), rtol=1e-9, atol=1e-9)
