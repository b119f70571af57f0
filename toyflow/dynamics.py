"""One-step quantities from a velocity, diffusion schedules, ODE/SDE steps, time grids, ``sample``.

Time runs from t = 1 (noise) down to t = 0 (data). With ``D = d_alpha sigma - d_sigma alpha``:

    x0_hat = (sigma u - d_sigma x) / D          (Linear: x - t u)
    x1_hat = (d_alpha x - alpha u) / D          (Linear: x + (1 - t) u)
    score  = -x1_hat / sigma

ODE -> SDE (same marginals for any g_t >= 0), one step from t to t - h:

    x <- x - h u + h (g_t^2 / 2) score + g_t sqrt(h) z,   z ~ N(0, I)

Shapes: x, u: (B, *shape); t: (B,) (a scalar tensor broadcasts to every particle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import torch
from torch import Tensor

from toyflow.interpolants import VP, Interpolant, check_time, get

__all__ = [
    "x0_from_velocity",
    "noise_from_velocity",
    "score_from_velocity",
    "velocity_from_x0",
    "diffusion_schedule",
    "DIFFUSIONS",
    "ddpm_diffusion_squared",
    "eta_ratio",
    "noise_level",
    "transport_diffusion",
    "check_diffusion_path",
    "DIFFUSION_PATHS",
    "time_grid",
    "TIME_GRIDS",
    "check_velocity",
    "step",
    "euler_step",
    "heun_step",
    "sde_step",
    "renoise",
    "Trajectory",
    "sample",
]

VelocityModel = Callable[[Tensor, Tensor], Tensor]
Diffusion = Union[str, Callable[[Tensor], Tensor]]

DIFFUSIONS = ("square", "constant", "linear", "sigma", "zero")
TIME_GRIDS = ("uniform", "exp", "linear-snr", "vp-snr")


def _expand(c: Tensor, x: Tensor) -> Tensor:
    """(B,) or () -> broadcastable against x: (B, *shape)."""
    if c.dim() == 0:
        return c
    return c.reshape(c.shape + (1,) * (x.dim() - c.dim()))


def _batch_time(x: Tensor, t: Union[Tensor, float]) -> Tensor:
    """Return t as a (B,) tensor matching x's batch, dtype and device; clear errors otherwise."""
    if not torch.is_tensor(t):
        t = torch.tensor(float(t), dtype=x.dtype, device=x.device)  # keep float64 precision for float64 x
    if x.dim() < 1:
        raise ValueError(f"x must have a batch dimension, shape (B, *shape); got a scalar")
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    elif t.shape != (x.shape[0],):
        raise ValueError(
            f"t must be a scalar or have shape (B,) = ({x.shape[0]},) to match x of shape {tuple(x.shape)}, "
            f"got t of shape {tuple(t.shape)}"
        )
    check_time(t)
    return t.to(dtype=x.dtype, device=x.device)


def _coefficients(schedule: Interpolant, t: Tensor):
    """schedule(t) for times already checked: the interpolant's own ``coefficients`` where it keeps the
    base class's ``__call__`` (whose range check costs host syncs), else its ``__call__``."""
    if type(schedule).__call__ is Interpolant.__call__:
        return schedule.coefficients(t)
    return schedule(t)


def check_velocity(u: Tensor, x: Tensor, *, where: str = "model") -> Tensor:
    """Raise a clear error if a model's velocity has the wrong shape or holds NaN/inf."""
    if not torch.is_tensor(u):
        raise TypeError(f"{where} must return a torch.Tensor, got {type(u).__name__}")
    if u.shape != x.shape:
        raise ValueError(f"{where} returned shape {tuple(u.shape)}, expected the shape of x {tuple(x.shape)}")
    # one reduction in the common (finite) case; the element-wise test only to decide
    if not math.isfinite(float(u.detach().sum())) and not bool(torch.isfinite(u).all()):
        raise FloatingPointError(
            f"{where} returned NaN or inf velocities; check the model's weights and inputs "
            "(a diverged training run, or x blown up by too large steps or too large eta)"
        )
    return u


def x0_from_velocity(x: Tensor, u: Tensor, t: Union[Tensor, float], schedule: Union[str, Interpolant]) -> Tensor:
    """Tweedie / x0-prediction: x0_hat = (sigma u - d_sigma x) / D. At sigma = 0 (t = 0) it is x."""
    if not (torch.is_tensor(u) and torch.is_tensor(x)) or u.shape != x.shape:
        raise ValueError(f"x0_from_velocity needs u shaped like x, got x {tuple(getattr(x, 'shape', ()))} and u "
                         f"{tuple(getattr(u, 'shape', ()))} (no broadcasting: pass one velocity per particle)")
    return _x0_from_velocity(x, u, _batch_time(x, t), get(schedule))


def _x0_from_velocity(x: Tensor, u: Tensor, t: Tensor, schedule: Interpolant) -> Tensor:
    """:func:`x0_from_velocity` for checked inputs (t: (B,) in x's dtype, schedule an Interpolant)."""
    c = _coefficients(schedule, t)
    D = c.d_alpha * c.sigma - c.d_sigma * c.alpha
    at_data = c.sigma == 0
    num_u = torch.where(at_data, torch.zeros_like(c.sigma), c.sigma)
    num_x = torch.where(at_data, torch.full_like(c.sigma, -1.0), c.d_sigma)
    den = torch.where(at_data, torch.ones_like(D), D)
    return (_expand(num_u, x) * u - _expand(num_x, x) * x) / _expand(den, x)


def noise_from_velocity(x: Tensor, u: Tensor, t: Union[Tensor, float], schedule: Union[str, Interpolant]) -> Tensor:
    """Noise prediction: x1_hat = (d_alpha x - alpha u) / D."""
    return _noise_from_velocity(x, u, _batch_time(x, t), get(schedule))


def _noise_from_velocity(x: Tensor, u: Tensor, t: Tensor, schedule: Interpolant) -> Tensor:
    c = _coefficients(schedule, t)
    D = c.d_alpha * c.sigma - c.d_sigma * c.alpha
    return (_expand(c.d_alpha, x) * x - _expand(c.alpha, x) * u) / _expand(D, x)


def score_from_velocity(x: Tensor, u: Tensor, t: Union[Tensor, float], schedule: Union[str, Interpolant]) -> Tensor:
    """Score of p_t: grad log p_t(x) = -x1_hat / sigma (undefined at t = 0, where sigma = 0)."""
    schedule = get(schedule)
    tb = _batch_time(x, t)
    sigma = schedule(tb).sigma
    if bool((sigma <= 0).any()):
        raise ValueError("the score is undefined where sigma_t = 0 (t = 0 for these interpolants); use t > 0")
    return _score_from_velocity(x, u, tb, schedule)


def _score_from_velocity(x: Tensor, u: Tensor, t: Tensor, schedule: Interpolant) -> Tensor:
    """:func:`score_from_velocity` for checked inputs with sigma_t > 0."""
    return -_noise_from_velocity(x, u, t, schedule) / _expand(_coefficients(schedule, t).sigma, x)


def velocity_from_x0(x: Tensor, x0: Tensor, t: Union[Tensor, float], schedule: Union[str, Interpolant]) -> Tensor:
    """Inverse of x0_from_velocity: u = d_alpha x0 + d_sigma x1_hat with x1_hat = (x - alpha x0) / sigma."""
    if not (torch.is_tensor(x0) and torch.is_tensor(x)) or x0.shape != x.shape:
        raise ValueError(f"velocity_from_x0 needs x0 shaped like x, got x {tuple(getattr(x, 'shape', ()))} and x0 "
                         f"{tuple(getattr(x0, 'shape', ()))} (no broadcasting)")
    schedule = get(schedule)
    t = _batch_time(x, t)
    c = schedule(t)
    if bool((c.sigma <= 0).any()):
        raise ValueError(f"velocity_from_x0 is undefined where sigma_t = 0 (t = 0 for {schedule.name}): x alone does "
                         "not fix the noise there; use t > 0")
    x1 = (x - _expand(c.alpha, x) * x0) / _expand(c.sigma, x)
    return _expand(c.d_alpha, x) * x0 + _expand(c.d_sigma, x) * x1


def diffusion_schedule(
    diffusion: Diffusion = "square", eta: float = 3.0, schedule: Optional[Union[str, Interpolant]] = None
) -> Callable[[Tensor], Tensor]:
    """g(t) from a name or a callable: square eta t^2 (paper, eta = 3), constant eta, linear eta t,
    sigma eta sigma_t (needs ``schedule``), zero (the ODE)."""
    if callable(diffusion):
        return diffusion
    if not isinstance(diffusion, str) or diffusion not in DIFFUSIONS:
        raise ValueError(f"unknown diffusion {diffusion!r}; use one of {', '.join(DIFFUSIONS)} or a callable g(t)")
    if not (eta >= 0 and math.isfinite(eta)):
        raise ValueError(f"eta must be a finite number >= 0, got {eta}")
    if diffusion == "square":
        return lambda t: eta * t**2
    if diffusion == "constant":
        return lambda t: torch.full_like(t, eta)
    if diffusion == "linear":
        return lambda t: eta * t
    if diffusion == "zero":
        return torch.zeros_like
    if schedule is None:
        raise ValueError("diffusion 'sigma' needs the interpolant: diffusion_schedule('sigma', eta, schedule=...)")
    sched = get(schedule)
    return lambda t: eta * sched(t).sigma


# --------------------------------------------------------------------------------------------
# Diffusion in the time of another path: the eta ratio g^2 / g^2_DDPM at matched noise levels
# --------------------------------------------------------------------------------------------
def _sigma_d_sigma(schedule: Interpolant, t: Tensor, c) -> Tensor:
    """sigma_t * d_sigma_t, with its t -> 0+ limit where sigma = 0 and d_sigma is infinite (VP at t = 0:
    sigma sigma' -> beta_min / 2), read off at t = sqrt(tiny) (exact to round-off for the built-in paths)."""
    prod = c.sigma * c.d_sigma
    bad = ~torch.isfinite(prod)
    if bool(bad.any()):
        eps = torch.full_like(t, torch.finfo(t.dtype).tiny ** 0.5)
        ce = schedule(torch.where(bad, eps, t))
        prod = torch.where(bad, ce.sigma * ce.d_sigma, prod)
    return prod


def ddpm_diffusion_squared(schedule: Union[str, Interpolant], t: Union[Tensor, float]) -> Tensor:
    """g^2_DDPM(t) = 2 sigma_t^2 d/dt log(sigma_t / alpha_t) = 2 sigma (alpha sigma' - sigma alpha') / alpha.

    The diffusion of the reverse-time (ancestral, DDPM) SDE of the path: the member of the
    marginal-preserving family whose forward SDE is the path's own noising process
    (Linear: 2t / (1 - t); VP: beta(t) = beta_min + t (beta_max - beta_min)). It is ``inf`` where
    alpha = 0 (Linear t = 1) and takes its t -> 0+ limit where sigma = 0: 0 for Linear, Cosine and
    Polynomial, beta_min for VP. Returns a tensor shaped like ``t``.
    """
    schedule = get(schedule)
    t = torch.as_tensor(t, dtype=torch.get_default_dtype()) if not torch.is_tensor(t) else t
    c = schedule(t)
    ss = _sigma_d_sigma(schedule, t, c)
    alpha = c.alpha
    safe_alpha = torch.where(alpha > 0, alpha, torch.ones_like(alpha))
    g2 = 2 * ss - 2 * c.sigma**2 * c.d_alpha / safe_alpha
    return torch.where(alpha > 0, g2, torch.full_like(g2, math.inf))


def eta_ratio(schedule: Union[str, Interpolant], g: Callable[[Tensor], Tensor], t: Union[Tensor, float]) -> Tensor:
    """eta ratio g(t)^2 / g^2_DDPM(t): 0 is the ODE, 1 the ancestral (DDPM) SDE of ``schedule``.

    A DDIM-eta-like measure of stochasticity that does not depend on the path: the scale-time
    transform between two paths maps both g^2 and g^2_DDPM by the same factor s^2 dt/dr, so the
    ratio of a process is the same in every path at the same noise level (see :func:`noise_level`).
    Conventions at the ends: 0 wherever g = 0, and for any finite g at alpha = 0 (where g^2_DDPM is
    infinite); ``inf`` where g > 0 and g^2_DDPM = 0 (e.g. a constant g at Linear t = 0). ``g``: a callable g(t),
    e.g. ``diffusion_schedule("square", 3.0)``; Linear with g = 3t^2 gives 4.5 t^3 (1 - t).
    """
    schedule = get(schedule)
    t = torch.as_tensor(t, dtype=torch.get_default_dtype()) if not torch.is_tensor(t) else t
    gt = g(t)
    gt = torch.as_tensor(gt, dtype=t.dtype, device=t.device).broadcast_to(t.shape)
    g2, d = gt**2, ddpm_diffusion_squared(schedule, t)
    ratio = g2 / torch.where(d > 0, d, torch.ones_like(d))
    ratio = torch.where(d > 0, ratio, torch.full_like(ratio, math.inf))
    return torch.where(g2 == 0, torch.zeros_like(ratio), ratio)


def noise_level(schedule: Union[str, Interpolant], t: Union[Tensor, float]) -> Tensor:
    """The Linear-path time with the same alpha / sigma as ``schedule`` at t: t_lin = sigma / (alpha + sigma).

    (Linear: t itself; VP: r = 1, .9, ..., .4 -> .993, .983, .962, .922, .859, .773, .670.)
    """
    schedule = get(schedule)
    t = torch.as_tensor(t, dtype=torch.get_default_dtype()) if not torch.is_tensor(t) else t
    c = schedule(t)
    return c.sigma / (c.alpha + c.sigma)


def _same_path(a: Interpolant, b: Interpolant) -> bool:
    return type(a) is type(b) and repr(a) == repr(b)


def _check_snr_inverse(path: Interpolant, role: str) -> None:
    try:
        path.snr_inverse(torch.ones(1, dtype=torch.float64))
    except NotImplementedError:
        raise ValueError(
            f"{role} path {path!r} cannot invert its signal-to-noise ratio (snr_inverse is not implemented), "
            "which is needed to find its time at a given noise level; implement "
            f"{type(path).__name__}.snr_inverse(rho) (solve alpha_t / sigma_t = rho for t), or use a built-in path "
            "('linear', 'vp', 'cosine', 'polynomial-N')"
        ) from None


DIFFUSION_PATHS = ("linear", "vp")


def check_diffusion_path(path) -> Optional[Interpolant]:
    """Validate a ``diffusion_path``: None (g in the sampling path's own time), "linear", "vp" or an
    :class:`~toyflow.interpolants.Interpolant`; returns None or the interpolant, else a ValueError."""
    if path is None or isinstance(path, Interpolant):
        return path
    if isinstance(path, str) and path.lower() in DIFFUSION_PATHS:
        return get(path.lower())
    raise ValueError(
        f"unknown diffusion_path {path!r}; use None (g in the sampling path's own time), "
        f"{', '.join(map(repr, DIFFUSION_PATHS))} or an Interpolant instance"
    )


def transport_diffusion(
    g: Callable[[Tensor], Tensor], source: Union[str, Interpolant], target: Union[str, Interpolant]
) -> Callable[[Tensor], Tensor]:
    """Move a diffusion g, given in the time of path ``source``, to path ``target`` at equal noise level.

    Returns g_target(t) = sqrt(eta_ratio(source, g, t_src) * g^2_DDPM_target(t)) with
    t_src = source.snr_inverse(alpha_t / sigma_t) (target's alpha, sigma; clamped to [0, 1]), so
    ``eta_ratio(target, g_target, t) == eta_ratio(source, g, t_src)``. On the noise range both paths
    share this is exactly the scale-time image of the source SDE (g_target^2 = s^2 (dt_src/dt) g^2):
    the same process as the source path's SDE, written in the target path's time.

    Beyond the source path's noise range t_src is clamped, so the ratio is held at the source's end
    value: VP's r = 1 has alpha = 0.0066, so Linear times noisier than t_lin = 0.9935 get the ratio of
    VP at r = 1 (0.45 for 3 r^2). At Linear t = 1 (alpha = 0) g^2_DDPM is infinite, so a positive
    ratio there would need an infinite g: g_target raises a ValueError instead of returning inf or NaN
    (start the grid below t = 1, e.g. ``time_grid("vp-snr", ...)``, which starts at t = 0.9935).
    Where the ratio is 0 (g = 0), g_target is 0. Same source and target: ``g`` is returned as is.
    """
    source, target = get(source), get(target)
    if not callable(g):
        raise TypeError(f"g must be a callable g(t), e.g. diffusion_schedule('square', 3.0); got {type(g).__name__}")
    if _same_path(source, target):
        return g
    _check_snr_inverse(source, "the source (diffusion)")

    def g_target(t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.get_default_dtype()) if not torch.is_tensor(t) else t
        c = target(t)
        with torch.no_grad():
            rho = c.alpha / c.sigma  # sigma = 0 -> inf -> t_src = 0; alpha = 0 -> 0 -> the source's noisiest time
            t_src = source.snr_inverse(rho).clamp(0.0, 1.0)
        ratio = eta_ratio(source, g, t_src)
        d = ddpm_diffusion_squared(target, t)
        g2 = torch.where(ratio == 0, torch.zeros_like(ratio), ratio * d)
        bad = ~torch.isfinite(g2)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0]) if bad.dim() else 0
            tb, rb, db = float(t.reshape(-1)[i]), float(ratio.reshape(-1)[i]), float(d.reshape(-1)[i])
            raise ValueError(
                f"the diffusion transported from {source!r} to {target!r} is not finite at t = {tb:.4g} "
                f"(eta ratio {rb:.3g}, g^2_DDPM of the target {db:.3g})"
                + ("; alpha_t = 0 there (pure noise), where the DDPM diffusion is infinite, so a positive eta ratio "
                   "needs an infinite g: start the time grid below t = 1, e.g. time_grid='vp-snr' (the VP uniform "
                   "grid's noise levels; 0.9935 on the Linear path)" if math.isinf(db) else "")
            )
        return torch.sqrt(g2)

    g_target.source, g_target.target, g_target.g = source, target, g  # for inspection
    return g_target


def time_grid(
    kind: str = "uniform", steps: int = 10, *, dtype=torch.float32, device=None,
    schedule: Optional[Union[str, Interpolant]] = None,
) -> Tensor:
    """Decreasing times (steps + 1,) from 1 to 0. 'uniform': linspace; 'exp' (paper): t_k = sqrt(1 - (k/N)^2);
    'linear-snr': the times of ``schedule`` whose alpha/sigma equal those of the Linear path's uniform
    grid (the same noise levels, so a converted model is evaluated where the Linear sampler would be).
    'vp-snr': the times of ``schedule`` whose alpha/sigma equal those of the VP path's uniform grid
    r_k = 1 - k/N (for VP itself exactly the uniform grid); on the Linear path it starts at
    t_0 = 0.9935 (VP's r = 1 has alpha = 0.0066), below t = 1, so linear-sde and vp-sde run at the same
    noise levels and a diffusion transported from VP stays finite (see :func:`transport_diffusion`).
    The sampler still starts from x_init ~ N(0, I) at t_0, as the VP path does at r = 1."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if kind == "vp-snr":
        if schedule is None:
            raise ValueError("time grid 'vp-snr' needs the interpolant: time_grid('vp-snr', steps, schedule=...)")
        sched, vp = get(schedule), VP()
        r = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        if _same_path(sched, vp):
            return r.to(dtype=dtype, device=device)
        _check_snr_inverse(sched, "the sampling")
        c = vp(r[:-1])
        inner = sched.snr_inverse(c.alpha / c.sigma).clamp(0.0, 1.0)
        return torch.cat([inner, torch.zeros(1, dtype=torch.float64)]).to(dtype=dtype, device=device)
    if kind == "linear-snr":
        if schedule is None:
            raise ValueError("time grid 'linear-snr' needs the interpolant: time_grid('linear-snr', steps, schedule=...)")
        u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)[1:-1]
        inner = get(schedule).snr_inverse((1 - u) / u).clamp(0.0, 1.0)
        one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
        return torch.cat([one, inner, zero]).to(dtype=dtype, device=device)
    if kind == "uniform":
        return torch.linspace(1.0, 0.0, steps + 1, dtype=dtype, device=device)
    if kind == "exp":
        k = torch.arange(steps, dtype=torch.float64)
        t = torch.sqrt(1 - (k / steps) ** 2)
        return torch.cat([t, torch.zeros(1, dtype=torch.float64)]).to(dtype=dtype, device=device)
    raise ValueError(f"unknown time grid {kind!r}; use one of {', '.join(TIME_GRIDS)}")


def euler_step(x: Tensor, u: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
    """ODE Euler step: x + (t_next - t) u."""
    return x + _expand(t_next - t, x) * u


def sde_step(
    x: Tensor,
    u: Tensor,
    t: Tensor,
    t_next: Tensor,
    schedule: Union[str, Interpolant],
    g: Tensor,
    noise: Tensor,
) -> Tensor:
    """Euler-Maruyama: x - h u + h (g^2/2) score + g sqrt(h) z, with h = t - t_next and g = g(t): (B,)."""
    schedule = get(schedule)
    t = _batch_time(x, t)
    if bool((_coefficients(schedule, t).sigma <= 0).any()):
        raise ValueError("the score is undefined where sigma_t = 0 (t = 0 for these interpolants); use t > 0")
    return _sde_step(x, u, t, _batch_time(x, t_next), schedule, g, noise)


def _sde_step(x: Tensor, u: Tensor, t: Tensor, t_next: Tensor, schedule: Interpolant, g: Tensor, noise: Tensor) -> Tensor:
    """:func:`sde_step` for checked inputs (sigma_t > 0)."""
    h = t - t_next
    score = _score_from_velocity(x, u, t, schedule)
    he, ge = _expand(h, x), _expand(g, x)
    return x - he * u + he * (ge**2 / 2) * score + ge * torch.sqrt(he.clamp_min(0)) * noise


def step(
    x: Tensor,
    u: Tensor,
    t: Tensor,
    t_next: Tensor,
    schedule: Union[str, Interpolant],
    g: Optional[Tensor] = None,
    noise: Optional[Tensor] = None,
) -> Tensor:
    """One transition t -> t_next < t for every particle (t, t_next: (B,), may differ across particles).

    Particles whose t_next is 0 take the deterministic final step x <- x0_hat (Tweedie); this equals
    the Euler step for the Linear interpolant and stays finite for VP, whose sigma' blows up at 0.
    Others take an SDE step where g > 0 (needs ``noise`` shaped like x), an Euler step otherwise.
    """
    schedule = get(schedule)
    t, t_next = _batch_time(x, t), _batch_time(x, t_next)
    if bool((t_next > t).any()):
        raise ValueError("step goes from t down to t_next <= t (t = 1 noise, t = 0 data); got t_next > t")
    if g is not None:
        gt = g if torch.is_tensor(g) else torch.as_tensor(g, dtype=torch.float64)
        if not bool((torch.isfinite(gt) & (gt >= 0)).all()):
            bad = gt[~(torch.isfinite(gt) & (gt >= 0))].flatten()[0].item()
            raise ValueError(f"the diffusion g(t) must be finite and >= 0 (it is a noise scale), got {bad}; check the "
                             "diffusion callable (use diffusion='zero' or sde=False for the ODE)")
    stochastic = g is not None and bool((g > 0).any())
    if stochastic and noise is None:
        raise ValueError("an SDE step (g > 0) needs noise shaped like x; pass noise=torch.randn_like(x)")
    final = t_next == 0
    return _step(x, u, t, t_next, schedule, g if stochastic else None, noise, final if bool(final.any()) else None)


def _step(x: Tensor, u: Tensor, t: Tensor, t_next: Tensor, schedule: Interpolant, g: Optional[Tensor],
          noise: Optional[Tensor], final: Optional[Tensor]) -> Tensor:
    """:func:`step` for checked inputs: ``g`` None for an Euler step, ``final`` None where no particle
    reaches t = 0, else its (B,) mask."""
    if g is None:
        out = euler_step(x, u, t, t_next)
    else:
        # particles already at t = 0 have sigma = 0: keep them off the score computation
        safe_t = torch.where(t > 0, t, torch.ones_like(t))
        out = _sde_step(x, u, safe_t, torch.where(t > 0, t_next, safe_t), schedule, g, noise)
    if final is not None:
        x0 = _x0_from_velocity(x, u, t, schedule)
        out = torch.where(_expand(final, x), x0, out)
    return out


def heun_step(
    model: VelocityModel, x: Tensor, u: Tensor, t: Tensor, t_next: Tensor, schedule: Union[str, Interpolant]
) -> tuple[Tensor, int]:
    """Heun (2nd-order) ODE step; returns (x_next, extra model calls). Steps to t = 0 take x0_hat."""
    final = t_next == 0
    if bool(final.all()):
        return x0_from_velocity(x, u, t, schedule), 0
    x_euler = euler_step(x, u, t, t_next)
    u_next = check_velocity(model(x_euler, t_next), x)
    x_heun = x + _expand(t_next - t, x) * (u + u_next) / 2
    if bool(final.any()):
        x_heun = torch.where(_expand(final, x), x0_from_velocity(x, u, t, schedule), x_heun)
    return x_heun, 1


def renoise(
    x: Tensor, t: Tensor, t_to: Tensor, schedule: Union[str, Interpolant], noise: Tensor
) -> Tensor:
    """Forward transition kernel of the interpolant from t to a noisier t_to >= t:

    x_{t_to} = (alpha_to / alpha_t) x_t + sqrt(sigma_to^2 - (alpha_to / alpha_t)^2 sigma_t^2) z.
    """
    schedule = get(schedule)
    t, t_to = _batch_time(x, t), _batch_time(x, t_to)
    if bool((t_to < t).any()):
        raise ValueError("renoise goes from t up to t_to >= t")
    a, b = schedule(t), schedule(t_to)
    ratio = b.alpha / a.alpha
    var = (b.sigma**2 - ratio**2 * a.sigma**2).clamp_min(0)
    return _expand(ratio, x) * x + _expand(torch.sqrt(var), x) * noise


@dataclass
class Trajectory:
    """Result of :func:`sample`. ``x``: final sample (B, *shape). With ``record=True``: ``xs`` states
    (steps + 1, B, *shape) at ``times``; ``velocities`` and ``x0s`` (steps, B, *shape) at times[:-1]."""

    x: Tensor
    times: Tensor
    nfe: int
    xs: Optional[Tensor] = None
    velocities: Optional[Tensor] = None
    x0s: Optional[Tensor] = None
    sde: bool = False
    schedule: Optional[Interpolant] = field(default=None, repr=False)


@torch.no_grad()
def sample(
    model: VelocityModel,
    x_init: Tensor,
    schedule: Union[str, Interpolant] = "linear",
    steps: int = 10,
    sde: bool = False,
    diffusion: Diffusion = "square",
    eta: float = 3.0,
    time_grid: Union[str, Tensor] = "uniform",
    generator: Optional[torch.Generator] = None,
    solver: str = "euler",
    record: bool = False,
    diffusion_path: Optional[Union[str, Interpolant]] = None,
) -> Trajectory:
    """Integrate from t = 1 (x_init ~ N(0, I)) to t = 0 with the ODE (``sde=False``) or the SDE.

    ``time_grid`` is a name (see :data:`TIME_GRIDS`) or a decreasing tensor from 1 to 0. ``solver`` is
    'euler' or 'heun' (ODE only). The last step to t = 0 is x0_hat (see :func:`step`).
    ``diffusion_path``: None (g = diffusion_schedule(diffusion, eta) in ``schedule``'s own time) or a
    path ("linear", "vp", an Interpolant) in whose time g is given; it is moved to ``schedule`` at equal
    noise level with :func:`transport_diffusion` (the same SDE in continuous time). SDE only.
    """
    schedule = get(schedule)
    diffusion_path = check_diffusion_path(diffusion_path)
    if solver not in ("euler", "heun"):
        raise ValueError(f"unknown solver {solver!r}; use 'euler' or 'heun'")
    if solver == "heun" and sde:
        raise ValueError("solver='heun' is an ODE solver; use solver='euler' (Euler-Maruyama) with sde=True")
    if isinstance(time_grid, str):
        times = globals()["time_grid"](time_grid, steps, dtype=x_init.dtype, device=x_init.device, schedule=schedule)
    else:
        times = time_grid.to(dtype=x_init.dtype, device=x_init.device)
        if times.dim() != 1 or times.numel() < 2 or bool((times[1:] >= times[:-1]).any()):
            raise ValueError("a custom time_grid must be a strictly decreasing 1D tensor, e.g. from 1 to 0")
        check_time(times, name="time_grid")
    if sde and diffusion_path is not None:
        g_of_t = transport_diffusion(diffusion_schedule(diffusion, eta, diffusion_path), diffusion_path, schedule)
    else:
        g_of_t = diffusion_schedule(diffusion if sde else "zero", eta, schedule)
    x = x_init
    B = x.shape[0]
    xs, us, x0s = ([x] if record else None), ([] if record else None), ([] if record else None)
    nfe = 0
    # everything about the grid is checked here, once; the loop then runs the private kernels
    check_time(times, name="time_grid")
    grid = times.tolist()
    if any(b > a for a, b in zip(grid, grid[1:])):
        raise ValueError("step goes from t down to t_next <= t (t = 1 noise, t = 0 data); the time grid increases")
    g_grid = None
    if sde and solver == "euler":
        g_all = g_of_t(times[:-1])  # (K,): g at every step's start, element for element what g_of_t(t) gives
        g_all = torch.as_tensor(g_all, dtype=times.dtype, device=times.device).expand(len(grid) - 1)  # a constant g
        if not bool((torch.isfinite(g_all) & (g_all >= 0)).all()):
            bad = g_all[~(torch.isfinite(g_all) & (g_all >= 0))].flatten()[0].item()
            raise ValueError(f"the diffusion g(t) must be finite and >= 0 (it is a noise scale), got {bad}; check "
                             "the diffusion callable (use diffusion='zero' or sde=False for the ODE)")
        g_on = (g_all > 0).tolist()
        g_grid = [g_all[k].expand(B) for k in range(len(grid) - 1)]  # (B,) per step
    all_final = torch.ones(B, dtype=torch.bool, device=x.device)
    for k in range(len(grid) - 1):
        t = times[k].expand(B)
        t_next = times[k + 1].expand(B)
        u = check_velocity(model(x, t), x)
        nfe += 1
        if record:
            us.append(u)
            x0s.append(_x0_from_velocity(x, u, t, schedule))
        if solver == "heun":
            x, extra = heun_step(model, x, u, t, t_next, schedule)
            nfe += extra
        else:
            noise = None
            if sde:  # drawn at every SDE step, g > 0 or not, so the random stream does not depend on g
                noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            g = g_grid[k] if (sde and g_on[k]) else None
            x = _step(x, u, t, t_next, schedule, g, noise, all_final if grid[k + 1] == 0 else None)
        if record:
            xs.append(x)
    return Trajectory(
        x=x,
        times=times,
        nfe=nfe,
        xs=torch.stack(xs) if record else None,
        velocities=torch.stack(us) if record else None,
        x0s=torch.stack(x0s) if record else None,
        sde=sde,
        schedule=schedule,
    )
