"""FlowMapOracle: a velocity model whose x0_hat is the exact ODE flow map of a Gaussian mixture.

Run as a script (``python tests/test_flowmap.py``) it measures the accuracy table and the cost per
call quoted in the class docstring.
"""

import math
import time

import pytest
import torch

from toyflow import dynamics, rewards
from toyflow.models import FlowMapOracle, GaussianMixtureFlow
from toyflow.models.flowmap import _linear_velocity_isotropic

torch.set_num_threads(1)

TASKS = ("rare-mode", "counting", "aesthetic")
TIMES = (0.02, 0.3, 0.7, 0.95, 0.999, 1.0)

# ---- an independent reference: adaptive Dormand-Prince 5(4) in plain t, error-controlled -------------
# (the oracle uses fixed steps in a shifted time; this one adapts its steps in t itself)
_C = (0.0, 0.2, 0.3, 0.8, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (0.2,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


def reference_flow_map(gmm, x, t, tol=1e-10):
    """Phi(x, t) by adaptive RK45 on s in [0, 1], x(s) the ODE state at time t * (1 - s) (float64).

    dx/ds = -t u(x, t (1 - s)): every row, whatever its t, runs the same s grid, so one adaptive
    integration serves a batch of mixed times. The step is shared and set by the worst row.
    """
    x = x.to(torch.float64)
    t = torch.as_tensor(t, dtype=torch.float64).expand(x.shape[0]).clone()
    tv = t.reshape(-1, *([1] * (x.dim() - 1)))

    def f(y, s):
        return -tv * gmm.velocity(y, (t * (1 - s)).clamp(0, 1))

    s, h = 0.0, 1e-3
    k1 = f(x, s)
    while s < 1.0:
        h = min(h, 1.0 - s)
        ks = [k1]
        for i in range(1, 7):
            ks.append(f(x + h * sum(a * k for a, k in zip(_A[i], ks)), s + _C[i] * h))
        y5 = x + h * sum(b * k for b, k in zip(_B5, ks))
        y4 = x + h * sum(b * k for b, k in zip(_B4, ks))
        err = float(((y5 - y4).abs() / (tol + tol * torch.maximum(x.abs(), y5.abs()))).max())
        if err <= 1.0:
            s, x, k1 = s + h, y5, ks[6]
        h *= min(4.0, max(0.2, 0.9 * err ** -0.2)) if err > 0 else 4.0
    return x


def _marginal_draws(gmm, n, times, seed):
    g = torch.Generator().manual_seed(seed)
    xs = [gmm.sample_marginal(n, t, generator=g, dtype=torch.float64) for t in times]
    ts = torch.tensor(times, dtype=torch.float64).repeat_interleave(n)
    return torch.cat(xs), ts


# ---- accuracy -------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1, 8])
@pytest.mark.parametrize("name", TASKS)
def test_flow_map_matches_an_independent_integration(name, scale):
    gmm, _ = rewards.task(name, scale=scale)
    fm = FlowMapOracle(gmm)
    x, t = _marginal_draws(gmm, 48, TIMES, seed=10 * TASKS.index(name) + scale)
    ref = reference_flow_map(gmm, x, t)
    err = (fm.flow_map(x, t) - ref).norm(dim=1) / float(gmm.stds.min())
    for tv in TIMES:  # at every t, including t near 1
        assert err[t == tv].max() < 1e-3, (name, scale, tv, float(err[t == tv].max()))


def test_the_fused_velocity_is_the_mixtures_velocity():
    for name in TASKS:
        gmm, _ = rewards.task(name, scale=8)
        x, t = _marginal_draws(gmm, 32, (0.0, 1e-7, 0.4, 0.9, 1.0), seed=3)
        torch.testing.assert_close(_linear_velocity_isotropic(gmm)(x, t), gmm.velocity(x, t), rtol=1e-12, atol=1e-12)


def test_full_covariance_mixture_uses_its_own_velocity_and_agrees():
    gmm, _ = rewards.task("aesthetic", scale=8)
    full = GaussianMixtureFlow(gmm.means, None, gmm.weights, covariances=torch.eye(2) * gmm.stds[:, None, None] ** 2)
    x, t = _marginal_draws(gmm, 8, (0.3, 0.9, 1.0), seed=4)
    torch.testing.assert_close(FlowMapOracle(full, 16).flow_map(x, t), FlowMapOracle(gmm, 16).flow_map(x, t),
                               rtol=1e-10, atol=1e-10)


# ---- the velocity model ---------------------------------------------------------------------------
def test_x0_from_velocity_is_the_flow_map():
    gmm, _ = rewards.task("rare-mode", scale=8)
    fm = FlowMapOracle(gmm)
    x, t = _marginal_draws(gmm, 16, (0.0, 1e-7, 1e-6, 1e-3, 0.2, 0.5, 0.8, 1.0), seed=5)
    x0 = dynamics.x0_from_velocity(x, fm(x, t), t, "linear")
    torch.testing.assert_close(x0, fm.flow_map(x, t), rtol=0, atol=1e-9)
    torch.testing.assert_close(fm.flow_map(x[:16], t[:16]), x[:16], rtol=0, atol=0)  # t = 0: identity


def test_one_euler_step_from_noise_lands_on_the_flow_map():
    gmm, _ = rewards.task("counting", scale=8)
    fm = FlowMapOracle(gmm)
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    phi = fm.flow_map(z, 1.0)
    torch.testing.assert_close(z - 1.0 * fm(z, torch.ones(64, dtype=torch.float64)), phi, rtol=0, atol=1e-12)
    traj = dynamics.sample(fm, z, schedule="linear", steps=1)
    torch.testing.assert_close(traj.x, phi, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["aesthetic", "rare-mode"])
def test_flow_map_of_noise_samples_the_mixture(name):
    gmm, _ = rewards.task(name, scale=8)
    fm = FlowMapOracle(gmm)
    n = 3000
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        x = fm.flow_map(z, 1.0).double()
    comp = gmm.posterior_weights(x, 0.0).argmax(1)
    freq = torch.bincount(comp, minlength=8).double() / n
    sd = (gmm.weights * (1 - gmm.weights) / n).sqrt()
    assert ((freq - gmm.weights).abs() < 4 * sd + 1e-12).all(), (freq, gmm.weights)
    # each component's samples: centred on its mean, with its std
    s = float(gmm.stds[0])
    for k in range(8):
        xk = x[comp == k]
        if len(xk) < 200:
            continue
        assert (xk.mean(0) - gmm.means[k]).norm() < 5 * s / math.sqrt(len(xk))
        assert abs(float(xk.std(0).mean()) / s - 1) < 0.12


def test_velocity_at_small_t_is_the_mixtures_velocity():
    gmm, _ = rewards.task("aesthetic")
    fm = FlowMapOracle(gmm)
    x = gmm.sample(32, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    for t in (0.0, 1e-9, 5e-7):  # below small_t: the limit itself
        torch.testing.assert_close(fm(x, t), gmm.velocity(x, t), rtol=0, atol=0)
    for t in (1e-6, 1e-5, 1e-4):  # above: (x - Phi) / t, the mean velocity over [0, t], O(t) from u_t
        u, v = fm(x, t), gmm.velocity(x, t)
        assert (u - v).norm(dim=1).max() < 50 * t * (1 + v.norm(dim=1).max())


def test_mixed_times_per_row_and_dtypes():
    gmm, _ = rewards.task("counting")
    fm = FlowMapOracle(gmm)
    x, t = _marginal_draws(gmm, 4, (0.1, 0.6, 1.0), seed=9)
    together = fm.flow_map(x, t)
    alone = torch.cat([fm.flow_map(x[i : i + 1], float(t[i])) for i in range(len(t))])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-13)
    u32 = fm(x.float(), t.float())
    assert u32.dtype == torch.float32 and u32.shape == x.shape
    torch.testing.assert_close(u32.double(), fm(x.float().double(), t.float().double()), rtol=1e-6, atol=1e-5)


def test_deterministic():
    gmm, _ = rewards.task("rare-mode", scale=8)
    fm = FlowMapOracle(gmm)
    x, t = _marginal_draws(gmm, 8, (0.5, 1.0), seed=10)
    assert torch.equal(fm(x, t), fm(x, t))
    assert torch.equal(fm.flow_map(x.float(), t), fm.flow_map(x.float(), t))


def test_gradients_flow_through_the_integration():
    gmm, _ = rewards.task("rare-mode", scale=8)
    fm = FlowMapOracle(gmm, 16)
    x, t = _marginal_draws(gmm, 3, (0.5, 0.9), seed=11)
    x = x.requires_grad_(True)
    w = torch.tensor([0.3, -0.7], dtype=torch.float64)
    (fm.flow_map(x, t) @ w).sum().backward()
    eps = 1e-6
    for i in range(2):
        d = torch.zeros_like(x)
        d[:, i] = eps
        with torch.no_grad():
            fd = ((fm.flow_map(x + d, t) - fm.flow_map(x - d, t)) @ w) / (2 * eps)
        torch.testing.assert_close(x.grad[:, i], fd, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert not fm(x, t).requires_grad


def test_errors():
    gmm, _ = rewards.task("aesthetic")
    with pytest.raises(ValueError, match=r'with_schedule\("linear"\)'):
        FlowMapOracle(gmm.with_schedule("vp"))
    FlowMapOracle(gmm.with_schedule("vp").with_schedule("linear"))  # the fix works
    with pytest.raises(TypeError, match="GaussianMixtureFlow"):
        FlowMapOracle(lambda x, t: x)
    with pytest.raises(ValueError, match="steps"):
        FlowMapOracle(gmm, 0)
    fm = FlowMapOracle(gmm, 4)
    x = torch.zeros(5, 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fm(x, torch.full((5,), 1.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fm.flow_map(x, -0.1)
    with pytest.raises(ValueError, match="NaN"):
        fm(x, torch.full((5,), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        fm(torch.zeros(5, 3), torch.ones(5))
    with pytest.raises(ValueError, match="shape"):
        fm.flow_map(torch.zeros(5), 0.5)
    with pytest.raises(ValueError, match="t must be"):
        fm(x, torch.ones(4))
    with pytest.raises(TypeError):
        fm(torch.zeros(5, 2, dtype=torch.long), torch.ones(5))
    assert fm.velocity_evaluations == 6 * 4 + 1


# ---- the measurements quoted in the docstring -------------------------------------------------------
def _measure():  # pragma: no cover - a script, not a test
    print("worst and median |Phi - Phi_ref| / smallest component std, 1024 exact draws of x_t per t")
    worst = 0.0
    for name in TASKS:
        for scale in (1, 8):
            gmm, _ = rewards.task(name, scale=scale)
            fm = FlowMapOracle(gmm)
            x, t = _marginal_draws(gmm, 1024, TIMES, seed=0)
            err = (fm.flow_map(x, t) - reference_flow_map(gmm, x, t, tol=1e-11)).norm(dim=1) / float(gmm.stds.min())
            cells = [f"t={tv:g}: {err[t == tv].max():.1e} ({err[t == tv].median():.0e})" for tv in TIMES]
            worst = max(worst, float(err.max()))
            print(f"{name:>9} x{scale}  " + "  ".join(cells), flush=True)
    print(f"worst over all: {worst:.2e} std")
    print(f"cost of one call (1 thread), {FlowMapOracle(rewards.task('counting')[0]).velocity_evaluations} "
          "mixture velocity evaluations")
    for name in TASKS:
        gmm, _ = rewards.task(name, scale=8)
        fm = FlowMapOracle(gmm)
        for B in (64, 4096):
            x, t = torch.randn(B, 2), torch.rand(B)
            with torch.no_grad():
                fm(x, t)
                reps = 10 if B == 64 else 2
                t0 = time.perf_counter()
                for _ in range(reps):
                    fm(x, t)
                dt = (time.perf_counter() - t0) / reps
            print(f"{name:>9} (K = {gmm.means.shape[0]}) batch {B:>4}: {dt * 1e3:7.1f} ms a call, "
                  f"{dt / B * 1e6:6.0f} us a row", flush=True)


if __name__ == "__main__":  # pragma: no cover
    _measure()
