"""What a search returns: :class:`SearchResult` and, with ``record=True``, :class:`SearchHistory`.

Shapes use R = runs, K = steps, N = particles a method holds at each grid time (1 for the
single-path methods SVDD, CoDe, RBF, RBF+DPS; the number of paths for BoN, DPS, SMC, SoP),
M_k = the most candidates any run evaluated at grid time t_k.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Any, Optional

import torch
from torch import Tensor

from toyflow import dynamics, metrics

__all__ = ["SearchResult", "SearchHistory", "Recorder", "NullRecorder"]


@dataclass
class SearchHistory:
    """Everything a search did, per grid time ``t_k = times[k]`` (k = 0 .. K; t_K = 0).

    Held particles (after any selection or resampling at t_k):

    - ``states``   (R, K+1, N, *shape): the particles held at t_k; ``states[:, K]`` are the final samples.
    - ``x0``       (R, K+1, N, *shape): their x0_hat (at k = K the samples themselves).
    - ``rewards``  (R, K+1, N): reward of ``x0`` (NaN where a method held nothing evaluated).
    - ``parents``  (R, K, N) int64: particle i at t_{k+1} descends from ``states[:, k, parents[:, k, i]]``.
    - ``selected`` (R,) int64: index of the particle in ``states[:, K]`` returned as the sample.

    Candidates (k = 0 .. K; every velocity evaluation that produced a reward, in the order drawn,
    and at k = K the final samples a method chose among):

    - ``proposals_x0[k]``     (R, M_k, *shape): x0_hat of the candidates assessed at t_k, padded.
    - ``proposal_rewards[k]`` (R, M_k): their rewards, NaN on padding.
    - ``proposal_mask[k]``    (R, M_k) bool: True where a candidate exists.
    - ``accepted[k]``         (R, M_k) bool: True for candidates that became held particles at t_k.

    For BoN / DPS / SMC every particle is a candidate at every t_k (at t_K the returned one is the
    accepted one); for SVDD, CoDe and RBF entry 0 holds the initial draw(s) and entry k >= 1 the
    proposals for the state at t_k (CoDe: the candidate paths; the chosen path's entries are
    accepted); for RBF a candidate is accepted when it beats the best reward so far, or, if the
    quota runs out first, the step's best is. SoP lists its phase-0 paths and, after the start
    time, the candidates at each landing time (its re-noised intermediate evaluations are counted
    in ``nfe`` only).

    Budget:

    - ``nfe``   (R, K) int64: NFE per grid time, equal to ``SearchResult.nfe_per_step``.
    - ``quota`` (R, K) int64 or None: NFE granted at t_k (SVDD, CoDe, RBF; column 0: the initial
      draws), after clamping; ``quota - nfe`` is what a step left unused (RBF's default
      ``Rollover`` allocation adds it to the next step's quota).
    - ``ess``   (R, K) or None: SMC's effective sample size at t_k, before resampling.

    Helpers: :meth:`proposal_diversity` (spread of the candidates per t_k) and :meth:`trajectory`
    (the held particles as a :class:`~toyflow.dynamics.Trajectory`, for plotting).
    """

    times: Tensor
    states: Tensor
    x0: Tensor
    rewards: Tensor
    parents: Tensor
    selected: Tensor
    proposals_x0: list
    proposal_rewards: list
    proposal_mask: list
    accepted: list
    nfe: Tensor
    quota: Optional[Tensor] = None
    ess: Optional[Tensor] = None

    def proposal_diversity(self) -> Tensor:
        """Spread of the candidates per grid time: (K + 1,) float64 (CPU).

        Entry k is the mean over runs of :func:`toyflow.metrics.diversity` (mean pairwise Euclidean
        distance, image shapes flattened) of that run's candidates ``proposals_x0[k]``. Runs with
        fewer than 2 candidates at t_k are left out of that mean; NaN where no run has 2. For
        SVDD / CoDe / RBF entry k >= 1 measures the proposals drawn from one state (entry 0 holds
        the initial draw, usually a single one: NaN).
        """
        out = torch.full((len(self.proposals_x0),), float("nan"), dtype=torch.float64)
        for k, (x, mask) in enumerate(zip(self.proposals_x0, self.proposal_mask)):
            values = []
            for i in range(x.shape[0]):
                if int(mask[i].sum()) < 2:
                    continue
                try:
                    values.append(metrics.diversity(x[i][mask[i]]))
                except ValueError as e:
                    raise ValueError(f"proposal_diversity: candidates of run {i} at step {k}: {e}") from e
            if values:
                out[k] = sum(values) / len(values)
        return out

    def trajectory(self, run: Optional[int] = None) -> dynamics.Trajectory:
        """The held particles as a :class:`~toyflow.dynamics.Trajectory` (e.g. for
        :func:`toyflow.viz.trajectories_2d`).

        ``run=r``: the N particles of run r: ``xs = states[r]`` (K + 1, N, *shape).
        ``run=None``: one path per run, for single-path methods (N = 1: SVDD, CoDe, RBF, RBF+DPS):
        ``xs = states[:, :, 0].transpose(0, 1)`` (K + 1, R, *shape).
        ``x = xs[-1]``, ``times = self.times``, ``x0s`` = the held particles' x0_hat at t_0 .. t_{K-1}
        (K, B, *shape). ``nfe`` is the search ledger's total for these paths (``self.nfe`` summed over
        run r, or over all runs for ``run=None``): NFE of single particles, not batched model calls
        as in :func:`toyflow.dynamics.sample`. ``velocities`` is None and ``sde`` False (the history
        does not know the mode).
        """
        R, N = int(self.states.shape[0]), int(self.states.shape[2])
        K = int(self.states.shape[1]) - 1
        if run is None:
            if N != 1:
                raise ValueError(
                    f"trajectory() without run needs one held particle per run (single-path methods: SVDD, "
                    f"CoDe, RBF, RBF+DPS); this history holds N = {N} per run: pass run=r (0 <= r < {R}) for "
                    "the N particles of one run"
                )
            xs = self.states[:, :, 0].transpose(0, 1)
            x0s = self.x0[:, :K, 0].transpose(0, 1)
            nfe = int(self.nfe.sum())
        else:
            if isinstance(run, bool) or not isinstance(run, Integral) or not 0 <= run < R:
                raise ValueError(f"run must be an integer in [0, {R}) (this history has {R} runs), got {run!r}")
            run = int(run)
            xs, x0s = self.states[run], self.x0[run, :K]
            nfe = int(self.nfe[run].sum())
        return dynamics.Trajectory(x=xs[-1], times=self.times, nfe=nfe, xs=xs, x0s=x0s)


@dataclass
class SearchResult:
    """Outcome of :func:`toyflow.search.run`.

    ``samples`` (R, *shape), ``rewards`` (R,) (reward of each sample), ``nfe`` (R,) int64 NFE spent
    by each run (<= budget), ``nfe_per_step`` (R, K) int64 with ``nfe == nfe_per_step.sum(1)``
    (column k counts the velocity evaluations at grid time t_k), ``history`` (a
    :class:`SearchHistory` when ``record=True``, else None). ``options`` holds the method's options
    dataclass and ``sampler`` the :class:`~toyflow.search.options.SamplerOptions` used (the
    :class:`~toyflow.search.Sampler` itself when one was given as ``mode``); ``sampling`` is the
    Sampler that ran (path, model conversion, diffusion, eta, time grid), ``mode`` its name.
    ``discarded`` (R,) int64: model evaluations made but never used, not NFE (RBF evaluates chunks
    of proposals and discards those after the accepted one; zero for the other methods).
    """

    samples: Tensor
    rewards: Tensor
    nfe: Tensor
    nfe_per_step: Tensor
    method: str
    mode: str
    budget: int
    steps: int
    wall_time: float
    history: Optional[SearchHistory] = None
    options: Any = None
    sampler: Any = None
    discarded: Optional[Tensor] = None
    sampling: Any = None

    @property
    def runs(self) -> int:
        return int(self.samples.shape[0])


def _value(v):
    """A recorded field: the value, or a zero-argument callable that computes it (work done for the
    history alone, skipped when recording is off)."""
    return v() if callable(v) else v


class NullRecorder:
    """``SearchContext.recorder`` when ``record=False``: every call does nothing, so a method records
    unconditionally, once per step, and pays nothing when recording is off. Lazy fields (callables)
    are never evaluated."""

    active = False

    def step(self, k: int, **fields) -> None:
        return None

    def draws(self, k_rows, fields) -> None:
        return None

    def finish(self, nfe: Tensor, selected: Tensor) -> None:
        return None


class Recorder:
    """Collects a :class:`SearchHistory` while a method runs (only built when ``record=True``).

    A method calls :meth:`step` once per grid index (RBF, whose runs sit at different grid times,
    :meth:`draws` once per tick); the lower-level calls below are what those two are made of.
    """

    active = True

    def step(self, k: int, *, candidates=None, accepted=None, held=None, parents=None, ess=None, quota=None) -> None:
        """Everything a method records at grid index k, in one call; each field may be a
        zero-argument callable, evaluated only when recording.

        ``candidates``: (x0 (R, M, *shape), rewards (R, M)[, mask (R, M)]) evaluated at t_k;
        ``accepted``: (R, M) bool, which of them were kept; ``held``: (states, x0, rewards) the runs
        hold at t_k, (R, N, *shape) / (R, N); ``parents``: (k', (R, N)) parent indices at t_{k'+1}
        among the particles held at t_{k'}; ``ess``: (R,); ``quota``: (R,) NFE granted to step k,
        or (run, quota) for some runs only.
        """
        if ess is not None:
            self.set_ess(k, _value(ess))
        if candidates is not None:
            slots = self.candidates(k, *_value(candidates))
            if accepted is not None:
                self.accept(k, slots, _value(accepted))
        if parents is not None:
            self.set_parents(*_value(parents))
        if held is not None:
            self.hold(k, *_value(held))
        if quota is not None:
            q = _value(quota)
            run, q = q if isinstance(q, tuple) else (None, q)
            self.set_quota(run, k, q)

    def draws(self, k_rows, fields):
        """One tick of a single-path method whose runs sit at different grid indices (RBF):
        ``fields`` (a callable, evaluated only when recording) gives (run (B,), x0 (B, *shape),
        rewards (B,)), rows of a run consecutive and in draw order, each at grid index
        ``k_rows`` (B,). Returns each row's slot (B,) in its grid index's candidate list."""
        run, x0, rewards = _value(fields)
        k = k_rows
        flat = run * (self.K + 1) + k
        # slot of a row = the run's count so far at its k + its place among the run's rows of this call
        order = torch.arange(run.shape[0], device=self.device)
        first = torch.full((self.R * (self.K + 1),), run.shape[0], dtype=torch.int64, device=self.device)
        first.scatter_reduce_(0, flat, order, reduce="amin")
        slots = self._count.view(-1)[flat] + order - first[flat]
        for kk in torch.unique(k).tolist():
            m = k == kk
            self._cand[kk].append((run[m], slots[m], x0[m].detach().clone(), rewards[m].detach().clone()))
        self._count.view(-1).index_add_(0, flat, torch.ones_like(flat))
        return slots

    def __init__(self, runs: int, steps: int, particles: int, shape: tuple, times: Tensor, dtype, device):
        R, K, N = runs, steps, particles
        self.R, self.K, self.N, self.shape = R, K, N, tuple(shape)
        self.times = times
        self.dtype, self.device = dtype, device
        nan = float("nan")
        self.states = torch.full((R, K + 1, N) + self.shape, nan, dtype=dtype, device=device)
        self.x0 = torch.full((R, K + 1, N) + self.shape, nan, dtype=dtype, device=device)
        self.rewards = torch.full((R, K + 1, N), nan, dtype=dtype, device=device)
        self.parents = torch.arange(N, device=device).expand(R, K, N).clone()
        self.selected = torch.zeros(R, dtype=torch.int64, device=device)
        self.quota: Optional[Tensor] = None
        self.ess: Optional[Tensor] = None
        self._count = torch.zeros(R, K + 1, dtype=torch.int64, device=device)
        self._cand: list[list] = [[] for _ in range(K + 1)]  # (run, slot, x0, reward)
        self._acc: list[list] = [[] for _ in range(K + 1)]  # (run, slot)

    # -- held particles ----------------------------------------------------------------------
    def hold(self, k: int, states: Tensor, x0: Optional[Tensor], rewards: Optional[Tensor]) -> None:
        """All runs hold ``states`` (R, N, *shape) at t_k."""
        self.states[:, k] = states
        if x0 is not None:
            self.x0[:, k] = x0
        if rewards is not None:
            self.rewards[:, k] = rewards

    def hold_rows(self, run: Tensor, k: Tensor, states: Tensor, x0: Tensor, rewards: Tensor) -> None:
        """Single-path methods: run ``run[b]`` holds ``states[b]`` at t_{k[b]}."""
        self.states[run, k, 0] = states
        self.x0[run, k, 0] = x0
        self.rewards[run, k, 0] = rewards

    def set_parents(self, k: int, parents: Tensor) -> None:
        """(R, N) parent indices of the particles at t_{k+1} among those held at t_k."""
        self.parents[:, k] = parents

    def set_quota(self, run: Optional[Tensor], k, quota: Tensor) -> None:
        if self.quota is None:
            self.quota = torch.zeros(self.R, self.K, dtype=torch.int64, device=self.device)
        if run is None:
            self.quota[:, k] = quota
        else:
            self.quota[run, k] = quota

    def set_ess(self, k: int, ess: Tensor) -> None:
        if self.ess is None:
            self.ess = torch.full((self.R, self.K), float("nan"), dtype=self.dtype, device=self.device)
        self.ess[:, k] = ess

    # -- candidates --------------------------------------------------------------------------
    def candidates(self, k: int, x0: Tensor, rewards: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """All runs evaluated candidates (R, M, *shape) at t_k (``mask`` (R, M): which exist).
        Returns their slots (R, M)."""
        R, M = rewards.shape
        if mask is None:
            mask = torch.ones(R, M, dtype=torch.bool, device=self.device)
        slots = self._count[:, k, None] + torch.cumsum(mask.long(), 1) - 1
        run = torch.arange(R, device=self.device)[:, None].expand(R, M)
        self._cand[k].append((run[mask], slots[mask], x0[mask].detach().clone(), rewards[mask].detach().clone()))
        self._count[:, k] += mask.sum(1)
        return slots

    def candidate_rows(self, run: Tensor, k: Tensor, x0: Tensor, rewards: Tensor) -> Tensor:
        """Row b is one candidate of run ``run[b]`` at t_{k[b]} (each run at most once). Returns slots (B,)."""
        slots = self._count[run, k]
        for kk in torch.unique(k).tolist():
            m = k == kk
            self._cand[kk].append((run[m], slots[m], x0[m].detach().clone(), rewards[m].detach().clone()))
        self._count[run, k] += 1
        return slots

    def accept(self, k: int, slots: Tensor, accepted: Tensor) -> None:
        """Mark candidates at t_k: ``slots`` (R, M) from :meth:`candidates`, ``accepted`` (R, M) bool."""
        R, M = accepted.shape
        run = torch.arange(R, device=self.device)[:, None].expand(R, M)
        self._acc[k].append((run[accepted], slots[accepted]))

    def accept_rows(self, run: Tensor, k: Tensor, slots: Tensor) -> None:
        for kk in torch.unique(k).tolist():
            m = k == kk
            self._acc[kk].append((run[m], slots[m]))

    # -- assembly ----------------------------------------------------------------------------
    def finish(self, nfe: Tensor, selected: Tensor) -> SearchHistory:
        R = self.R
        px, pr, pm, pa = [], [], [], []
        for k in range(self.K + 1):
            chunks = self._cand[k]
            M = int(self._count[:, k].max()) if R else 0
            x = torch.full((R, M) + self.shape, float("nan"), dtype=self.dtype, device=self.device)
            r = torch.full((R, M), float("nan"), dtype=self.dtype, device=self.device)
            mask = torch.zeros(R, M, dtype=torch.bool, device=self.device)
            acc = torch.zeros(R, M, dtype=torch.bool, device=self.device)
            for run, slot, cx, cr in chunks:
                x[run, slot] = cx.to(self.dtype)
                r[run, slot] = cr.to(self.dtype)
                mask[run, slot] = True
            for run, slot in self._acc[k]:
                acc[run, slot] = True
            # trim columns no run used (padding of masked block layouts)
            used = int(mask.any(0).nonzero().max()) + 1 if bool(mask.any()) else 0
            px.append(x[:, :used])
            pr.append(r[:, :used])
            pm.append(mask[:, :used])
            pa.append(acc[:, :used] & mask[:, :used])
        return SearchHistory(
            times=self.times,
            states=self.states,
            x0=self.x0,
            rewards=self.rewards,
            parents=self.parents,
            selected=selected.clone(),
            proposals_x0=px,
            proposal_rewards=pr,
            proposal_mask=pm,
            accepted=pa,
            nfe=nfe.clone(),
            quota=self.quota,
            ess=self.ess,
        )
