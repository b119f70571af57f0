"""Interpolant formulas: derivatives, SNR inversion, and the exact Linear -> VP conversion."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toyflow import interpolants as I
from conftest import eight_gaussians

ALL = [I.Linear(), I.VP(), I.Cosine(), I.Polynomial(2), I.Polynomial(3.5)]


@pytest.mark.parametrize("sched", ALL, ids=repr)
def test_derivatives_match_autodiff(sched):
    t = torch.linspace(0.01, 0.99, 57, dtype=torch.float64)
    d_alpha = torch.func.vmap(torch.func.jacrev(lambda s: sched.coefficients(s).alpha))(t)
    d_sigma = torch.func.vmap(torch.func.jacrev(lambda s: sched.coefficients(s).sigma))(t)
    c = sched(t)
    torch.testing.assert_close(c.d_alpha, d_alpha, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c.d_sigma, d_sigma, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("sched", ALL, ids=repr)
def test_boundary_values(sched):
    c = sched(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert c.alpha[0] == 1 and c.sigma[0] == 0
    assert c.sigma[1] == pytest.approx(1.0, abs=1e-4)  # VP: sqrt(1 - exp(-10.05))
    assert c.alpha[1] < 0.01  # VP ends at exp(-10.05 / 2), the others at 0


@pytest.mark.parametrize("sched", ALL, ids=repr)
@settings(max_examples=60, deadline=None)
@given(t=st.floats(min_value=1e-4, max_value=1 - 1e-4))
def test_snr_inverse_round_trip(sched, t):
    tt = torch.tensor([t], dtype=torch.float64)
    c = sched(tt)
    assert sched.snr_inverse(c.alpha / c.sigma).item() == pytest.approx(t, abs=1e-9)


def test_linear_snr_inverse_closed_form():
    rho = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(I.Linear().snr_inverse(rho), 1 / (1 + rho))


def test_vp_defaults_and_formula():
    vp = I.VP()
    assert (vp.beta_min, vp.beta_max) == (0.1, 20.0)
    t = torch.tensor([0.3], dtype=torch.float64)
    T = 0.5 * 0.09 * 19.9 + 0.3 * 0.1
    assert vp(t).alpha.item() == pytest.approx(math.exp(-T / 2), rel=1e-14)
    assert vp(t).sigma.item() == pytest.approx(math.sqrt(1 - math.exp(-T)), rel=1e-14)


@pytest.mark.parametrize("target", [I.VP(), I.Cosine(), I.Polynomial(2)], ids=repr)
def test_convert_exact_gmm_velocity(target):
    """convert(exact Linear GMM velocity) equals the exact target-path GMM velocity (float64)."""
    lin = I.Linear()
    g_lin = eight_gaussians(lin)
    g_tgt = g_lin.with_schedule(target)
    converted = I.convert(g_lin, source=lin, target=target)
    gen = torch.Generator().manual_seed(0)
    x = 2.5 * torch.randn(4000, 2, generator=gen, dtype=torch.float64)
    t = torch.linspace(0.02, 0.98, 4000, dtype=torch.float64)
    err = (converted(x, t) - g_tgt.velocity(x, t)).abs().max().item()
    assert err <= 1e-9, err


def test_convert_round_trip_and_identity():
    lin, vp = I.Linear(), I.VP()
    g = eight_gaussians(lin)
    assert I.convert(g, lin, I.Linear()) is g
    back = I.convert(I.convert(g, lin, vp), vp, lin)
    x = torch.randn(100, 2, dtype=torch.float64)
    t = torch.linspace(0.05, 0.95, 100, dtype=torch.float64)
    torch.testing.assert_close(back(x, t), g.velocity(x, t), rtol=1e-8, atol=1e-9)


def test_convert_on_image_shapes():
    lin, vp = I.Linear(), I.VP()
    model = lambda x, t: x * t[:, None, None, None]  # noqa: E731
    u = I.convert(model, lin, vp)(torch.randn(3, 1, 28, 28), torch.full((3,), 0.5))
    assert u.shape == (3, 1, 28, 28) and u.dtype == torch.float32


def test_errors():
    with pytest.raises(ValueError, match="unknown interpolant"):
        I.get("vq")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        I.Linear()(torch.tensor([1.5]))
    with pytest.raises(ValueError, match="NaN"):
        I.VP()(torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="beta_min"):
        I.VP(beta_min=5, beta_max=1)
    assert isinstance(I.get("polynomial-3"), I.Polynomial)
