"""Velocity -> x0 / noise / score against the exact Gaussian-mixture oracle; steps, grids, errors."""

import pytest
import torch

from toyflow import dynamics as dyn
from toyflow import interpolants as I
from toyflow.models import GaussianMixtureFlow
from conftest import eight_gaussians

ALL = [I.Linear(), I.VP(), I.Cosine(), I.Polynomial(2)]


def _points(n=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 2.5 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = 0.02 + 0.96 * torch.rand(n, generator=g, dtype=torch.float64)
    return x, t


def _full_cov_gmm(schedule):
    g = torch.Generator().manual_seed(3)
    A = torch.randn(3, 2, 2, generator=g, dtype=torch.float64)
    cov = A @ A.transpose(1, 2) * 0.1 + 0.05 * torch.eye(2, dtype=torch.float64)
    means = torch.randn(3, 2, generator=g, dtype=torch.float64)
    return GaussianMixtureFlow(means, None, [0.2, 0.5, 0.3], schedule, covariances=cov)


@pytest.mark.parametrize("sched", ALL, ids=repr)
@pytest.mark.parametrize("kind", ["isotropic", "full"])
def test_x0_and_score_from_velocity_match_oracle(sched, kind):
    gmm = eight_gaussians(sched) if kind == "isotropic" else _full_cov_gmm(sched)
    x, t = _points()
    u = gmm.velocity(x, t)
    torch.testing.assert_close(dyn.x0_from_velocity(x, u, t, sched), gmm.x0(x, t), rtol=0, atol=1e-8)
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(gmm.log_prob(xr, t).sum(), xr)
    torch.testing.assert_close(dyn.score_from_velocity(x, u, t, sched), grad, rtol=0, atol=1e-8)
    torch.testing.assert_close(gmm.score(x, t), grad, rtol=0, atol=1e-8)
    # x0 and noise predictions reconstruct x: alpha x0 + sigma x1 = x
    c = sched(t)
    x1 = dyn.noise_from_velocity(x, u, t, sched)
    torch.testing.assert_close(c.alpha[:, None] * gmm.x0(x, t) + c.sigma[:, None] * x1, x, rtol=0, atol=1e-9)
    torch.testing.assert_close(dyn.velocity_from_x0(x, gmm.x0(x, t), t, sched), u, rtol=0, atol=1e-8)


def test_linear_closed_forms():
    x, t = _points()
    u = torch.randn_like(x)
    torch.testing.assert_close(dyn.x0_from_velocity(x, u, t, "linear"), x - t[:, None] * u)
    torch.testing.assert_close(dyn.noise_from_velocity(x, u, t, "linear"), x + (1 - t[:, None]) * u)


def test_full_covariance_log_prob_normalises():
    gmm = _full_cov_gmm(I.Linear())
    xs = torch.linspace(-6, 6, 301, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
    for t in (0.0, 0.5):
        mass = gmm.log_prob(grid, t).exp().sum() * (xs[1] - xs[0]) ** 2
        assert mass.item() == pytest.approx(1.0, abs=2e-3)


def test_x0_at_t0_is_identity_and_time_grids():
    x = torch.randn(5, 2)
    assert torch.equal(dyn.x0_from_velocity(x, torch.randn(5, 2), torch.zeros(5), "vp"), x)
    g = dyn.time_grid("uniform", 4)
    torch.testing.assert_close(g, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    e = dyn.time_grid("exp", 4, dtype=torch.float64)
    k = torch.arange(4, dtype=torch.float64)
    torch.testing.assert_close(e[:-1], torch.sqrt(1 - (k / 4) ** 2))
    assert e[-1] == 0 and bool((e[1:] < e[:-1]).all())


def test_diffusion_schedules():
    t = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(dyn.diffusion_schedule("square", 3.0)(t), 3 * t**2)
    torch.testing.assert_close(dyn.diffusion_schedule("constant", 2.0)(t), torch.full_like(t, 2.0))
    torch.testing.assert_close(dyn.diffusion_schedule("linear", 2.0)(t), 2 * t)
    torch.testing.assert_close(dyn.diffusion_schedule("zero")(t), torch.zeros_like(t))
    torch.testing.assert_close(dyn.diffusion_schedule("sigma", 2.0, schedule="linear")(t), 2 * t)
    assert dyn.diffusion_schedule(lambda s: s + 1)(t)[0] == 1
    with pytest.raises(ValueError, match="unknown diffusion"):
        dyn.diffusion_schedule("cubic")
    with pytest.raises(ValueError, match="needs the interpolant"):
        dyn.diffusion_schedule("sigma", 1.0)


def test_sde_step_with_zero_noise_and_g_is_euler():
    x, t = _points(50)
    u = torch.randn_like(x)
    t_next = t - 0.01
    a = dyn.step(x, u, t, t_next, "linear", g=torch.zeros(50, dtype=x.dtype), noise=torch.zeros_like(x))
    torch.testing.assert_close(a, x + (t_next - t)[:, None] * u)


def test_final_step_is_x0_and_finite_for_vp():
    gmm = eight_gaussians(I.VP())
    x = torch.randn(64, 2, dtype=torch.float64)
    t = torch.full((64,), 0.1, dtype=torch.float64)
    u = gmm.velocity(x, t)
    out = dyn.step(x, u, t, torch.zeros(64, dtype=torch.float64), "vp", g=3 * t**2, noise=torch.randn_like(x))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, gmm.x0(x, t))


def test_renoise_matches_marginal_moments():
    """Forward kernel: x_s ~ alpha_s x0 + sigma_s z when x_t ~ alpha_t x0 + sigma_t z (x0 fixed at 1)."""
    vp = I.VP()
    g = torch.Generator().manual_seed(0)
    n = 200_000
    t, s = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    ct, cs = vp(t), vp(s)
    xt = ct.alpha + ct.sigma * torch.randn(n, 1, generator=g, dtype=torch.float64)
    xs = dyn.renoise(xt, t, s, vp, torch.randn(n, 1, generator=g, dtype=torch.float64))
    assert xs.mean().item() == pytest.approx(cs.alpha.item(), abs=5e-3)
    assert xs.std().item() == pytest.approx(cs.sigma.item(), abs=5e-3)


@pytest.mark.parametrize("shape", [(2,), (1, 28, 28)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sde", [False, True])
def test_sample_shapes_dtypes(shape, dtype, sde):
    D = int(torch.tensor(shape).prod())
    gmm = GaussianMixtureFlow(torch.zeros(2, D), [0.5, 1.0], shape=shape)
    g = torch.Generator().manual_seed(0)
    traj = dyn.sample(gmm, torch.randn((4,) + shape, dtype=dtype, generator=g), "linear", steps=5, sde=sde,
                      generator=g, record=True)
    assert traj.x.shape == (4,) + shape and traj.x.dtype == dtype
    assert traj.xs.shape == (6, 4) + shape and traj.x0s.shape == (5, 4) + shape
    assert traj.velocities.shape == (5, 4) + shape and traj.nfe == 5
    torch.testing.assert_close(traj.xs[-1], traj.x)


def test_heun_is_more_accurate_on_closed_form_ode():
    """Single Gaussian N(m, s^2): the Linear-path ODE maps x1 to m + s x1 exactly."""
    m, s = 1.5, 0.5
    gmm = GaussianMixtureFlow(torch.tensor([[m]]), s)
    x1 = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    errs = {}
    for solver in ("euler", "heun"):
        # stop at t = 0.05 so the x0_hat final step does not hide the solver's error
        grid = torch.linspace(1, 0.05, 11, dtype=torch.float64)
        x = dyn.sample(gmm, x1, "linear", time_grid=grid, solver=solver).x
        c = I.Linear()(torch.tensor(0.05, dtype=torch.float64))
        exact = c.alpha * m + torch.sqrt(c.alpha**2 * s**2 + c.sigma**2) * x1
        errs[solver] = (x - exact).abs().max().item()
    assert errs["heun"] < errs["euler"] / 5, errs


def test_ode_same_noise_same_result_and_seeded_sde():
    gmm = eight_gaussians()
    x1 = torch.randn(100, 2, dtype=torch.float64)
    a = dyn.sample(gmm, x1, "linear", steps=10, sde=True, generator=torch.Generator().manual_seed(5)).x
    b = dyn.sample(gmm, x1, "linear", steps=10, sde=True, generator=torch.Generator().manual_seed(5)).x
    c = dyn.sample(gmm, x1, "linear", steps=10, sde=True, generator=torch.Generator().manual_seed(6)).x
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_input_errors():
    gmm = eight_gaussians()
    x = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dyn.x0_from_velocity(x, x, torch.full((4,), 1.2, dtype=torch.float64), "linear")
    with pytest.raises(ValueError, match="shape"):
        dyn.x0_from_velocity(x, x, torch.full((3,), 0.5, dtype=torch.float64), "linear")
    with pytest.raises(ValueError, match="shape"):
        gmm.velocity(torch.randn(4, 3, dtype=torch.float64), 0.5)
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        dyn.sample(lambda x, t: x * float("nan"), x, "linear", steps=3)
    with pytest.raises(ValueError, match="returned shape"):
        dyn.sample(lambda x, t: x[:, :1], x, "linear", steps=3)
    with pytest.raises(ValueError, match="unknown diffusion"):
        dyn.sample(gmm, x, "linear", sde=True, diffusion="cubic")
    with pytest.raises(ValueError, match="unknown interpolant"):
        dyn.sample(gmm, x, "rectified")
    with pytest.raises(ValueError, match="unknown time grid"):
        dyn.sample(gmm, x, "linear", time_grid="log")
    with pytest.raises(ValueError, match="sigma_t = 0"):
        dyn.score_from_velocity(x, x, torch.zeros(4, dtype=torch.float64), "linear")


def test_linear_snr_grid_matches_linear_noise_levels():
    vp, lin = I.VP(), I.Linear()
    g = dyn.time_grid("linear-snr", 8, dtype=torch.float64, schedule=vp)
    u = dyn.time_grid("uniform", 8, dtype=torch.float64)
    c, cl = vp(g[1:-1]), lin(u[1:-1])
    torch.testing.assert_close(c.alpha / c.sigma, cl.alpha / cl.sigma, rtol=1e-9, atol=0)
    assert g[0] == 1 and g[-1] == 0
    torch.testing.assert_close(dyn.time_grid("linear-snr", 8, dtype=torch.float64, schedule=lin), u)
    with pytest.raises(ValueError, match="needs the interpolant"):
        dyn.time_grid("linear-snr", 8)


def test_python_float_time_keeps_float64_precision():
    gmm = eight_gaussians()
    x = torch.randn(50, 2, dtype=torch.float64)
    u = gmm.velocity(x, 0.9)
    torch.testing.assert_close(dyn.score_from_velocity(x, u, 0.9, "linear"), gmm.score(x, 0.9), rtol=0, atol=1e-10)
