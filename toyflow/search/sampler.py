"""The sampler: how particles move on the time grid, as one value.

A :class:`Sampler` holds the five choices that the mode strings bundle:

- ``path``: the interpolant the particles move on, x_t = alpha_t x_0 + sigma_t x_1;
- ``model_path``: the interpolant the velocity model was trained on. Where it differs from ``path``
  (value equality, see :mod:`toyflow.interpolants`) the model is converted by the scale-time
  transform (Kim et al. 2025, Sec. 3.2): u_path(x, r) = (ds/s) x + s dt u_model(x / s, t_r);
- ``diffusion``: None for the ODE (g = 0), else g_t as a name or a callable g(t)
  (:func:`toyflow.dynamics.diffusion_schedule`), and ``eta`` its scale;
- ``diffusion_path``: the interpolant in whose time g is given (None: ``path``'s own); g is moved to
  ``path`` at equal noise level (:func:`toyflow.dynamics.transport_diffusion`);
- ``time_grid``: the grid t_0 = 1 > ... > t_K = 0 (:func:`toyflow.dynamics.time_grid`).

The paper's three rows are presets, built from :class:`~toyflow.search.options.SamplerOptions`
(the keyword options ``diffusion``, ``eta``, ``time_grid``, ``diffusion_path`` of ``search.run``):

==========  ======  ==========  =============================================
mode        path    model_path  diffusion
==========  ======  ==========  =============================================
linear-ode  Linear  Linear      None (the ODE; diffusion and eta are ignored)
linear-sde  Linear  Linear      ``options.diffusion`` (default g_t = 3 t^2)
vp-sde      VP      Linear      ``options.diffusion`` in VP time (default g_r = 3 r^2)
==========  ======  ==========  =============================================

:data:`MODES` lists their names; it is the one list of modes (demo, figures, viz and the benchmark
read it). ``search.run(..., mode=Sampler(...))`` runs any other combination, e.g. a model trained
on VP sampled on its own path: ``Sampler(path=VP(), model_path=VP(), diffusion="square")``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Iterable, Optional, Union

from toyflow import interpolants
from toyflow.dynamics import DIFFUSIONS, TIME_GRIDS, check_diffusion_path
from toyflow.interpolants import Interpolant
from toyflow.search.options import SamplerOptions

__all__ = ["Sampler", "PRESETS", "MODES", "resolve_sampler"]


@dataclass(frozen=True)
class Sampler:
    """How particles move: sampling path, model conversion, diffusion (and its time), eta, time grid.

    Compared and hashed by its fields (``name`` excluded: a label for tables and figures, the
    preset's name or "custom"). Strings are accepted for the paths ("linear", "vp", ...).
    """

    path: Interpolant = field(default_factory=interpolants.Linear)
    model_path: Interpolant = field(default_factory=interpolants.Linear)
    diffusion: Optional[Union[str, Callable]] = None
    eta: float = 3.0
    diffusion_path: Optional[Interpolant] = None
    time_grid: str = "uniform"
    name: str = field(default="custom", compare=False)

    def __post_init__(self):
        for role in ("path", "model_path"):
            object.__setattr__(self, role, interpolants.get(getattr(self, role)))  # ValueError naming the valid ones
        object.__setattr__(self, "diffusion_path", check_diffusion_path(self.diffusion_path))
        d = self.diffusion
        if d is not None and not callable(d) and d not in DIFFUSIONS:
            raise ValueError(f"unknown diffusion {d!r}; use None (the ODE), one of {', '.join(DIFFUSIONS)} or a "
                             "callable g(t)")
        eta = self.eta
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not (math.isfinite(eta) and eta >= 0):
            raise ValueError(f"eta must be a finite number >= 0, got {self.eta!r}")
        if self.time_grid not in TIME_GRIDS:
            raise ValueError(f"unknown time_grid {self.time_grid!r}; use one of {', '.join(TIME_GRIDS)}")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string (a label), got {self.name!r}")

    @property
    def sde(self) -> bool:
        """True unless the diffusion is None (the ODE)."""
        return self.diffusion is not None

    @property
    def converts(self) -> bool:
        """True when the model is converted from ``model_path`` to ``path`` (they differ as values)."""
        return self.model_path != self.path

    @classmethod
    def preset(cls, mode: str, **options) -> "Sampler":
        """The sampler of a named mode ("linear-ode", "linear-sde", "vp-sde") with
        :class:`~toyflow.search.options.SamplerOptions` keys (diffusion, eta, time_grid, diffusion_path)."""
        return resolve_sampler(mode, SamplerOptions(**options))


def _linear_ode(o: SamplerOptions) -> Sampler:
    """The Linear path, g = 0 (an ODE step has one outcome)."""
    return Sampler(path=interpolants.Linear(), model_path=interpolants.Linear(), diffusion=None, eta=o.eta,
                   diffusion_path=o.diffusion_path, time_grid=o.time_grid, name="linear-ode")


def _linear_sde(o: SamplerOptions) -> Sampler:
    """The Linear path with the SDE of ``o.diffusion`` (the paper: g_t = 3 t^2)."""
    return Sampler(path=interpolants.Linear(), model_path=interpolants.Linear(), diffusion=o.diffusion, eta=o.eta,
                   diffusion_path=o.diffusion_path, time_grid=o.time_grid, name="linear-sde")


def _vp_sde(o: SamplerOptions) -> Sampler:
    """The Linear-trained model converted to the VP path, with the SDE of ``o.diffusion`` (the paper's best)."""
    return Sampler(path=interpolants.VP(), model_path=interpolants.Linear(), diffusion=o.diffusion, eta=o.eta,
                   diffusion_path=o.diffusion_path, time_grid=o.time_grid, name="vp-sde")


#: mode name -> function(SamplerOptions) -> Sampler; the paper's three rows
PRESETS = MappingProxyType({"linear-ode": _linear_ode, "linear-sde": _linear_sde, "vp-sde": _vp_sde})
#: the mode names, in the paper's order: the one list of modes
MODES = tuple(PRESETS)


def resolve_sampler(mode: Union[str, Sampler], options: SamplerOptions, given: Iterable[str] = ()) -> Sampler:
    """The Sampler of ``mode``: a preset name built from ``options``, or a :class:`Sampler` with the
    option keys the caller ``given`` explicitly put in its place."""
    if isinstance(mode, Sampler):
        given = tuple(given)
        return dataclasses.replace(mode, **{k: getattr(options, k) for k in given}) if given else mode
    if isinstance(mode, str) and mode in PRESETS:
        return PRESETS[mode](options)
    raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(map(repr, MODES))} or a search.Sampler value")
