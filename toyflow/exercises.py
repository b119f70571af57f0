"""Self-checks for the notebooks' exercises: one small function per exercise.

Each ``check_*`` takes the student's answer (a function, a class or a value) and compares it with
the Gaussian-mixture oracle, a toyflow reference or an invariant on fixed, seeded inputs. It

- prints ``"<title>: not attempted yet"`` when given ``None``, or when the answer raises
  ``NotImplementedError`` (the stubs in the notebooks do), so a student notebook runs cleanly;
- raises ``AssertionError`` with a message that says what is wrong when the answer is wrong;
- prints a short success line (starting with a check mark) when it is right.

The checks return None, so a notebook cell that ends with one shows only the printed line.

Time convention as everywhere in toyflow: t = 0 is data, t = 1 is noise, ``x_t = alpha_t x0 + sigma_t x1``.
The checks are grouped by notebook (``NB01`` ... ``NB07`` list their names, in order).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "ALL",
    "NOT_ATTEMPTED",
    "check_accuracy_with_error",
    "check_blend_velocity",
    "check_bon_expected_max",
    "check_converted_velocity",
    "check_cumulative_rounding",
    "check_diversity",
    "check_eta_ratio",
    "check_euler_sampler",
    "check_even_share",
    "check_fm_loss",
    "check_front_loaded",
    "check_gaussian_velocity",
    "check_greedy_nfe",
    "check_hacking_reward",
    "check_headroom",
    "check_image_x0",
    "check_ink_reward",
    "check_linear_pair",
    "check_noise_level",
    "check_proposals",
    "check_purity",
    "check_rbf_ledger",
    "check_reverse_drift",
    "check_sample_size",
    "check_scale",
    "check_score_from_velocity",
    "check_sde_step",
    "check_smc_weights",
    "check_snr_matched_time",
    "check_static_middle_heavy",
    "check_tilted_expectation",
    "check_vp_eta_ratio",
    "check_vp_snr_inverse",
    "check_x0_across_paths",
    "check_x0_hat",
]

NOT_ATTEMPTED = "not attempted yet"
F64 = torch.float64


# --------------------------------------------------------------------------------------------
# the wrapper: None / NotImplementedError -> "not attempted yet"; success -> a check-mark line
# --------------------------------------------------------------------------------------------
def _exercise(title: str):
    def deco(check: Callable[[object], str]):
        @functools.wraps(check)
        def wrapper(answer=None) -> None:
            if answer is None:
                print(f"{title}: {NOT_ATTEMPTED}")
                return
            try:
                detail = check(answer)
            except NotImplementedError:
                print(f"{title}: {NOT_ATTEMPTED} (the answer raises NotImplementedError)")
                return
            print(f"\u2713 {title}: {detail}")

        wrapper.title = title
        return wrapper

    return deco


def _close(got, want, tol: float, what: str) -> float:
    """Assert that tensors got and want agree to tol (max abs error, relative to max(1, |want|))."""
    if not torch.is_tensor(got):
        got = torch.as_tensor(got, dtype=F64)
    want = torch.as_tensor(want, dtype=F64)
    assert tuple(got.shape) == tuple(want.shape), f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    got = got.detach().to(F64)
    assert bool(torch.isfinite(got).all()), f"{what}: contains NaN or inf"
    err = float((got - want).abs().max() / max(1.0, float(want.abs().max())))
    assert err <= tol, f"{what}: off by {err:.2e} (relative to max(1, |expected|); allowed {tol:.0e})"
    return err


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _eight():
    from toyflow.data import toy2d

    return toy2d.eight_gaussians_gmm().to(F64)


def _points(gmm, t: float, n: int = 256, seed: int = 0) -> Tensor:
    return gmm.sample_marginal(n, t, generator=_gen(seed), dtype=F64)


TIMES = (0.9, 0.5, 0.2, 0.05)


# ============================================================================================
# 01 flow matching
# ============================================================================================
@_exercise("01.1 Linear interpolant and its target")
def check_linear_pair(fn) -> str:
    """fn(x0, x1, t) -> (x_t, target) for the Linear path: x_t = (1 - t) x0 + t x1 and the regression
    target d_alpha x0 + d_sigma x1 = x1 - x0; t is (B,). Compared with interpolants.Linear()."""
    from toyflow.interpolants import Linear

    g = _gen(1)
    x0, x1, t = torch.randn(64, 2, generator=g, dtype=F64), torch.randn(64, 2, generator=g, dtype=F64), torch.rand(64, generator=g, dtype=F64)
    c = Linear()(t)
    xt, target = fn(x0, x1, t)
    _close(xt, c.alpha[:, None] * x0 + c.sigma[:, None] * x1, 1e-10, "x_t")
    _close(target, c.d_alpha[:, None] * x0 + c.d_sigma[:, None] * x1,
           1e-10, "the target (sampling runs from t = 1 to 0, but the target is d/dt x_t, forward in t)")
    return "x_t and the target d x_t / dt match interpolants.Linear"


@_exercise("01.2 flow-matching loss")
def check_fm_loss(fn) -> str:
    """fn(velocity, x0, x1, t) -> scalar: mean over the batch of |velocity(x_t, t) - (x1 - x0)|^2
    (squared norm summed over coordinates). Checked on the 8-Gaussians oracle, and the exact velocity
    must beat a perturbed one (it is the minimiser)."""
    gmm = _eight()
    g = _gen(2)
    x0 = gmm.sample(512, generator=g, dtype=F64)
    x1 = torch.randn(512, 2, generator=g, dtype=F64)
    t = torch.rand(512, generator=g, dtype=F64) * 0.98 + 0.01
    xt = (1 - t)[:, None] * x0 + t[:, None] * x1
    want = (gmm.velocity(xt, t) - (x1 - x0)).pow(2).sum(1).mean()
    got = fn(gmm.velocity, x0, x1, t)
    got = torch.as_tensor(got, dtype=F64)
    assert got.dim() == 0, f"the loss must be a scalar, got shape {tuple(got.shape)}"
    _close(got, want, 1e-8, "the loss with the exact velocity (mean over the batch of the squared norm)")
    worse = fn(lambda x, t: 1.2 * gmm.velocity(x, t), x0, x1, t)
    assert float(worse) > float(got), "a perturbed velocity should have a larger loss than the exact one"
    return f"loss of the exact velocity {float(got):.3f} (the irreducible part), 1.2 x velocity {float(worse):.3f}"


@_exercise("01.3 velocity of one Gaussian by hand")
def check_gaussian_velocity(fn) -> str:
    """fn(x, t, mu, s) -> u_t(x) for p_0 = N(mu, s^2 I) on the Linear path (t a float in (0, 1)).
    Compared with GaussianMixtureFlow([mu], s).velocity to 1e-6."""
    from toyflow.models import GaussianMixtureFlow

    worst = 0.0
    for mu, s in (((1.0, -0.5), 0.3), ((0.0, 2.0), 1.0), ((-1.5, 0.5), 0.05)):
        gmm = GaussianMixtureFlow(torch.tensor([mu], dtype=F64), torch.tensor([s], dtype=F64))
        for t in TIMES:
            x = _points(gmm, t, 128, seed=3)
            got = fn(x, t, torch.tensor(mu, dtype=F64), s)
            worst = max(worst, _close(got, gmm.velocity(x, t), 1e-6, f"u_t for mu = {mu}, s = {s}, t = {t}"))
    return f"matches the oracle to {worst:.1e} for 3 Gaussians x 4 times"


@_exercise("01.4 x0_hat from the velocity")
def check_x0_hat(fn) -> str:
    """fn(x, u, t) -> x0_hat on the Linear path (t a float). With the exact velocity it must equal the
    oracle's posterior mean E[x0 | x_t] (GaussianMixtureFlow.x0) to 1e-6."""
    gmm = _eight()
    worst = 0.0
    for t in TIMES:
        x = _points(gmm, t, seed=4)
        worst = max(worst, _close(fn(x, gmm.velocity(x, t), t), gmm.x0(x, t), 1e-6, f"x0_hat at t = {t}"))
    return f"equals GaussianMixtureFlow's posterior mean to {worst:.1e}"


@_exercise("01.5 Euler sampler")
def check_euler_sampler(fn) -> str:
    """fn(velocity, x1, steps) -> x at t = 0: Euler steps on the uniform grid from t = 1 to 0
    (velocity(x, t) with t a (B,) tensor). Compared with dynamics.sample on the oracle."""
    from toyflow import dynamics

    gmm = _eight()
    x1 = torch.randn(256, 2, generator=_gen(5), dtype=F64)
    for steps in (1, 4, 20):
        got = fn(gmm.velocity, x1, steps)
        _close(got, dynamics.sample(gmm, x1, "linear", steps=steps).x, 1e-6,
               f"the sample after {steps} steps (go from t = 1 down to 0: x <- x + (t_next - t) u)")
    return "same samples as dynamics.sample for 1, 4 and 20 steps"


# ============================================================================================
# 02 ODE -> SDE
# ============================================================================================
@_exercise("02.1 score from the velocity")
def check_score_from_velocity(fn) -> str:
    """fn(x, u, t) -> grad log p_t(x) on the Linear path (t a float in (0, 1)). With the exact velocity
    it must equal the oracle's score (GaussianMixtureFlow.score) to 1e-6."""
    gmm = _eight()
    worst = 0.0
    for t in TIMES:
        x = _points(gmm, t, seed=6)
        worst = max(worst, _close(fn(x, gmm.velocity(x, t), t), gmm.score(x, t), 1e-6, f"the score at t = {t}"))
    return f"matches the oracle's score to {worst:.1e}"


@_exercise("02.2 one Euler-Maruyama step")
def check_sde_step(fn) -> str:
    """fn(x, u, score, t, h, g, z) -> the state at t - h: x - h u + h (g^2 / 2) score + g sqrt(h) z
    (floats t, h, g). Compared with dynamics.sde_step."""
    from toyflow import dynamics

    gmm = _eight()
    t, h = 0.6, 0.05
    x = _points(gmm, t, seed=7)
    u, s = gmm.velocity(x, t), gmm.score(x, t)
    z = torch.randn(x.shape, generator=_gen(8), dtype=F64)
    for g in (0.0, 1.0, 3.0):
        want = dynamics.sde_step(x, u, torch.full((len(x),), t, dtype=F64), torch.full((len(x),), t - h, dtype=F64),
                                 "linear", torch.full((len(x),), g, dtype=F64), z)
        _close(fn(x, u, s, t, h, g, z), want, 1e-10, f"the step with g = {g}")
    return "matches dynamics.sde_step for g = 0, 1, 3"


def _fokker_planck_residual(gmm, drift, t: float, g: float, x: Tensor) -> tuple[float, float]:
    """Max |d_tau p + div(b p) - (g^2/2) lap p| over x (reverse time tau = 1 - t) and the max |d_tau p|,
    by central finite differences of the oracle density in float64."""
    def p(y, tt):
        return gmm.log_prob(y, tt).exp()

    ht, hx = 1e-5, 1e-4
    dtau_p = -(p(x, t + ht) - p(x, t - ht)) / (2 * ht)
    div, lap = torch.zeros(len(x), dtype=F64), torch.zeros(len(x), dtype=F64)
    for d in range(x.shape[1]):
        e = torch.zeros_like(x)
        e[:, d] = hx
        fp = drift(x + e, t, g)[:, d] * p(x + e, t)
        fm = drift(x - e, t, g)[:, d] * p(x - e, t)
        div += (fp - fm) / (2 * hx)
        lap += (p(x + e, t) - 2 * p(x, t) + p(x - e, t)) / hx**2
    res = dtau_p + div - g**2 / 2 * lap
    return float(res.abs().max()), float(dtau_p.abs().max())


@_exercise("02.3 the SDE keeps the marginals (Fokker-Planck)")
def check_reverse_drift(fn) -> str:
    """fn(u, score, g) -> b, the drift of the sampling SDE per unit of *reverse* time tau = 1 - t
    (so that x <- x + h b + g sqrt(h) z). Builds b from the oracle's u and score and checks the
    Fokker-Planck equation d_tau p = -div(b p) + (g^2 / 2) lap p of the exact p_t at g = 0, 1, 2."""
    from toyflow.models import GaussianMixtureFlow

    gmm = GaussianMixtureFlow(torch.tensor([[1.0, 0.0], [-1.0, 0.5]], dtype=F64), torch.tensor([0.4, 0.6], dtype=F64),
                              torch.tensor([0.3, 0.7], dtype=F64))
    t = 0.5
    x = _points(gmm, t, 32, seed=9)

    def drift(y, tt, g):
        return fn(gmm.velocity(y, tt), gmm.score(y, tt), g)

    worst = 0.0
    for g in (0.0, 1.0, 2.0):
        res, scale = _fokker_planck_residual(gmm, drift, t, g, x)
        assert res <= 1e-4 * max(scale, 1.0), (
            f"with g = {g} your drift changes p_t: Fokker-Planck residual {res:.2e} (|d p / d tau| ~ {scale:.2e}); "
            "reverse time flips the sign of u, and the score term must cancel the diffusion's (g^2/2) lap p")
        worst = max(worst, res)
    return f"Fokker-Planck residual {worst:.1e} for g = 0, 1, 2: p_t is preserved"


@_exercise("02.4 proposals from one state")
def check_proposals(fn) -> str:
    """fn(model, x, t, t_next, eta, z) -> the M proposals from one state x (shape (M, 2), all rows equal),
    one SDE step with g = eta t^2 and noise z (M, 2). Compared with dynamics.step; at eta = 0 they must
    all coincide (the ODE offers nothing to choose)."""
    from toyflow import dynamics, metrics

    gmm = _eight()
    M, t, t_next = 32, 0.6, 0.5
    x = _points(gmm, t, 1, seed=10).expand(M, 2)
    z = torch.randn(M, 2, generator=_gen(11), dtype=F64)
    tb, nb = torch.full((M,), t, dtype=F64), torch.full((M,), t_next, dtype=F64)
    for eta in (0.0, 3.0):
        g = dynamics.diffusion_schedule("square", eta)(tb)
        want = dynamics.step(x, gmm.velocity(x, tb), tb, nb, "linear", g=g, noise=z)
        got = fn(gmm.velocity, x, t, t_next, eta, z)
        _close(got, want, 1e-10, f"the proposals with eta = {eta}")
    div = metrics.diversity(got)
    return f"matches dynamics.step; proposal diversity 0 for the ODE, {div:.2f} for eta = 3"


@_exercise("02.5 the eta ratio of g = eta t^2")
def check_eta_ratio(fn) -> str:
    """fn(t, eta) -> g^2 / g^2_DDPM for g = eta t^2 on the Linear path, where g^2_DDPM = 2 t / (1 - t)
    (t a (N,) tensor in (0, 1)). Compared with dynamics.eta_ratio."""
    from toyflow import dynamics

    t = torch.linspace(0.05, 0.95, 19, dtype=F64)
    for eta in (1.0, 3.0):
        want = dynamics.eta_ratio("linear", dynamics.diffusion_schedule("square", eta), t)
        _close(fn(t, eta), want, 1e-8, f"the eta ratio for eta = {eta}")
    return f"matches dynamics.eta_ratio; for eta = 3 the ratio peaks at {float(want.max()):.2f}"


# ============================================================================================
# 03 Linear -> VP
# ============================================================================================
def _vp_times():
    return torch.tensor([0.95, 0.8, 0.6, 0.4, 0.2, 0.05], dtype=F64)


@_exercise("03.1 SNR-matched Linear time")
def check_snr_matched_time(fn) -> str:
    """fn(r) -> the Linear time t_r with alpha/sigma equal to the VP path's at r (r a (N,) tensor).
    Checks that both paths then have the same noise level, and ConvertedVelocity agrees."""
    from toyflow import interpolants

    lin, vp = interpolants.Linear(), interpolants.VP()
    r = _vp_times()
    t = fn(r)
    cl, cv = lin(torch.as_tensor(t, dtype=F64)), vp(r)
    _close(cl.alpha / cl.sigma, cv.alpha / cv.sigma, 1e-8, "alpha/sigma of Linear at your t vs VP at r")
    conv = interpolants.ConvertedVelocity(lambda x, s: x, source=lin, target=vp)
    _close(t, conv.source_time_and_scale(r)[0], 1e-8, "t_r")
    return "same signal-to-noise ratio at every r: " + ", ".join(f"{float(a):.3f}" for a in t[:3]) + ", ..."


@_exercise("03.2 the scale s_r")
def check_scale(fn) -> str:
    """fn(r) -> s_r = sigma_VP(r) / sigma_Linear(t_r). Checks s_r sigma_Linear(t_r) = sigma_VP(r) and
    s_r alpha_Linear(t_r) = alpha_VP(r): the scaled Linear state has exactly the VP coefficients."""
    from toyflow import interpolants

    lin, vp = interpolants.Linear(), interpolants.VP()
    r = _vp_times()
    t = lin.snr_inverse(vp(r).alpha / vp(r).sigma)
    s = torch.as_tensor(fn(r), dtype=F64)
    cl, cv = lin(t), vp(r)
    _close(s * cl.sigma, cv.sigma, 1e-8, "s_r sigma_Linear(t_r) vs sigma_VP(r)")
    _close(s * cl.alpha, cv.alpha, 1e-8, "s_r alpha_Linear(t_r) vs alpha_VP(r)")
    return "s_r maps the Linear coefficients at t_r onto the VP ones at r"


@_exercise("03.3 VP snr_inverse in closed form")
def check_vp_snr_inverse(fn) -> str:
    """fn(rho) -> the VP time r with alpha/sigma = rho (beta_min 0.1, beta_max 20). Round trip through
    VP() and comparison with VP().snr_inverse."""
    from toyflow import interpolants

    vp = interpolants.VP()
    rho = torch.tensor([20.0, 3.0, 1.0, 0.3, 0.05], dtype=F64)
    r = torch.as_tensor(fn(rho), dtype=F64)
    c = vp(r)
    _close(c.alpha / c.sigma, rho, 1e-8, "alpha/sigma of VP at your r vs rho")
    _close(r, vp.snr_inverse(rho), 1e-8, "r")
    return "round trip alpha/sigma(snr_inverse(rho)) = rho"


@_exercise("03.4 the converted velocity")
def check_converted_velocity(fn) -> str:
    """fn(u_lin, x, r) -> the VP-path velocity (ds/s) x + s dt u_lin(x / s, t_r) at VP time r (a float),
    from a Linear-path velocity u_lin(x, t). With the exact Linear velocity it must equal the exact VP
    velocity of the same mixture to 1e-6."""
    gmm = _eight()
    gmm_vp = gmm.with_schedule("vp")
    worst = 0.0
    for r in (0.9, 0.6, 0.3, 0.1):
        x = _points(gmm_vp, r, seed=12)
        worst = max(worst, _close(fn(gmm.velocity, x, r), gmm_vp.velocity(x, r), 1e-6, f"the VP velocity at r = {r}"))
    return f"the converted exact velocity equals the exact VP velocity to {worst:.1e}"


@_exercise("03.5 x0_hat does not depend on the path")
def check_x0_across_paths(fn) -> str:
    """fn(x, r) -> x0_hat of a VP-path state x at VP time r, computed with the *Linear* oracle
    (toyflow.data.toy2d.eight_gaussians_gmm()) at (x / s_r, t_r). Compared with the VP oracle's x0."""
    gmm_vp = _eight().with_schedule("vp")
    worst = 0.0
    for r in (0.9, 0.6, 0.3, 0.1):
        x = _points(gmm_vp, r, seed=13)
        worst = max(worst, _close(fn(x, r), gmm_vp.x0(x, r), 1e-6, f"x0_hat at r = {r}"))
    return f"x0_hat from the Linear path at (x / s_r, t_r) equals the VP posterior mean to {worst:.1e}"


# ============================================================================================
# 04 inference-time scaling
# ============================================================================================
def reference_rbf_ledger(budget: int, steps: int, needed: list) -> list:
    """The reference for check_rbf_ledger (see its docstring)."""
    n0 = max(1, budget // 20)
    S = steps - 1
    total = budget - n0
    share, carry, spent, out = total // S, 0, 0, [n0]
    for j in range(S):
        left = total - spent
        quota = left if j == S - 1 else max(1, min(share + carry, left - (S - 1 - j)))
        draws = quota if j == S - 1 else min(needed[j], quota)
        carry = quota - draws
        spent += draws
        out.append(draws)
    return out


@_exercise("04.1 RBF's ledger")
def check_rbf_ledger(fn) -> str:
    """fn(budget, steps, needed) -> NFE per grid step [n0, d_0, ..., d_{S-1}] of one RBF run with
    S = steps - 1 search steps: n0 = max(1, budget // 20) initial draws; search budget B = budget - n0;
    step j's quota = B // S plus what earlier steps left unused, clamped to [1, left - (S - 1 - j)];
    it draws min(needed[j], quota) (needed[j]: draws until the first improvement); the last step
    spends everything left. The ledger must add up to the budget."""
    g = _gen(14)
    for budget, steps in ((100, 10), (60, 10), (500, 10), (37, 5)):
        needed = torch.randint(1, 30, (steps - 1,), generator=g).tolist()
        got = [int(v) for v in fn(budget, steps, needed)]
        want = reference_rbf_ledger(budget, steps, needed)
        assert sum(got) == budget, f"budget {budget}: your ledger {got} adds up to {sum(got)}, not to the budget"
        assert got == want, f"budget {budget}, needed {needed}: got {got}, expected {want}"
    return f"the ledger adds up to the budget (e.g. 37 NFE over 5 steps: {got})"


@_exercise("04.2 SMC weights and ESS")
def check_smc_weights(fn) -> str:
    """fn(r_prev, r_new, lam) -> (w, ess): normalised weights w proportional to exp((r_new - r_prev) / lam)
    (N,), and the effective sample size 1 / sum w^2. Compared with a log-sum-exp reference."""
    g = _gen(15)
    for lam in (1.0, 0.05):
        r_prev, r_new = torch.rand(64, generator=g, dtype=F64), torch.rand(64, generator=g, dtype=F64)
        w, ess = fn(r_prev, r_new, lam)
        want = torch.softmax((r_new - r_prev) / lam, 0)
        _close(w, want, 1e-10, f"the weights at lam = {lam}")
        _close(torch.as_tensor(float(ess), dtype=F64), 1 / want.pow(2).sum(), 1e-8, f"the ESS at lam = {lam}")
        assert 1 - 1e-9 <= float(ess) <= 64 + 1e-9, "the ESS must lie between 1 and N"
    return f"weights sum to 1; ESS {float(ess):.1f} of 64 at lam = 0.05"


@_exercise("04.3 E_p*[r] by importance sampling")
def check_tilted_expectation(fn) -> str:
    """fn(samples, reward, lam) -> the self-normalised importance-sampling estimate of E_{p*}[r] from base
    samples, p* ~ p_0 exp(r / lam). Exact on fixed samples, and close to metrics.tilted_oracle's grid value."""
    from toyflow import metrics, rewards

    gmm, reward = rewards.task("rare-mode")
    x = gmm.sample(40_000, generator=_gen(16), dtype=F64)
    lam = 0.1
    r = reward(x)
    want = float((torch.softmax(r / lam, 0) * r).sum())
    got = float(fn(x, reward, lam))
    _close(torch.tensor(got), torch.tensor(want), 1e-8, "the estimate on these samples")
    grid = metrics.tilted_oracle(gmm, reward, lam=lam, grid_size=200).expected_reward
    assert abs(got - grid) < 0.03, f"the estimate {got:.3f} is far from the grid value {grid:.3f}"
    return f"E_p*[r] = {got:.3f} from 40000 base samples (grid oracle {grid:.3f}; base E_p0[r] = {float(r.mean()):.3f})"


@_exercise("04.4 expected Best-of-N")
def check_bon_expected_max(fn) -> str:
    """fn(rewards, n) -> E[max of n i.i.d. draws] from the empirical distribution of ``rewards`` (drawing
    with replacement): sum_i r_(i) [(i/m)^n - ((i-1)/m)^n] over the sorted rewards r_(1) <= ... <= r_(m).
    n = 1 must give the mean, and the value must grow with n."""
    r = torch.rand(200, generator=_gen(17), dtype=F64) ** 3
    vals = []
    for n in (1, 2, 5, 20, 100):
        s = r.sort().values
        i = torch.arange(1, 201, dtype=F64)
        want = float((s * ((i / 200) ** n - ((i - 1) / 200) ** n)).sum())
        got = float(fn(r, n))
        _close(torch.tensor(got), torch.tensor(want), 1e-8, f"E[max of {n}]")
        vals.append(got)
    assert abs(vals[0] - float(r.mean())) < 1e-9, "n = 1 must give the mean reward"
    return "E[best of n] for n = 1, 2, 5, 20, 100: " + ", ".join(f"{v:.3f}" for v in vals)


@_exercise("04.5 a reward that can be hacked")
def check_hacking_reward(fn) -> str:
    """fn(x) -> (B,) reward with its peak *off* the data of the 8 Gaussians: on a grid over [-3, 3]^2 the
    best point must have log p_0 < (the modes' log p_0) - 10, and beat the reward of every mode centre."""
    gmm = _eight()
    s = torch.linspace(-3, 3, 121, dtype=F64)
    grid = torch.stack(torch.meshgrid(s, s, indexing="xy"), -1).reshape(-1, 2)
    r = torch.as_tensor(fn(grid), dtype=F64)
    assert r.shape == (len(grid),), f"the reward must return (B,) values, got shape {tuple(r.shape)}"
    best = grid[r.argmax()][None]
    lp_best, lp_mode = float(gmm.log_prob(best, 0.0)), float(gmm.log_prob(gmm.means[:1].to(F64), 0.0))
    assert lp_best < lp_mode - 10, (f"the reward peaks at {best[0].tolist()}, where log p_0 = {lp_best:.1f} (modes "
                                    f"{lp_mode:.1f}): that is on the data, not off it")
    r_modes = torch.as_tensor(fn(gmm.means.to(F64)), dtype=F64)
    assert float(r.max()) > float(r_modes.max()), "the reward should be higher at its peak than at every mode"
    return f"the peak at ({best[0, 0]:.2f}, {best[0, 1]:.2f}) has log p_0 = {lp_best:.0f} (modes: {lp_mode:.1f})"


# ============================================================================================
# 05 MNIST
# ============================================================================================
@_exercise("05.1 accuracy with a standard error")
def check_accuracy_with_error(fn) -> str:
    """fn(correct) -> (accuracy, standard error) of a (n,) bool tensor: p = mean, se = sqrt(p (1 - p) / n)."""
    g = _gen(18)
    for n, p in ((64, 0.1), (64, 0.5), (200, 0.9), (8, 0.0)):
        c = torch.rand(n, generator=g) < p
        acc, se = (float(v) for v in fn(c))
        pm = float(c.double().mean())
        _close(torch.tensor([acc, se]), torch.tensor([pm, math.sqrt(pm * (1 - pm) / n)]), 1e-9, f"(accuracy, se) for n = {n}")
    return "binomial standard errors, e.g. 0.5 +/- 0.0625 over 64 images"


@_exercise("05.2 sample size for an error bar")
def check_sample_size(fn) -> str:
    """fn(p, se) -> the smallest n with sqrt(p (1 - p) / n) <= se (an int)."""
    for p, se in ((0.5, 0.05), (0.1, 0.03), (0.9, 0.01), (0.5, 0.0625)):
        n = int(fn(p, se))
        want = math.ceil(p * (1 - p) / se**2 - 1e-9)
        assert n == want, f"p = {p}, se = {se}: got n = {n}, expected {want} (the smallest n that is enough)"
    return "e.g. 100 images for +/- 5 points at 50 % accuracy"


@_exercise("05.3 x0_hat of images")
def check_image_x0(fn) -> str:
    """fn(x, u, t) -> x0_hat on the Linear path for images x, u: (B, 1, 28, 28) and t: (B,) (one time per
    image: broadcast it). Compared with dynamics.x0_from_velocity."""
    from toyflow import dynamics

    g = _gen(19)
    x, u = torch.randn(6, 1, 28, 28, generator=g, dtype=F64), torch.randn(6, 1, 28, 28, generator=g, dtype=F64)
    t = torch.rand(6, generator=g, dtype=F64) * 0.9 + 0.05
    _close(fn(x, u, t), dynamics.x0_from_velocity(x, u, t, "linear"), 1e-10, "x0_hat")
    return "matches dynamics.x0_from_velocity, one time per image"


@_exercise("05.4 an ink reward")
def check_ink_reward(fn) -> str:
    """fn(x0) -> -|#{pixels > 0} - 150| / 100 per image (x0 in [-1, 1], (B, 1, 28, 28)). Compared with
    rewards.mnist_ink(150)."""
    from toyflow import rewards

    x0 = (torch.rand(8, 1, 28, 28, generator=_gen(20)) * 2 - 1) ** 3
    _close(torch.as_tensor(fn(x0), dtype=F64), rewards.mnist_ink(150)(x0).double(), 1e-6, "the ink reward")
    return "matches rewards.mnist_ink(150)"


@_exercise("05.5 diversity as a mean pairwise distance")
def check_diversity(fn) -> str:
    """fn(feats) -> the mean Euclidean distance over pairs i != j of the rows of feats (n, d).
    Compared with metrics.diversity; one repeated row must give 0."""
    from toyflow import metrics

    f = torch.randn(40, 16, generator=_gen(21), dtype=F64)
    _close(torch.as_tensor(float(fn(f)), dtype=F64), torch.tensor(metrics.diversity(f), dtype=F64), 1e-9,
           "the diversity (average over the n (n - 1) ordered pairs i != j)")
    same = float(fn(f[:1].expand(10, 16)))
    assert abs(same) < 1e-9, f"ten copies of one feature vector must have diversity 0, got {same}"
    return f"matches metrics.diversity ({metrics.diversity(f):.3f} for 40 Gaussian vectors)"


# ============================================================================================
# 06 allocation schemes
# ============================================================================================
def _as_scheme(answer):
    return answer() if isinstance(answer, type) else answer


@_exercise("06.1 MiddleHeavy as a StaticAllocation")
def check_static_middle_heavy(answer) -> str:
    """answer: a StaticAllocation subclass (or instance) whose weights(steps) are sin(pi (s + 1/2) / steps)^2.
    Its plan must add up to the search budget and give each step its share to within one NFE."""
    from toyflow.search import StaticAllocation

    scheme = _as_scheme(answer)
    assert isinstance(scheme, StaticAllocation), "subclass toyflow.search.StaticAllocation and define weights(steps)"
    for steps, total in ((9, 199), (9, 60), (4, 37)):
        plan = scheme.plan(steps, torch.tensor([total]))[0]
        w = torch.sin(torch.pi * (torch.arange(steps, dtype=F64) + 0.5) / steps) ** 2
        share = total * w / w.sum()
        assert int(plan.sum()) == total, f"the plan {plan.tolist()} adds up to {int(plan.sum())}, not to {total}"
        off = float((plan.double() - share).abs().max())
        assert off < 1, f"steps = {steps}, total = {total}: plan {plan.tolist()} vs shares {[round(float(v), 1) for v in share]}"
    return f"plan for 9 steps, 199 NFE: {scheme.plan(9, torch.tensor([199]))[0].tolist()}"


@_exercise("06.2 rounding that keeps the whole budget")
def check_cumulative_rounding(fn) -> str:
    """fn(weights, total) -> integer quotas q_k = floor(total C_k) - floor(total C_{k-1}) with C the normalised
    cumulative weights: they add up to total and each is within one of total w_k / sum w."""
    g = _gen(22)
    for total in (10, 57, 199):
        w = torch.rand(7, generator=g, dtype=F64) + 0.05
        q = torch.as_tensor(fn(w, total))
        share = total * w / w.sum()
        assert q.shape == (7,) and not q.is_floating_point(), f"return (steps,) integers, got {q.dtype} {tuple(q.shape)}"
        assert int(q.sum()) == total, f"the quotas {q.tolist()} add up to {int(q.sum())}, not {total}"
        assert float((q.double() - share).abs().max()) < 1, f"quotas {q.tolist()} vs shares {[round(float(v), 2) for v in share]}"
    return f"the quotas add up to the budget (e.g. {q.tolist()} for {total})"


@_exercise("06.3 a front-loaded scheme")
def check_front_loaded(answer) -> str:
    """answer: an AllocationScheme (class or instance) with quota(step, steps, budget_left, spent) giving
    non-increasing quotas, at least 1 per step, whose plan spends at most the search budget and at least 90 %."""
    from toyflow.search import AllocationScheme

    scheme = _as_scheme(answer)
    assert isinstance(scheme, AllocationScheme), "subclass toyflow.search.AllocationScheme"
    for steps, total in ((9, 199), (9, 40)):
        plan = scheme.plan(steps, torch.tensor([total]))[0]
        assert int(plan.min()) >= 1, f"every step needs at least one NFE: plan {plan.tolist()}"
        assert bool((plan[1:] <= plan[:-1]).all()), f"the quotas must not increase: plan {plan.tolist()}"
        assert plan[0] > plan[-1], f"front-loaded means more at the start than at the end: plan {plan.tolist()}"
        assert 0.9 * total <= int(plan.sum()) <= total, f"the plan spends {int(plan.sum())} of {total}"
    return f"plan for 9 steps, 199 NFE: {scheme.plan(9, torch.tensor([199]))[0].tolist()}"


@_exercise("06.4 an even share of what is left")
def check_even_share(answer) -> str:
    """answer: an AllocationScheme with quota(self, state) = budget_left // (steps - step), the last step
    taking all that is left. Run with SVDD on the rare-mode oracle: every run spends its whole budget and its
    per-step NFE differ by at most one."""
    from toyflow import rewards, search

    scheme = _as_scheme(answer)
    gmm, reward = rewards.task("rare-mode")
    res = search.run("svdd", gmm, reward, mode="linear-sde", budget=57, steps=10, runs=4, shape=(2,),
                     generator=_gen(23), allocation=scheme)
    per = res.nfe_per_step[:, 1:]
    assert bool((res.nfe == 57).all()), f"the runs spent {res.nfe.tolist()} NFE, not the whole budget 57"
    assert int((per.max(1).values - per.min(1).values).max()) <= 1, f"NFE per search step {per[0].tolist()}: not even"
    return f"NFE per search step {per[0].tolist()} (plus 1 initial draw) = 57"


@_exercise("06.5 what a greedy search costs")
def check_greedy_nfe(fn) -> str:
    """fn(steps, width) -> the NFE of the notebook's Greedy search: one initial draw plus width children at each
    of the steps - 1 search steps (the last step, x0_hat, is free)."""
    for steps, width in ((10, 8), (10, 1), (4, 3), (20, 5)):
        got, want = int(fn(steps, width)), 1 + width * (steps - 1)
        assert got == want, f"steps = {steps}, width = {width}: got {got}, expected {want}"
    return "1 + width (steps - 1), e.g. 73 NFE for 10 steps of width 8"


# ============================================================================================
# 07 regimes
# ============================================================================================
@_exercise("07.1 posterior purity")
def check_purity(fn) -> str:
    """fn(gmm, x, t) -> D = mean over x of sum_k pi_k(x)^2, pi = P(component | x_t). Compared with the oracle's
    posterior weights; near t = 1 it is close to sum_k w_k^2, near t = 0 close to 1."""
    from toyflow import rewards

    gmm, _ = rewards.task("rare-mode")
    gmm = gmm.to(F64)
    for t in (0.99, 0.5, 0.02):
        x = _points(gmm, t, 500, seed=24)
        want = (gmm.posterior_weights(x, t) ** 2).sum(1).mean()
        got = torch.as_tensor(float(fn(gmm, x, t)), dtype=F64)
        _close(got, want, 1e-9, f"D at t = {t}")
        if t == 0.99:
            assert abs(float(got) - float((gmm.weights.to(F64) ** 2).sum())) < 0.05
    return f"D(0.02) = {float(got):.3f}: the mode is decided near the data"


@_exercise("07.2 the Linear-equivalent noise level")
def check_noise_level(fn) -> str:
    """fn(schedule, t) -> the Linear time with the same alpha/sigma: sigma_t / (alpha_t + sigma_t).
    Compared with dynamics.noise_level for VP and Cosine."""
    from toyflow import dynamics, interpolants

    t = torch.linspace(0.05, 0.95, 10, dtype=F64)
    for sched in (interpolants.VP(), interpolants.Cosine(), interpolants.Linear()):
        _close(torch.as_tensor(fn(sched, t), dtype=F64), dynamics.noise_level(sched, t), 1e-10, f"the level for {sched!r}")
    return "matches dynamics.noise_level (VP r = 0.5 -> Linear t = " + f"{float(dynamics.noise_level(interpolants.VP(), torch.tensor(0.5))):.3f})"


@_exercise("07.3 a velocity with a blended x0_hat")
def check_blend_velocity(fn) -> str:
    """fn(x, t, lam) -> a Linear-path velocity whose x0_hat is (1 - lam) E[x0 | x_t] + lam Phi(x_t, t) for the
    x8 rare-mode task (Phi: FlowMapOracle's flow map; t a float). Checked through dynamics.x0_from_velocity."""
    from toyflow import dynamics, rewards
    from toyflow.models import FlowMapOracle

    gmm8, _ = rewards.task("rare-mode", scale=8)
    gmm8 = gmm8.to(F64)
    fm = FlowMapOracle(gmm8)
    for t in (0.9, 0.5):
        x = _points(gmm8, t, 64, seed=25)
        for lam in (0.0, 0.5, 1.0):
            want = (1 - lam) * gmm8.x0(x, t) + lam * fm.flow_map(x, t)
            got = dynamics.x0_from_velocity(x, fn(x, t, lam), t, "linear")
            _close(got, want, 1e-6, f"x0_hat of your velocity at t = {t}, lam = {lam}")
    return "x0_hat of your velocity is the blend for lam = 0, 0.5, 1"


@_exercise("07.4 reward headroom")
def check_headroom(fn) -> str:
    """fn(rewards, mask) -> mean over runs of (max_j r_j - mean_j r_j) over the valid proposals (mask True);
    rewards, mask: (R, M). Compared with a reference; padded entries must be ignored."""
    g = _gen(26)
    r = torch.rand(16, 8, generator=g, dtype=F64)
    mask = torch.rand(16, 8, generator=g) < 0.7
    mask[:, 0] = True
    r_pad = torch.where(mask, r, torch.full_like(r, 5.0))  # padded rewards must not count
    rm = torch.where(mask, r, torch.nan)
    want = (rm.nan_to_num(-torch.inf).max(1).values - rm.nanmean(1)).mean()
    _close(torch.as_tensor(float(fn(r_pad, mask)), dtype=F64), want, 1e-9, "the headroom")
    return f"headroom {float(want):.3f} for uniform rewards with about 5.6 valid proposals per run"


@_exercise("07.5 the eta ratio of the VP SDE")
def check_vp_eta_ratio(fn) -> str:
    """fn(r) -> g^2 / g^2_DDPM for g = 3 r^2 on the VP path, whose ancestral diffusion is
    g^2_DDPM = beta(r) = beta_min + r (beta_max - beta_min). Compared with dynamics.eta_ratio."""
    from toyflow import dynamics, interpolants

    vp = interpolants.VP()
    r = torch.linspace(0.05, 1.0, 20, dtype=F64)
    want = dynamics.eta_ratio(vp, dynamics.diffusion_schedule("square", 3.0, vp), r)
    _close(torch.as_tensor(fn(r), dtype=F64), want, 1e-8, "the VP eta ratio")
    return f"matches dynamics.eta_ratio: {float(want[-1]):.2f} at r = 1, {float(want[9]):.3f} at r = 0.5"


NB01 = ("check_linear_pair", "check_fm_loss", "check_gaussian_velocity", "check_x0_hat", "check_euler_sampler")
NB02 = ("check_score_from_velocity", "check_sde_step", "check_reverse_drift", "check_proposals", "check_eta_ratio")
NB03 = ("check_snr_matched_time", "check_scale", "check_vp_snr_inverse", "check_converted_velocity", "check_x0_across_paths")
NB04 = ("check_rbf_ledger", "check_smc_weights", "check_tilted_expectation", "check_bon_expected_max", "check_hacking_reward")
NB05 = ("check_accuracy_with_error", "check_sample_size", "check_image_x0", "check_ink_reward", "check_diversity")
NB06 = ("check_static_middle_heavy", "check_cumulative_rounding", "check_front_loaded", "check_even_share", "check_greedy_nfe")
NB07 = ("check_purity", "check_noise_level", "check_blend_velocity", "check_headroom", "check_vp_eta_ratio")
ALL = {"01": NB01, "02": NB02, "03": NB03, "04": NB04, "05": NB05, "06": NB06, "07": NB07}
