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

from toyflow.interpolants import Interpolant, check_time, get

__all__ = [
    "x0_from_velocity",
    "noise_from_velocity",
    "score_from_velocity",
    "velocity_from_x0",
    "diffusion_schedule",
    "DIFFUSIONS",
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
TIME_GRIDS = ("uniform", "exp", "linear-snr")


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


def check_velocity(u: Tensor, x: Tensor, *, where: str = "model") -> Tensor:
    """Raise a clear error if a model's velocity has the wrong shape or holds NaN/inf."""
    if not torch.is_tensor(u):
        raise TypeError(f"{where} must return a torch.Tensor, got {type(u).__name__}")
    if u.shape != x.shape:
        raise ValueError(f"{where} returned shape {tuple(u.shape)}, expected the shape of x {tuple(x.shape)}")
    if not bool(torch.isfinite(u).all()):
        raise FloatingPointError(
            f"{where} returned NaN or inf velocities; check the model's weights and inputs "
            "(a diverged training run, or x blown up by too large steps or too large eta)"
        )
    return u


def x0_from_velocity(x: Tensor, u: Tensor, t: Union[Tensor, float], schedule: Union[str, Interpolant]) -> Tensor:
    """Tweedie / x0-prediction: x0_hat = (sigma u - d_sigma x) / D. At sigma = 0 (t = 0) it is x."""
    schedule = get(schedule)
    t = _batch_time(x, t)
    c = schedule(t)
    D = c.d_alpha * c.sigma - c.d_sigma * c.alpha
    at_data = c.sigma == 0
    num_u = torch.where(at_data, torch.zeros_like(c.sigma), c.sigma)
    num_x = torch.where(at_data, torch.full_like(c.sigma, -1.0), c.d_sigma)
    den = torch.where(at_data, torch.ones_like(D), D)
    return (_expand(num_u, x) * u - _expand(num_x, x) * x) / _expand(den, x)


def noise_from_velocity(x: Tensor, u: Tensor, t: Union[Tensor, float], schedule: Union[str, Interpolant]) -> Tensor:
    """Noise prediction: x1_hat = (d_alpha x - alpha u) / D."""
    schedule = get(schedule)
    t = _batch_time(x, t)
    c = schedule(t)
    D = c.d_alpha * c.sigma - c.d_sigma * c.alpha
    return (_expand(c.d_alpha, x) * x - _expand(c.alpha, x) * u) / _expand(D, x)


def score_from_velocity(x: Tensor, u: Tensor, t: Union[Tensor, float], schedule: Union[str, Interpolant]) -> Tensor:
    """Score of p_t: grad log p_t(x) = -x1_hat / sigma (undefined at t = 0, where sigma = 0)."""
    schedule = get(schedule)
    tb = _batch_time(x, t)
    sigma = schedule(tb).sigma
    if bool((sigma <= 0).any()):
        raise ValueError("the score is undefined where sigma_t = 0 (t = 0 for these interpolants); use t > 0")
    return -noise_from_velocity(x, u, tb, schedule) / _expand(sigma, x)


def velocity_from_x0(x: Tensor, x0: Tensor, t: Union[Tensor, float], schedule: Union[str, Interpolant]) -> Tensor:
    """Inverse of x0_from_velocity: u = d_alpha x0 + d_sigma x1_hat with x1_hat = (x - alpha x0) / sigma."""
    schedule = get(schedule)
    t = _batch_time(x, t)
    c = schedule(t)
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


def time_grid(
    kind: str = "uniform", steps: int = 10, *, dtype=torch.float32, device=None,
    schedule: Optional[Union[str, Interpolant]] = None,
) -> Tensor:
    """Decreasing times (steps + 1,) from 1 to 0. 'uniform': linspace; 'exp' (paper): t_k = sqrt(1 - (k/N)^2);
    'linear-snr': the times of ``schedule`` whose alpha/sigma equal those of the Linear path's uniform
    grid (the same noise levels, so a converted model is evaluated where the Linear sampler would be)."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
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
    h = t - t_next
    score = score_from_velocity(x, u, t, schedule)
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
    final = t_next == 0
    if g is None or not bool((g > 0).any()):
        out = euler_step(x, u, t, t_next)
    else:
        if noise is None:
            raise ValueError("an SDE step (g > 0) needs noise shaped like x; pass noise=torch.randn_like(x)")
        # particles already at t = 0 have sigma = 0: keep them off the score computation
        safe_t = torch.where(t > 0, t, torch.ones_like(t))
        out = sde_step(x, u, safe_t, torch.where(t > 0, t_next, safe_t), schedule, g, noise)
    if bool(final.any()):
        x0 = x0_from_velocity(x, u, t, schedule)
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
) -> Trajectory:
    """Integrate from t = 1 (x_init ~ N(0, I)) to t = 0 with the ODE (``sde=False``) or the SDE.

    ``time_grid`` is a name ('uniform', 'exp') or a decreasing tensor from 1 to 0. ``solver`` is
    'euler' or 'heun' (ODE only). The last step to t = 0 is x0_hat (see :func:`step`).
    """
    schedule = get(schedule)
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
    g_of_t = diffusion_schedule(diffusion if sde else "zero", eta, schedule)
    x = x_init
    B = x.shape[0]
    xs, us, x0s = ([x] if record else None), ([] if record else None), ([] if record else None)
    nfe = 0
    for k in range(times.numel() - 1):
        t = times[k].expand(B)
        t_next = times[k + 1].expand(B)
        u = check_velocity(model(x, t), x)
        nfe += 1
        if record:
            us.append(u)
            x0s.append(x0_from_velocity(x, u, t, schedule))
        if solver == "heun":
            x, extra = heun_step(model, x, u, t, t_next, schedule)
            nfe += extra
        else:
            g = g_of_t(t) if sde else None
            noise = None
            if sde:
                noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x = step(x, u, t, t_next, schedule, g=g, noise=noise)
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
