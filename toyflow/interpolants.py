"""Interpolants (noise schedules) and the scale-time conversion between them.

Time convention (the paper's): t = 0 is data, t = 1 is noise,

    x_t = alpha_t * x_0 + sigma_t * x_1,   x_1 ~ N(0, I).

An interpolant maps ``t`` to a frozen :class:`Coefficients` ``(alpha, sigma, d_alpha, d_sigma)``
and inverts the signal-to-noise ratio with :meth:`Interpolant.snr_inverse`.

Interpolants are values: ``==`` and ``hash`` go by the type and the parameters
(``VP() == VP(0.1, 20)``, ``Polynomial(2) != Polynomial(3)``). The built-ins are frozen dataclasses;
a subclass of your own is compared by its dataclass fields, or else by its instance attributes
(``vars(self)``), so ``class Power(Interpolant)`` with ``self.p = p`` needs no ``__eq__`` of its own.
:func:`convert` turns a velocity model trained on one interpolant into the velocity model of
another interpolant with the same data distribution (Kim et al. 2025, Sec. 3.2).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np

import torch
from torch import Tensor

__all__ = [
    "Coefficients",
    "Interpolant",
    "Linear",
    "VP",
    "Cosine",
    "Polynomial",
    "get",
    "convert",
    "ConvertedVelocity",
    "check_time",
]

VelocityModel = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Coefficients:
    """alpha_t, sigma_t and their time derivatives, each shaped like ``t``."""

    alpha: Tensor
    sigma: Tensor
    d_alpha: Tensor
    d_sigma: Tensor


def check_time(t: Tensor, *, name: str = "t") -> Tensor:
    """Raise a clear error unless every entry of ``t`` is a finite number in [0, 1]."""
    if not torch.is_tensor(t):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}; wrap it with torch.as_tensor")
    if not torch.is_floating_point(t):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}; use t.float()")
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf; times must be finite numbers in [0, 1]")
    if t.numel() and (bool((t < 0).any()) or bool((t > 1).any())):
        lo, hi = float(t.min()), float(t.max())
        raise ValueError(
            f"{name} must lie in [0, 1] (t = 0 is data, t = 1 is noise), got values in [{lo:.4g}, {hi:.4g}]; "
            "if your code uses the other convention (t = 0 noise), pass 1 - t"
        )
    return t


def _as_value(v: Any) -> Any:
    """A parameter as a hashable value compared by content (tensors and arrays by dtype, shape, entries)."""
    if torch.is_tensor(v):
        return ("tensor", str(v.dtype), tuple(v.shape), tuple(v.detach().cpu().flatten().tolist()))
    if isinstance(v, np.ndarray):
        return ("array", str(v.dtype), v.shape, tuple(v.ravel().tolist()))
    if isinstance(v, (list, tuple)):
        return tuple(_as_value(e) for e in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _as_value(e)) for k, e in v.items()))
    try:
        hash(v)
    except TypeError:
        raise TypeError(
            f"interpolant parameter {v!r} ({type(v).__name__}) cannot be compared by value; store it as a number, "
            "tuple or tensor, or give your interpolant its own __eq__ and __hash__"
        ) from None
    return v


class Interpolant:
    """Base class: a subclass implements ``coefficients(t) -> Coefficients`` and ``snr_inverse(rho)``.

    Equality and hash go by the type and the parameters (dataclass fields, or else the instance
    attributes), so two interpolants with the same parameters are the same path.
    """

    name: str = "interpolant"

    def _parameters(self) -> tuple:
        """((name, value), ...) that identify this path: dataclass fields, or ``vars(self)`` sorted."""
        if dataclasses.is_dataclass(self):
            return tuple((f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if f.compare)
        return tuple(sorted(vars(self).items()))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Interpolant):
            return NotImplemented
        if type(self) is not type(other):
            return False
        mine, theirs = self._parameters(), other._parameters()
        return [k for k, _ in mine] == [k for k, _ in theirs] and all(
            _as_value(a) == _as_value(b) for (_, a), (_, b) in zip(mine, theirs)
        )

    def __hash__(self) -> int:
        return hash((type(self), tuple((k, _as_value(v)) for k, v in self._parameters())))

    def __call__(self, t: Tensor) -> Coefficients:
        t = check_time(torch.as_tensor(t) if not torch.is_tensor(t) else t)
        return self.coefficients(t)

    def coefficients(self, t: Tensor) -> Coefficients:  # pragma: no cover - abstract
        raise NotImplementedError

    def snr_inverse(self, rho: Tensor) -> Tensor:
        """Solve alpha_t / sigma_t = rho for t (rho >= 0; rho = inf gives t = 0)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._parameters())
        return f"{type(self).__name__}({args})"


@dataclass(frozen=True, eq=False, repr=False)
class Linear(Interpolant):
    """Rectified flow: alpha = 1 - t, sigma = t."""

    name = "linear"

    def coefficients(self, t: Tensor) -> Coefficients:
        one = torch.ones_like(t)
        return Coefficients(alpha=1 - t, sigma=t, d_alpha=-one, d_sigma=one)

    def snr_inverse(self, rho: Tensor) -> Tensor:
        return 1.0 / (1.0 + rho)


@dataclass(frozen=True, eq=False, repr=False)
class Polynomial(Interpolant):
    """alpha = (1 - t)^n, sigma = 1 - (1 - t)^n (n = 1 is Linear)."""

    n: float = 2.0

    def __post_init__(self):
        if isinstance(self.n, bool) or not isinstance(self.n, (int, float)) or not self.n > 0:
            raise ValueError(f"Polynomial needs n > 0, got n = {self.n!r}")
        object.__setattr__(self, "n", float(self.n))

    @property
    def name(self) -> str:
        return f"polynomial-{self.n:g}"

    def coefficients(self, t: Tensor) -> Coefficients:
        n = self.n
        a = (1 - t) ** n
        da = -n * (1 - t) ** (n - 1)
        return Coefficients(alpha=a, sigma=1 - a, d_alpha=da, d_sigma=-da)

    def snr_inverse(self, rho: Tensor) -> Tensor:
        # alpha / (1 - alpha) = rho  =>  alpha = rho / (1 + rho)
        a = rho / (1 + rho)
        return 1 - a ** (1 / self.n)

    def __repr__(self) -> str:
        return f"Polynomial(n={self.n:g})"


@dataclass(frozen=True, eq=False, repr=False)
class Cosine(Interpolant):
    """alpha = cos(pi t / 2), sigma = sin(pi t / 2)."""

    name = "cosine"

    def coefficients(self, t: Tensor) -> Coefficients:
        h = math.pi / 2
        return Coefficients(
            alpha=torch.cos(h * t), sigma=torch.sin(h * t), d_alpha=-h * torch.sin(h * t), d_sigma=h * torch.cos(h * t)
        )

    def snr_inverse(self, rho: Tensor) -> Tensor:
        return torch.atan2(torch.ones_like(rho), rho) * (2 / math.pi)


@dataclass(frozen=True, eq=False, repr=False)
class VP(Interpolant):
    """Variance preserving (the paper's): T(t) = t^2 (b_max - b_min) / 2 + t b_min,
    alpha = exp(-T/2), sigma = sqrt(1 - exp(-T))."""

    name = "vp"
    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self):
        b0, b1 = self.beta_min, self.beta_max
        if not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in (b0, b1)) or not (0 <= b0 < b1):
            raise ValueError(f"VP needs 0 <= beta_min < beta_max, got beta_min={b0!r}, beta_max={b1!r}")
        object.__setattr__(self, "beta_min", float(b0))
        object.__setattr__(self, "beta_max", float(b1))

    def _T(self, t: Tensor) -> tuple[Tensor, Tensor]:
        b0, b1 = self.beta_min, self.beta_max
        return 0.5 * t**2 * (b1 - b0) + t * b0, t * (b1 - b0) + b0

    def coefficients(self, t: Tensor) -> Coefficients:
        T, dT = self._T(t)
        alpha = torch.exp(-0.5 * T)
        one_minus = -torch.expm1(-T)  # 1 - exp(-T), accurate for small T
        sigma = torch.sqrt(one_minus)
        d_alpha = -0.5 * dT * alpha
        # d sigma / dt = dT exp(-T) / (2 sigma): infinite at t = 0, where sigma = 0
        d_sigma = torch.where(sigma > 0, dT * torch.exp(-T) / (2 * sigma.clamp_min(torch.finfo(t.dtype).tiny)),
                              torch.full_like(t, math.inf))
        return Coefficients(alpha=alpha, sigma=sigma, d_alpha=d_alpha, d_sigma=d_sigma)

    def snr_inverse(self, rho: Tensor) -> Tensor:
        b0, b1 = self.beta_min, self.beta_max
        # T = -log(rho^2 / (1 + rho^2)) = log1p(rho^-2), stable for large rho
        T = torch.log1p(rho.pow(-2))
        return (-b0 + torch.sqrt(b0**2 + 2 * (b1 - b0) * T)) / (b1 - b0)

    def __repr__(self) -> str:
        return f"VP(beta_min={self.beta_min:g}, beta_max={self.beta_max:g})"


_NAMED = {"linear": Linear, "vp": VP, "cosine": Cosine}


def get(schedule: Union[str, Interpolant]) -> Interpolant:
    """Return an interpolant from a name ("linear", "vp", "cosine", "polynomial-N") or pass one through."""
    if isinstance(schedule, Interpolant):
        return schedule
    if isinstance(schedule, str):
        key = schedule.lower()
        if key in _NAMED:
            return _NAMED[key]()
        if key.startswith("polynomial-"):
            try:
                return Polynomial(float(key.split("-", 1)[1]))
            except ValueError:
                pass
    raise ValueError(
        f"unknown interpolant {schedule!r}; use one of 'linear', 'vp', 'cosine', 'polynomial-N' "
        "or an Interpolant instance"
    )


def _expand(c: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) so it broadcasts against x: (B, *shape)."""
    return c.reshape(c.shape + (1,) * (x.dim() - c.dim()))


class ConvertedVelocity(torch.nn.Module):
    """Velocity model for ``target`` built from a velocity model for ``source`` (scale-time transform).

    For target time r: t_r = snr_inverse_source(abar_r / sbar_r), s_r = sbar_r / sigma_{t_r},

        ubar_r(x) = (ds_r / s_r) x + s_r dt_r u_{t_r}(x / s_r).
    """

    def __init__(self, model: VelocityModel, source: Interpolant, target: Interpolant):
        super().__init__()
        self.model = model
        self.source = get(source)
        self.target = get(target)

    def source_time_and_scale(self, r: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(t_r, s_r, dt_r, ds_r), each shaped like r."""
        tc = self.target(r)
        rho = tc.alpha / tc.sigma
        t = self.source.snr_inverse(rho).clamp(0.0, 1.0)
        sc = self.source(t)
        s = tc.sigma / sc.sigma
        dt = sc.sigma**2 * (tc.sigma * tc.d_alpha - tc.alpha * tc.d_sigma) / (
            tc.sigma**2 * (sc.sigma * sc.d_alpha - sc.alpha * sc.d_sigma)
        )
        ds = (sc.sigma * tc.d_sigma - tc.sigma * sc.d_sigma * dt) / sc.sigma**2
        return t, s, dt, ds

    def forward(self, x: Tensor, r: Tensor) -> Tensor:
        t, s, dt, ds = self.source_time_and_scale(r)
        finite = torch.isfinite(s) & torch.isfinite(dt) & torch.isfinite(ds) & (s > 0)
        if not bool(finite.all()):
            bad = (r.expand_as(s) if torch.is_tensor(r) else torch.as_tensor(r).expand_as(s))[~finite].flatten()[0].item()
            raise ValueError(f"the converted velocity ({self.source.name} -> {self.target.name}) is undefined at r = {bad:g}: "
                             "both paths' sigma must be > 0 there (r = 0 is the data end); evaluate it at r > 0")
        se, dte, dse = _expand(s, x), _expand(dt, x), _expand(ds, x)
        return (dse / se) * x + se * dte * self.model(x / se, t)


def convert(model: VelocityModel, source: Union[str, Interpolant], target: Union[str, Interpolant]) -> VelocityModel:
    """Turn a velocity model of ``source`` into one of ``target`` (same data distribution).

    Valid for times r where both sigma's are positive (r > 0); samplers never evaluate r = 0.
    The model is returned unchanged when ``source == target`` (value equality: same type and
    parameters), else wrapped in a :class:`ConvertedVelocity`.
    """
    source, target = get(source), get(target)
    if source == target:
        return model
    return ConvertedVelocity(model, source, target)
