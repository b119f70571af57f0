"""The diffusion's time: g^2 / g^2_DDPM (the eta ratio) at matched noise levels, moving a diffusion
schedule between paths, the "vp-snr" grid and ``diffusion_path`` in the samplers and the search."""

from __future__ import annotations

import math

import pytest
import torch

from toyflow import dynamics as dyn
from toyflow import interpolants, rewards, search
from toyflow.search._core import Context
from toyflow.search.options import SamplerOptions

torch.set_num_threads(1)

LIN, VP = interpolants.Linear(), interpolants.VP()
SQUARE = dyn.diffusion_schedule("square", 3.0)
R_GRID = torch.tensor([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4], dtype=torch.float64)  # VP's uniform grid, noisy end
F64 = dict(dtype=torch.float64)


@pytest.fixture(scope="module")
def task():
    return rewards.task("rare-mode")


# -- the eta ratio --------------------------------------------------------------------------------
def test_linear_square_closed_form():
    t = torch.linspace(0, 1, 101, **F64)
    torch.testing.assert_close(dyn.eta_ratio(LIN, SQUARE, t), 4.5 * t**3 * (1 - t), rtol=1e-12, atol=1e-15)


def test_vp_and_linear_values_at_matched_noise_levels():
    t_lin = dyn.noise_level(VP, R_GRID)
    assert [round(v, 3) for v in t_lin.tolist()] == [0.993, 0.983, 0.962, 0.922, 0.859, 0.773, 0.67]
    assert [round(v, 2) for v in dyn.eta_ratio(VP, SQUARE, R_GRID).tolist()] == [0.45, 0.33, 0.23, 0.15, 0.10, 0.06, 0.03]
    assert [round(v, 2) for v in dyn.eta_ratio(LIN, SQUARE, t_lin).tolist()] == [0.03, 0.07, 0.15, 0.28, 0.40, 0.47, 0.45]
    torch.testing.assert_close(dyn.noise_level(LIN, t_lin), t_lin)  # Linear's noise level is its time


@pytest.mark.parametrize("path", ["linear", "vp", "cosine", "polynomial-2"])
def test_ddpm_diffusion_is_twice_sigma_squared_times_the_log_snr_rate(path):
    sched = interpolants.get(path)
    t = torch.linspace(0.05, 0.95, 19, **F64)
    h = 1e-6
    log_ratio = lambda s: torch.log(sched(s).sigma / sched(s).alpha)  # noqa: E731
    fd = 2 * sched(t).sigma ** 2 * (log_ratio(t + h) - log_ratio(t - h)) / (2 * h)
    torch.testing.assert_close(dyn.ddpm_diffusion_squared(sched, t), fd, rtol=1e-7, atol=1e-9)


def test_ddpm_diffusion_closed_forms_and_ends():
    t = torch.linspace(0, 1, 11, **F64)
    torch.testing.assert_close(dyn.ddpm_diffusion_squared(VP, t), 0.1 + 19.9 * t)  # beta(t), also at t = 0
    lin = dyn.ddpm_diffusion_squared(LIN, t)
    assert lin[0] == 0 and math.isinf(lin[-1])
    torch.testing.assert_close(lin[1:-1], 2 * t[1:-1] / (1 - t[1:-1]))
    assert float(dyn.ddpm_diffusion_squared(VP, torch.zeros(1))) == pytest.approx(0.1, rel=1e-5)  # float32 too
    # conventions of the ratio: 0 where g = 0 (also at alpha = 0), inf where g > 0 and g^2_DDPM = 0
    const = dyn.diffusion_schedule("constant", 1.0)
    ends = torch.tensor([0.0, 1.0], **F64)
    assert dyn.eta_ratio(LIN, const, ends).tolist() == [math.inf, 0.0]
    assert dyn.eta_ratio(LIN, dyn.diffusion_schedule("zero"), ends).tolist() == [0.0, 0.0]


# -- transport between paths -----------------------------------------------------------------------
@pytest.mark.parametrize("source,target", [("linear", "vp"), ("vp", "linear"), ("linear", "cosine"), ("vp", "cosine")])
def test_transport_keeps_the_eta_ratio_and_is_the_scale_time_image(source, target):
    src, tgt = interpolants.get(source), interpolants.get(target)
    g = dyn.diffusion_schedule("square", 3.0)
    t = torch.linspace(0.02, 0.98, 49, **F64)
    # stay inside the source path's noise range (VP's ends at t_lin = 0.9935)
    t = t[dyn.noise_level(tgt, t) < 0.99]
    g_t = dyn.transport_diffusion(g, src, tgt)
    t_src = src.snr_inverse(tgt(t).alpha / tgt(t).sigma)
    torch.testing.assert_close(dyn.eta_ratio(tgt, g_t, t), dyn.eta_ratio(src, g, t_src), rtol=1e-10, atol=1e-14)
    # independently: x_tgt(r) = s_r x_src(t_r) maps the diffusion as g_tgt^2 = s^2 (dt/dr) g_src^2
    _, s, dt, _ = interpolants.ConvertedVelocity(None, src, tgt).source_time_and_scale(t)
    torch.testing.assert_close(g_t(t) ** 2, s**2 * dt * g(t_src) ** 2, rtol=1e-10, atol=1e-14)


def test_transport_round_trip_and_clamping():
    g = dyn.diffusion_schedule("square", 3.0)
    t = torch.linspace(0, 0.99, 100, **F64)  # the common noise range: t_lin <= 0.9935
    back = dyn.transport_diffusion(dyn.transport_diffusion(g, LIN, VP), VP, LIN)
    torch.testing.assert_close(back(t), g(t), rtol=1e-10, atol=1e-14)
    r = torch.linspace(0, 1, 101, **F64)  # Linear covers every noise level: vp -> linear -> vp everywhere
    back = dyn.transport_diffusion(dyn.transport_diffusion(g, VP, LIN), LIN, VP)
    torch.testing.assert_close(back(r[:-1]), g(r[:-1]), rtol=1e-10, atol=1e-14)
    # noisier than VP's r = 1 (Linear t > 0.9935), the ratio stays at VP's r = 1 value
    g_lin = dyn.transport_diffusion(g, VP, LIN)
    noisy = torch.tensor([0.995, 0.999, 0.99999], **F64)
    torch.testing.assert_close(dyn.eta_ratio(LIN, g_lin, noisy), torch.full((3,), 0.45, **F64), rtol=1e-12, atol=0)
    assert dyn.transport_diffusion(g, VP, interpolants.VP()) is g  # same path: g itself (bit-identical)


def test_transport_to_linear_t1_raises_instead_of_nan():
    g_lin = dyn.transport_diffusion(SQUARE, VP, LIN)
    with pytest.raises(ValueError, match="vp-snr"):
        g_lin(torch.tensor([0.5, 1.0]))
    zero = dyn.transport_diffusion(dyn.diffusion_schedule("zero"), VP, LIN)  # ratio 0: g = 0, no error
    assert zero(torch.tensor([1.0])).tolist() == [0.0]


class _NoSnrInverse(interpolants.Interpolant):
    def coefficients(self, t):
        return LIN.coefficients(t)


def test_paths_without_snr_inverse_get_a_clear_error():
    with pytest.raises(ValueError, match="snr_inverse"):
        dyn.transport_diffusion(SQUARE, _NoSnrInverse(), LIN)
    with pytest.raises(ValueError, match="snr_inverse"):
        dyn.time_grid("vp-snr", 5, schedule=_NoSnrInverse())


# -- the vp-snr grid -------------------------------------------------------------------------------
def test_vp_snr_grid():
    assert torch.equal(dyn.time_grid("vp-snr", 10, schedule=VP), dyn.time_grid("uniform", 10))
    t = dyn.time_grid("vp-snr", 10, schedule=LIN, **F64)
    torch.testing.assert_close(dyn.noise_level(LIN, t), dyn.noise_level(VP, torch.linspace(1, 0, 11, **F64)))
    assert 0.993 < float(t[0]) < 0.994 and float(t[-1]) == 0.0 and bool((t[1:] < t[:-1]).all())
    with pytest.raises(ValueError, match="needs the interpolant"):
        dyn.time_grid("vp-snr", 10)
    assert "vp-snr" in dyn.TIME_GRIDS


# -- diffusion_path in the samplers ------------------------------------------------------------------
def test_diffusion_path_none_is_todays_transition(task):
    gmm, reward = task
    for mode, grid in [("linear-sde", "uniform"), ("vp-sde", "uniform"), ("vp-sde", "exp"), ("linear-sde", "vp-snr")]:
        sampler = SamplerOptions(time_grid=grid)
        ctx = Context(gmm, reward, mode=mode, sampler=sampler, budget=10, steps=5, runs=1, shape=(2,),
                      generator=None, device="cpu", dtype=torch.float64)
        t64 = dyn.time_grid(grid, 5, **F64, schedule=ctx.schedule)
        t, tn = t64[:-1], t64[1:]
        g = dyn.diffusion_schedule("square", 3.0, ctx.schedule)(t)  # what Context computed before diffusion_path
        one, zero = torch.ones(5, 1, **F64), torch.zeros(5, 1, **F64)
        c = dyn.step(zero, zero, t, tn, ctx.schedule, g=g, noise=one)[:, 0]
        a = dyn.step(one, zero, t, tn, ctx.schedule, g=g, noise=zero)[:, 0]
        assert torch.equal(ctx.coef[:, 2], c) and torch.equal(ctx.coef[:, 0], a)
    for mode, own in [("linear-sde", "linear"), ("vp-sde", "vp")]:
        out = [search.run("svdd", gmm, reward, mode=mode, budget=30, steps=5, runs=4, shape=(2,),
                          generator=torch.Generator().manual_seed(0), **kw) for kw in ({}, {"diffusion_path": own})]
        assert torch.equal(out[0].samples, out[1].samples) and torch.equal(out[0].rewards, out[1].rewards)
    x1 = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), **F64)
    a, b = (dyn.sample(gmm, x1, "linear", steps=6, sde=True, generator=torch.Generator().manual_seed(2), **kw).x
            for kw in ({}, {"diffusion_path": "linear"}))
    assert torch.equal(a, b)


def test_crossing_moves_vp_stochasticity_to_the_linear_path(task):
    """linear-sde with diffusion_path="vp" on the vp-snr grid has vp-sde's eta ratio at every grid time."""
    gmm, reward = task
    ctx = Context(gmm, reward, mode="linear-sde", sampler=SamplerOptions(time_grid="vp-snr", diffusion_path="vp"),
                  budget=10, steps=10, runs=1, shape=(2,), generator=None, device="cpu", dtype=torch.float64)
    t = ctx.times[:-1]
    c, h = ctx.coef[:-1, 2], ctx.coef[:-1, 5]  # noise coefficient g sqrt(h) (the last step is x0_hat)
    ratio = (c**2 / h) / dyn.ddpm_diffusion_squared(LIN, t[:-1])
    torch.testing.assert_close(ratio, dyn.eta_ratio(VP, SQUARE, torch.linspace(1, 0, 11, **F64)[:-2]))


def _mode_freq(x, gmm):
    k = torch.cdist(x, gmm.means.to(x)).argmin(1)
    return torch.bincount(k, minlength=gmm.means.shape[0]).double() / x.shape[0]


def test_transported_sde_is_the_same_process(task):
    """Continuous time: the VP SDE with g = 3r^2 and the Linear SDE with that g transported (vp-snr grid,
    200 steps) give, from the same random numbers, nearly the same samples, and both keep the oracle's law."""
    gmm, _ = task
    n, steps = 3000, 200
    x1 = torch.randn(n, 2, generator=torch.Generator().manual_seed(7), **F64)

    def run(model, path, grid, dpath):
        return dyn.sample(model, x1, path, steps=steps, sde=True, time_grid=grid, diffusion_path=dpath,
                          generator=torch.Generator().manual_seed(8)).x

    on_vp = run(interpolants.convert(gmm, LIN, VP), VP, "uniform", None)
    on_lin = run(gmm, LIN, "vp-snr", "vp")
    own_lin = run(gmm, LIN, "vp-snr", None)  # a different process (Linear's own 3t^2)
    close = float((on_vp - on_lin).norm(dim=1).mean())
    assert close < 0.05 and float((on_vp - own_lin).norm(dim=1).mean()) > 0.15
    w = gmm.weights
    mean = (w[:, None] * gmm.means).sum(0)
    cov = (w[:, None, None] * (gmm.covariances + gmm.means[:, :, None] * gmm.means[:, None, :])).sum(0) - torch.outer(mean, mean)
    for x in (on_vp, on_lin):
        freq = _mode_freq(x, gmm)
        chi2 = float((n * (freq - w) ** 2 / w).sum())
        assert chi2 < 24.3, (freq, chi2)  # 7 dof, p = 0.001
        torch.testing.assert_close(x.mean(0), mean, atol=0.1, rtol=0)
        torch.testing.assert_close(torch.cov(x.T), cov, atol=0.2, rtol=0.1)


@pytest.mark.parametrize("mode,dpath", [("linear-sde", None), ("linear-sde", "vp"), ("vp-sde", None), ("vp-sde", "linear")])
@pytest.mark.parametrize("method", ["rbf", "smc", "sop"])
def test_search_crossings_keep_the_ledger(task, mode, dpath, method):
    gmm, reward = task
    res = search.run(method, gmm, reward, mode=mode, diffusion_path=dpath, time_grid="vp-snr", budget=60, steps=5,
                     runs=4, shape=(2,), generator=torch.Generator().manual_seed(3))
    assert bool((res.nfe <= 60).all()) and torch.equal(res.nfe, res.nfe_per_step.sum(1))
    assert bool(torch.isfinite(res.samples).all()) and res.sampler.diffusion_path == dpath


def test_diffusion_path_errors(task):
    gmm, reward = task
    with pytest.raises(ValueError, match="'linear', 'vp'"):
        SamplerOptions(diffusion_path="vp-path")
    with pytest.raises(ValueError, match="'linear', 'vp'"):
        search.run("bon", gmm, reward, mode="vp-sde", diffusion_path=3, budget=10, steps=5, shape=(2,))
    with pytest.raises(ValueError, match="'linear', 'vp'"):
        dyn.sample(gmm, torch.randn(4, 2), "linear", sde=True, diffusion_path="ddpm")
    # g from VP is infinite at Linear t = 1: the uniform grid starts there
    with pytest.raises(ValueError, match="vp-snr"):
        search.run("bon", gmm, reward, mode="linear-sde", diffusion_path="vp", budget=10, steps=5, shape=(2,))
    with pytest.raises(ValueError, match="vp-snr"):
        dyn.sample(gmm, torch.randn(4, 2), "linear", steps=5, sde=True, diffusion_path="vp")


def test_eta_ratio_plot():
    from toyflow import viz

    fig = viz.eta_ratio_plot(steps=5)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(labels) == 3 and labels[0].startswith("Linear ODE")
    fig = viz.eta_ratio_plot(("vp-sde", ("linear-sde", "vp")), time_grid="vp-snr", steps=5)
    with pytest.raises(ValueError, match="unknown mode"):
        viz.eta_ratio_plot(("ddpm",))
