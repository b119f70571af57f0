"""Typed options for :func:`toyflow.search.run`: one dataclass per method plus the common sampler.

``run(method, ..., **options)`` splits ``options`` into :class:`SamplerOptions` keys and the
method's own keys; any other key raises a TypeError listing the valid ones (nothing is silently
dropped). Defaults follow the paper (Kim et al. 2025) where it states them; where it does not (or
where we could not check it), the docstring says "toyflow's choice".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from toyflow.dynamics import DIFFUSIONS, TIME_GRIDS, check_diffusion_path
from toyflow.interpolants import Interpolant
from toyflow.search.budget import AllocationScheme, Rollover, Uniform

__all__ = [
    "SamplerOptions",
    "BoNOptions",
    "SoPOptions",
    "SMCOptions",
    "SVDDOptions",
    "CoDeOptions",
    "RBFOptions",
    "RBFStrictOptions",
    "DPSOptions",
    "RBFDPSOptions",
    "OPTIONS",
    "build_options",
    "valid_keys",
]


def _positive_int(name: str, v: Any, minimum: int = 1) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")


def _positive_float(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")


def _allocation(v: Any) -> None:
    if not isinstance(v, AllocationScheme):
        raise TypeError(
            f"allocation must be an AllocationScheme (Uniform(), LinearDecay(), Rollover(...) or your own "
            f"subclass), got {type(v).__name__}"
        )


@dataclass(frozen=True)
class SamplerOptions:
    """How particles move (all methods).

    - ``diffusion``: g_t for the SDE modes, a name ("square", "constant", "linear", "sigma") or a
      callable g(t). Paper: "square", g_t = eta t^2. Ignored in "linear-ode" (g = 0).
    - ``eta``: diffusion scale. Paper: 3.0.
    - ``time_grid``: "uniform" (linspace 1 -> 0, the default here), "exp" (the paper's
      t_k = sqrt(1 - (k/K)^2)), "linear-snr" (in vp-sde mode: the VP times with the noise levels
      of the Linear uniform grid; the same as "uniform" in the Linear modes) or "vp-snr" (in the
      Linear modes: the Linear times with the noise levels of the VP uniform grid, starting at
      t = 0.9935; the same as "uniform" in vp-sde), so the two paths can be run at identical noise levels.
    - ``diffusion_path``: the path in whose time g is given. None (default): the sampling path's
      own time (Linear in the Linear modes, VP in vp-sde; the paper's code). "linear", "vp" or an
      :class:`~toyflow.interpolants.Interpolant`: g = diffusion_schedule(diffusion, eta, that path)
      is a function of that path's time, moved to the sampling path at equal noise level
      (:func:`toyflow.dynamics.transport_diffusion`, same eta ratio g^2 / g^2_DDPM), which in
      continuous time is the same SDE. So ``mode="linear-sde", diffusion_path="vp"`` is vp-sde's
      stochasticity on the Linear path, and ``mode="vp-sde", diffusion_path="linear"`` the converse.
      A positive g from another path is infinite at Linear t = 1: use ``time_grid="vp-snr"`` there.
    """

    diffusion: Union[str, Callable] = "square"
    eta: float = 3.0
    time_grid: str = "uniform"
    diffusion_path: Optional[Union[str, Interpolant]] = None

    def __post_init__(self):
        check_diffusion_path(self.diffusion_path)  # ValueError listing the valid values
        if not callable(self.diffusion) and self.diffusion not in DIFFUSIONS:
            raise ValueError(f"unknown diffusion {self.diffusion!r}; use one of {', '.join(DIFFUSIONS)} or a callable g(t)")
        if isinstance(self.eta, bool) or not isinstance(self.eta, (int, float)) or not (math.isfinite(self.eta) and self.eta >= 0):
            raise ValueError(f"eta must be a finite number >= 0, got {self.eta!r}")
        if self.time_grid not in TIME_GRIDS:
            raise ValueError(f"unknown time_grid {self.time_grid!r}; use one of {', '.join(TIME_GRIDS)}")


@dataclass(frozen=True)
class BoNOptions:
    """Best-of-N: N = budget // steps independent trajectories, keep the best final reward. No options."""


@dataclass(frozen=True)
class SoPOptions:
    """Search over paths (Ma et al. 2025) on the time grid t_0 = 1 > ... > t_K = 0.

    - ``paths`` N: paths kept between iterations. toyflow's choice: 2.
    - ``branch`` M: candidates per kept path per iteration; None (default) = the largest M whose
      schedule fits the budget.
    - ``start``: phase 0 denoises the N paths to grid index s = round(start * K) (clamped to
      [renoise_steps, K - 1]). toyflow's choice: 0.5.
    - ``renoise_steps`` f: each iteration re-noises by f grid steps (Delta_f) with the interpolant's
      forward kernel and denoises f + 1 steps (Delta_b), so the search advances one grid step per
      iteration. toyflow's choice: 1.

    NFE: N (s + 1) for phase 0 (evaluations at t_0 .. t_s) plus, per iteration from index i,
    N M (f + 2) (evaluations at t_{i-f} .. t_i and at the landing time t_{i+1}; f + 1 for the last
    iteration, which lands on t_K = 0 where x0_hat is exact).
    """

    paths: int = 2
    branch: Optional[int] = None
    start: float = 0.5
    renoise_steps: int = 1

    def __post_init__(self):
        _positive_int("paths", self.paths)
        if self.branch is not None:
            _positive_int("branch", self.branch)
        if isinstance(self.start, bool) or not isinstance(self.start, (int, float)) or not 0.0 < self.start < 1.0:
            raise ValueError(f"start must be a fraction of the steps in (0, 1), got {self.start!r}")
        _positive_int("renoise_steps", self.renoise_steps)


@dataclass(frozen=True)
class SMCOptions:
    """Sequential Monte Carlo with x0_hat-reward potentials.

    - ``lam``: temperature; incremental weights exp((r_k - r_{k-1}) / lam) (r_{-1} = 0), so the
      final target is p_0(x) exp(r(x) / lam). toyflow's choice: 1.0 (scale it with your reward).
    - ``ess_threshold``: resample when ESS < ess_threshold * N. Default 0.5.
    - ``resample``: "systematic" (default, lower variance) or "multinomial".
    - ``output``: "best" (default: the final particle with the highest reward, as for the other
      search methods) or "sample" (one final particle drawn by its weight).
    """

    lam: float = 1.0
    ess_threshold: float = 0.5
    resample: str = "systematic"
    output: str = "best"

    def __post_init__(self):
        _positive_float("lam", self.lam)
        if isinstance(self.ess_threshold, bool) or not isinstance(self.ess_threshold, (int, float)) or not 0 <= self.ess_threshold <= 1:
            raise ValueError(f"ess_threshold must be in [0, 1], got {self.ess_threshold!r}")
        if self.resample not in ("systematic", "multinomial"):
            raise ValueError(f"resample must be 'systematic' or 'multinomial', got {self.resample!r}")
        if self.output not in ("best", "sample"):
            raise ValueError(f"output must be 'best' or 'sample', got {self.output!r}")


@dataclass(frozen=True)
class SVDDOptions:
    """SVDD: at each search step, M = quota candidates from the current particle; keep the best.

    - ``allocation``: the per-step quota; default :class:`~toyflow.search.budget.Uniform` (the
      paper's M = budget / steps, spread so the whole budget is used).
    """

    allocation: AllocationScheme = field(default_factory=Uniform)

    def __post_init__(self):
        _allocation(self.allocation)


@dataclass(frozen=True)
class CoDeOptions:
    """CoDe: SVDD over blocks of ``block`` search steps; each candidate is a path through the block.

    - ``block`` L: search steps per block (L = 1 is SVDD). toyflow's choice: 2 (the paper does not
      state L for its 10-step runs in a form we could check; the official code defaults to 1).
    - ``allocation``: per search step, as for SVDD; a block of L steps runs M = (sum of its
      steps' quotas) // L candidate paths. Default Uniform.
    """

    block: int = 2
    allocation: AllocationScheme = field(default_factory=Uniform)

    def __post_init__(self):
        _positive_int("block", self.block)
        _allocation(self.allocation)


# the official code's initial batch: 25 noises at a budget of 500 NFE per run, i.e. one NFE in 20
INITIAL_SHARE = 20


@dataclass(frozen=True)
class RBFOptions:
    """Rollover Budget Forcing, run as the paper's official code runs it (the default).

    - ``initial_particles``: initial noises drawn at t = 1; the best x0_hat reward is kept. ``None``
      (default): the official code's batch scaled with the budget, ``max(1, budget // 20)``
      (25 at budget 500, 5 at 100, 50 at 1000; the whole budget when ``steps == 1``). An int fixes
      it (the paper's text: 1). The budget must hold the initial draws plus one draw per search step
      (``initial + steps - 1``), else ``search.run`` raises a ValueError naming both numbers.
    - ``spend_rest_at_last_step``: at the last search step, do not stop at the first improving
      candidate: draw every NFE left and keep the best, so every run spends its whole budget
      (``res.nfe == budget``). Official code: True (default). The paper's text: False.
    - ``allocation``: per-step quota; default ``Rollover(Uniform())`` (uniform base quota, unused
      NFE roll over to the next step). The scheme may read the search state
      (:class:`~toyflow.search.budget.AllocationState`: best reward, what the last step drew and
      accepted, ...).
    - ``rollover``: what happens to the quota a step leaves unused with a scheme that is not a
      :class:`~toyflow.search.budget.Rollover`: None (default) makes that an error (RBF stops at the
      first improvement, so a plain scheme would silently lose it); True wraps the scheme in
      ``Rollover(...)``; False drops the leftover, explicitly.
    - ``proposals_per_tick``: how many of its next proposals a run evaluates in one model call
      (speed only; the same algorithm). The paper draws one at a time and stops at the first that
      improves; a chunk of m draws evaluated together is read in draw order, the NFE ledger charges
      the draws up to and including the accepted one, and the later ones are discarded unread
      (``SearchResult.discarded``), so the samples have the same distribution and the same NFE
      accounting (the random stream differs, so results differ from ``1`` draw by draw).
      ``None`` (default): adaptive; a run at grid time t_k draws ``1 + floor(2 s / p_k)`` at once,
      p_k = (early acceptances + 1) / (draws + 1) seen at t_k so far in this call and s =
      ``discard_share``, capped at ``4 * runs / (runs still searching)`` and at the run's remaining
      quota. ``1``: strictly one evaluation per draw. Where no early stop is possible (the last
      search step with ``spend_rest_at_last_step``) nothing is discarded whatever the width.
    - ``discard_share``: the adaptive width's target of discarded draws per charged draw (about
      s / (1 + s) of the evaluations). 0.5 (default) suits cheap models, where a model call's fixed
      overhead dominates; for an expensive model (an image UNet) lower it (0.1) or set
      ``proposals_per_tick=1``: there a discarded evaluation costs about as much as a charged one.
      0 gives one draw per call.
    """

    initial_particles: Optional[int] = None
    spend_rest_at_last_step: bool = True
    allocation: AllocationScheme = field(default_factory=lambda: Rollover(Uniform()))
    rollover: Optional[bool] = None
    proposals_per_tick: Optional[int] = None
    discard_share: float = 0.5

    def __post_init__(self):
        if self.initial_particles is not None:
            _positive_int("initial_particles", self.initial_particles)
        if self.proposals_per_tick is not None:
            _positive_int("proposals_per_tick", self.proposals_per_tick)
        ds = self.discard_share
        if isinstance(ds, bool) or not isinstance(ds, (int, float)) or not (math.isfinite(ds) and ds >= 0):
            raise ValueError(f"discard_share must be a finite number >= 0, got {ds!r} (0.5 is the default; 0: one draw per call)")
        if self.proposals_per_tick is not None and ds != 0.5:
            raise ValueError("discard_share only applies to the adaptive width (proposals_per_tick=None); "
                             f"got proposals_per_tick={self.proposals_per_tick} and discard_share={ds}: set one of them")
        if not isinstance(self.spend_rest_at_last_step, bool):
            raise TypeError(f"spend_rest_at_last_step must be True or False, got {self.spend_rest_at_last_step!r}")
        _allocation(self.allocation)
        self._check_rollover()

    def _check_rollover(self) -> None:
        """A plain scheme gets the rollover explicitly (``rollover=True``: wrapped) or is an error."""
        if self.rollover not in (None, True, False):
            raise TypeError(f"rollover must be None, True or False, got {self.rollover!r}")
        if isinstance(self.allocation, Rollover):
            if self.rollover is False:
                raise ValueError(f"allocation={self.allocation!r} rolls the leftovers over but rollover=False; pass the "
                                 f"base scheme itself (allocation={self.allocation.base!r}, rollover=False) to drop them")
            return
        if self.rollover is None:
            a = self.allocation
            raise ValueError(
                f"RBF stops a step at the first improving candidate, so allocation={a!r} would lose the quota a step "
                f"leaves unused; pass allocation=Rollover({a!r}) (or rollover=True) to hand it to the next step, as "
                "the paper's RBF does, or rollover=False to drop it"
            )
        if self.rollover:
            object.__setattr__(self, "allocation", Rollover(self.allocation))

    def initial_draws(self, budget: int, steps: int) -> int:
        """The number of initial noises a run draws at this budget and number of steps."""
        if self.initial_particles is not None:
            return self.initial_particles
        if steps == 1:  # no search step: the initial draws are the whole search
            return budget
        return max(1, budget // INITIAL_SHARE)


@dataclass(frozen=True)
class RBFStrictOptions(RBFOptions):
    """RBF as one reading of the paper's text ("rbf-strict"): a single initial noise, and the first
    improving candidate is accepted at every step, the last one included, so a run may finish with
    part of its budget unused (``res.nfe <= budget``). Otherwise as :class:`RBFOptions`."""

    initial_particles: Optional[int] = 1
    spend_rest_at_last_step: bool = False


@dataclass(frozen=True)
class DPSOptions:
    """Gradient guidance: each step adds h (1/lam) grad_x r(x0_hat(x)) to the update (h = t_k - t_{k+1}).

    N = budget // steps guided trajectories; the best final reward is kept (N = 1 at budget = steps
    is plain DPS). ``lam``: guidance temperature. toyflow's choice: 1.0.
    """

    lam: float = 1.0

    def __post_init__(self):
        _positive_float("lam", self.lam)


@dataclass(frozen=True)
class RBFDPSOptions(RBFOptions):
    """RBF whose proposals take DPS-guided steps (see :class:`RBFOptions` and :class:`DPSOptions`)."""

    lam: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        _positive_float("lam", self.lam)


def __getattr__(name: str):
    """``OPTIONS``: name -> options dataclass of every registered method (a live view, see
    :mod:`toyflow.search.method`)."""
    if name == "OPTIONS":
        from toyflow.search.method import OPTIONS

        return OPTIONS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def valid_keys(method) -> list[str]:
    """Option names ``run(method, ...)`` accepts: the sampler's and the method's (a name or a Method)."""
    from toyflow.search.method import valid_keys as keys

    return keys(method)


def build_options(method, options: dict) -> tuple[SamplerOptions, Any]:
    """Split ``options`` into (SamplerOptions, the method's options); unknown keys -> TypeError."""
    from toyflow.search.method import build_options as build

    return build(method, options)
