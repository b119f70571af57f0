"""The NFE ledger and pluggable budget allocation schemes.

**1 NFE = one velocity evaluation of one particle.** The budget is per independent run. Every
velocity evaluation a search method makes goes through :meth:`Ledger.charge` (the search context
calls it for every model call), so what a method reports cannot drift from what it spent.

Column convention: ``per_step[r, k]`` counts the evaluations of run ``r`` at grid time ``t_k``
(k = 0 .. steps - 1). Column 0 holds the initial draws at t = 1; column k >= 1 holds the candidates
for the state at t_k. The last transition t_{K-1} -> 0 is the deterministic x0_hat step and costs
nothing, so no column exists for t_K = 0.

Allocation schemes split the *search budget* (the budget left after the initial draw at t = 1)
over the *search steps* (the transitions t_{k-1} -> t_k, k = 1 .. K - 1, whose candidates are
evaluated at t_k: there are ``K - 1`` of them). CoDe asks for every step of a block and runs
(sum of the quotas) // L paths through it.

A new scheme is a small class. It may read the search's state (:class:`AllocationState`: per
run the step, its grid time, budget left and spent, the best reward so far, and what the previous
step drew, accepted and was granted) and return an int or an (R,) tensor, honoured run by run::

    class StallBoost(AllocationScheme):
        '''An even share of what is left; twice that after a step that found no improvement.'''

        def quota(self, state):
            share = state.budget_left // (state.steps - state.step)
            return torch.where(state.accepted, share, 2 * share)

    search.run("svdd", model, reward, budget=200, shape=(2,), allocation=StallBoost())
    search.run("rbf", model, reward, budget=200, shape=(2,), allocation=Rollover(StallBoost()))

Schemes that only need the counters may keep the older form ``quota(step, steps, budget_left,
spent)`` (one int step for all runs given; the methods then precompute nothing about rewards)::

    class FrontLoaded(AllocationScheme):
        '''Half of the search budget at the first search step, the rest spread evenly.'''

        def quota(self, step, steps, budget_left, spent):
            total = budget_left + spent                  # (R,) search budget of each run
            if step == 0:
                return total // 2
            return (total - total // 2) // (steps - 1)

    search.run("svdd", model, reward, budget=200, shape=(2,), allocation=FrontLoaded())
    search.run("rbf", model, reward, budget=200, shape=(2,), allocation=Rollover(FrontLoaded()))

Whatever a scheme returns, the method clamps it to ``[1, budget_left - (steps - 1 - step)]``: each
search step gets at least one candidate (a path cannot advance otherwise) and one NFE stays
reserved for every later step, so no run ever exceeds its budget. SVDD and CoDe spend their whole
quota; RBF may stop early, and only ``Rollover(...)`` hands the leftover to later steps: a plain
scheme given to RBF is an error unless ``rollover=True`` (RBF wraps it) or ``rollover=False``
(the leftover is dropped, explicitly).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Ledger",
    "BudgetExceeded",
    "AllocationScheme",
    "StaticAllocation",
    "Uniform",
    "LinearDecay",
    "Rollover",
    "AllocationState",
    "clamp_quota",
    "as_quota",
]

IntOrTensor = Union[int, Tensor]


class BudgetExceeded(RuntimeError):
    """A method tried to spend more NFE than its budget (a bug in the method, never the user's fault)."""


class Ledger:
    """Counts NFE per run and per grid time; refuses any charge past the budget.

    ``per_step``: (runs, steps) int64, ``spent``: (runs,) int64, ``left``: budget - spent.
    """

    def __init__(self, runs: int, steps: int, budget: int, device=None):
        self.runs, self.steps, self.budget = int(runs), int(steps), int(budget)
        self.per_step = torch.zeros(self.runs, self.steps, dtype=torch.int64, device=device)
        self.spent = torch.zeros(self.runs, dtype=torch.int64, device=device)
        self._arange = torch.arange(self.runs, device=device)
        self._ones = torch.ones(self.runs, dtype=torch.int64, device=device)
        self._bound = 0  # an upper bound on spent.max(); the exact check runs only when it passes the budget
        # evaluations made but not used by the algorithm (RBF's chunked proposals after the accepted one)
        self.discarded = torch.zeros(self.runs, dtype=torch.int64, device=device)

    @property
    def left(self) -> Tensor:
        """(runs,) NFE each run may still spend."""
        return self.budget - self.spent

    def charge(self, k: IntOrTensor, run: Optional[Tensor] = None, per_run: int = 1, unique: bool = False) -> None:
        """Charge one NFE per evaluated particle at grid time index ``k``.

        - ``run`` None and ``k`` an int: every run evaluated ``per_run`` particles at t_k.
        - ``run`` None and ``k`` (runs,): run r evaluated one particle at t_{k[r]}.
        - ``run`` (B,) long: row b is one particle of run ``run[b]`` at ``k`` (int or (B,));
          ``unique=True`` promises no run appears twice.
        Raises :class:`BudgetExceeded` if any run would pass the budget.
        """
        if run is None:
            if isinstance(k, int):
                self.per_step[:, k] += per_run
                self.spent += per_run
                self._bound += per_run
            else:
                self.per_step.index_put_((self._arange, k), self._ones, accumulate=True)
                self.spent += 1
                self._bound += 1
        else:
            n = run.shape[0]
            if n == 0:
                return
            kk = k if torch.is_tensor(k) else torch.full_like(run, int(k))
            ones = self._ones[:n] if n <= self.runs else torch.ones(n, dtype=torch.int64, device=run.device)
            self.per_step.index_put_((run, kk), ones, accumulate=True)
            self.spent.index_add_(0, run, ones)
            self._bound += 1 if unique else n
        if self._bound > self.budget:
            self._exact_check()

    def charge_table(self, per_step: Tensor) -> None:
        """Charge a whole (runs, steps) table of NFE at once (a method that kept its own count).
        Raises :class:`BudgetExceeded` if any run would pass the budget."""
        if per_step.shape != self.per_step.shape:
            raise RuntimeError(f"internal error: NFE table of shape {tuple(per_step.shape)}, "
                               f"expected {tuple(self.per_step.shape)}")
        self.per_step += per_step
        self.spent += per_step.sum(1)
        self._exact_check()

    def _exact_check(self) -> None:
        self._bound = int(self.spent.max())
        if self._bound > self.budget:
            raise BudgetExceeded(
                f"internal error: a run spent {self._bound} NFE, more than its budget of {self.budget}; "
                "please report this as a toyflow bug"
            )

    def check(self) -> None:
        """Assert the ledger is consistent (per_step sums to spent, nothing over budget)."""
        if not torch.equal(self.per_step.sum(1), self.spent) or bool((self.spent > self.budget).any()):
            raise BudgetExceeded("internal error: the NFE ledger is inconsistent; please report this as a toyflow bug")


def clamp_quota(quota, step, steps: int, budget_left):
    """Clamp a scheme's quota to [1, budget_left - (steps - 1 - step)] (one NFE reserved per later step).

    Torch tensors, or numpy int64 arrays (RBF keeps its per-run counters in numpy)."""
    hi = (budget_left - (steps - 1)) + step  # budget_left - reserve, reserve = steps - 1 - step
    if isinstance(quota, np.ndarray):
        return np.maximum(np.minimum(quota, hi), 1).astype(np.int64)
    return torch.minimum(quota, hi).clamp_min_(1)


def as_quota(q, like: Tensor) -> Tensor:
    """A scheme's return value (int or tensor) as a (R,) int64 tensor shaped like ``like``."""
    q = torch.as_tensor(q, device=like.device)
    if q.is_floating_point():
        q = torch.floor(q)
    return q.to(torch.int64).expand(like.shape).clone()


@dataclass(frozen=True)
class AllocationState:
    """What an allocation scheme sees when search steps start: one entry per run, all (R,).

    - ``step`` int64: the search step each run is about to start (0 .. steps - 1); its candidates
      are evaluated at grid time ``t`` = t_{step + 1}.
    - ``steps``: the number of search steps (K - 1), an int.
    - ``budget_left`` / ``spent`` int64: search NFE not yet spent / spent by earlier steps (the
      initial draws at t = 1 excluded); their sum is the run's search budget (:attr:`total`).
    - ``best_reward``: the best x0_hat reward so far (RBF: the reward a candidate must beat).
    - ``drawn`` int64: candidates the previous step drew (at step 0: the initial draws).
    - ``accepted`` bool: the previous step's kept candidate beat the best reward before it (RBF:
      it stopped early); False at step 0.
    - ``granted`` int64: the quota the previous step was given, after clamping (at step 0: the
      initial draws); ``granted - drawn`` is what it left unused (what :class:`Rollover` hands on).
    """

    step: Tensor
    steps: int
    t: Tensor
    budget_left: Tensor
    spent: Tensor
    best_reward: Tensor
    drawn: Tensor
    accepted: Tensor
    granted: Tensor

    @property
    def total(self) -> Tensor:
        """(R,) the run's search budget, ``budget_left + spent``."""
        return self.budget_left + self.spent


_READS_STATE: dict = {}


def _quota_reads_state(cls) -> bool:
    """True when ``cls.quota`` is written as ``quota(self, state)`` (one required argument)."""
    if cls not in _READS_STATE:
        params = list(inspect.signature(cls.quota).parameters.values())[1:]
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        required = [p for p in positional if p.default is p.empty]
        _READS_STATE[cls] = len(required) == 1 and not any(p.kind is p.VAR_POSITIONAL for p in params)
    return _READS_STATE[cls]


def _counters(scheme, args: tuple) -> tuple:
    """(step, steps, budget_left, spent) from ``quota(step, steps, budget_left, spent)``'s arguments
    or from ``quota(state)`` (an :class:`AllocationState`; step an int when all runs share it)."""
    if len(args) == 1 and isinstance(args[0], AllocationState):
        st = args[0]
        return st.step, st.steps, st.budget_left, st.spent
    if len(args) != 4:
        raise TypeError(f"{type(scheme).__name__}.quota takes an AllocationState, or (step, steps, budget_left, spent)")
    return args


class AllocationScheme:
    """How many NFE each run may spend at each search step (or block).

    Implement :meth:`quota`. Written as ``quota(self, state)`` it receives an
    :class:`AllocationState` (step, steps, t, budget_left, spent, best_reward, drawn, accepted,
    granted, one entry per run) and returns an int or an (R,) tensor of quotas, honoured run by run.
    The counters-only form ``quota(self, step, steps, budget_left, spent)`` (``step`` an int,
    ``budget_left`` and ``spent`` (R,) int64) still works; the methods then call it once per
    distinct step.
    """

    def quota(self, state: AllocationState) -> IntOrTensor:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} must implement quota(self, state) (an AllocationState)")

    @property
    def reads_state(self) -> bool:
        """Whether :meth:`quota` needs the whole :class:`AllocationState` (written as
        ``quota(self, state)``). False for the built-in fixed splits: the methods then use their
        precomputed tables."""
        return _quota_reads_state(type(self))

    def quota_of(self, state: AllocationState) -> Tensor:
        """(R,) int64 quotas for ``state``, whichever form :meth:`quota` is written in."""
        if self.reads_state:
            return as_quota(self.quota(state), state.spent)
        return self.quotas(state.step, state.steps, state.budget_left, state.spent)

    def quotas(self, step: Tensor, steps: int, budget_left: Tensor, spent: Tensor) -> Tensor:
        """Quotas when runs sit at different search steps: ``step`` (R,) long -> (R,) int64.

        The default calls :meth:`quota` once per distinct step on the runs at that step; built-in
        schemes override it with a vectorized version. A scheme that reads the state has no
        counters-only form: the methods call :meth:`quota_of` with an :class:`AllocationState`.
        """
        if self.reads_state:
            raise TypeError(f"{type(self).__name__}.quota reads the search state (quota(self, state)); call it with an "
                            "AllocationState (scheme.quota_of(state)), not with counters")
        out = torch.zeros_like(spent)
        for s in torch.unique(step).tolist():
            m = step == s
            q = self.quota(int(s), steps, budget_left[m], spent[m])
            out[m] = as_quota(q, spent[m])
        return out

    def for_total(self, steps: int, total: int, device=None):
        """``f(step (R,), spent (R,)) -> (R,)``: :meth:`quotas` for runs that all share the search
        budget ``total`` (what the methods call in their loops; ``0 <= step < steps``). Built-in
        schemes precompute it."""

        def f(step: Tensor, spent: Tensor) -> Tensor:
            return self.quotas(step, steps, total - spent, spent)

        return f

    def for_total_numpy(self, steps: int, total: int):
        """Optional fast path of :meth:`for_total` on numpy int64 arrays (RBF keeps its per-run
        counters in numpy). ``None`` (the default): callers use :meth:`for_total`."""
        return None

    def plan(self, steps: int, total: Tensor) -> Tensor:
        """(R, steps) quotas the scheme would give if every step spent exactly its quota."""
        spent = torch.zeros_like(total)
        cols = []
        for s in range(steps):
            q = as_quota(self.quota(s, steps, total - spent, spent), total).clamp_min(0)
            cols.append(q)
            spent = spent + q
        return torch.stack(cols, 1) if cols else torch.zeros(total.shape + (0,), dtype=torch.int64, device=total.device)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class StaticAllocation(AllocationScheme):
    """A fixed split of the search budget by relative ``weights(steps)``, rounded so quotas sum to
    the whole budget: step s gets ``floor(total * W_{s+1} / W) - floor(total * W_s / W)`` with W the
    cumulative weights."""

    def weights(self, steps: int) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def cumulative(self, steps: int, total: Tensor) -> Tensor:
        """(R, steps + 1) cumulative quotas, column 0 = 0 and column ``steps`` = total."""
        w = self.weights(steps).to(torch.float64)
        if w.shape != (steps,) or bool((w < 0).any()) or (steps and not float(w.sum()) > 0):
            raise ValueError(f"{self!r}.weights({steps}) must be {steps} non-negative numbers with a positive sum")
        cw = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(w, 0)]) / max(float(w.sum()), 1e-300)
        cw[-1] = 1.0
        c = torch.floor(total.to(torch.float64)[:, None].cpu() * cw[None] + 1e-9).to(torch.int64)
        return c.to(total.device)

    def quota(self, *args) -> Tensor:
        """``quota(state)`` or ``quota(step, steps, budget_left, spent)``: the fixed split's share."""
        step, steps, budget_left, spent = _counters(self, args)
        if torch.is_tensor(step):
            return self.quotas(step, steps, budget_left, spent)
        c = self.cumulative(steps, budget_left + spent)
        return c[:, step + 1] - c[:, step]

    def quotas(self, step: Tensor, steps: int, budget_left: Tensor, spent: Tensor) -> Tensor:
        c = self.cumulative(steps, budget_left + spent)
        s = step.clamp(0, steps - 1)[:, None]
        return (c.gather(1, s + 1) - c.gather(1, s))[:, 0]

    def plan(self, steps: int, total: Tensor) -> Tensor:
        return torch.diff(self.cumulative(steps, total), dim=1)

    def for_total(self, steps: int, total: int, device=None):
        q = self._quota_table(steps, total).to(device)

        def f(step: Tensor, spent: Tensor) -> Tensor:
            return q.index_select(0, step)

        return f

    def for_total_numpy(self, steps: int, total: int):
        q = self._quota_table(steps, total).numpy()

        def f(step, spent):
            return q[step]

        return f

    def _quota_table(self, steps: int, total: int) -> Tensor:
        """(steps,) quota of each search step for one run with search budget ``total`` (CPU)."""
        return torch.diff(self.cumulative(steps, torch.tensor([int(total)]))[0])


class Uniform(StaticAllocation):
    """The same share at every search step (the paper's SVDD / CoDe / RBF base quota).

    The search budget ``B - n0`` (``n0`` initial draws) is split evenly over the ``K - 1`` search
    steps; the remainder goes one NFE at a time to evenly spaced steps, so the whole budget is used.
    E.g. budget 500, 10 steps, one initial draw: 499 over 9 steps -> 55 or 56 per step.
    """

    def weights(self, steps: int) -> Tensor:
        return torch.ones(steps, dtype=torch.float64)


class LinearDecay(StaticAllocation):
    """More candidates early, linearly fewer later: weight of search step s is
    ``(1 - s / steps) + end * s / steps`` (``end = 0``: from 1 down to 1/steps).

    Modelled on the official code's adaptive sample-size schedule (large batches at the noisy
    start, shrinking linearly); its exact constants are not reproduced here.
    """

    def __init__(self, end: float = 0.0):
        if not 0.0 <= float(end):
            raise ValueError(f"LinearDecay needs end >= 0 (relative weight of the last step), got {end}")
        self.end = float(end)

    def weights(self, steps: int) -> Tensor:
        s = torch.arange(steps, dtype=torch.float64) / max(steps, 1)
        return (1 - s) + self.end * s

    def __repr__(self) -> str:
        return f"LinearDecay(end={self.end:g})"


class Rollover(AllocationScheme):
    """Rollover budget forcing (RBF): a base scheme's quota plus everything earlier steps left unused.

    ``quota_s = base_0 + ... + base_s - spent`` where ``base`` is the base scheme's plan; a step
    that stops early (RBF accepts the first improving candidate) hands its leftover to the next.
    For a method that always spends its whole quota (SVDD) it equals the base scheme.
    """

    def __init__(self, base: Optional[AllocationScheme] = None):
        base = Uniform() if base is None else base
        if not isinstance(base, AllocationScheme):
            raise TypeError(f"Rollover(base=...) needs an AllocationScheme, got {type(base).__name__}")
        self.base = base

    def _cumulative(self, steps: int, total: Tensor) -> Tensor:
        if isinstance(self.base, StaticAllocation):
            return self.base.cumulative(steps, total)
        plan = self.base.plan(steps, total)
        return torch.cat([torch.zeros_like(total)[:, None], torch.cumsum(plan, 1)], 1)

    @property
    def reads_state(self) -> bool:
        return self.base.reads_state

    def quota(self, *args) -> Tensor:
        """``quota(state)`` or ``quota(step, steps, budget_left, spent)``. A base that reads the state
        gets ``base.quota(state) + (granted - drawn)``: the previous step's leftover (which already
        holds the older ones); otherwise the base's plan up to this step minus what was spent."""
        if len(args) == 1 and isinstance(args[0], AllocationState) and self.base.reads_state:
            st = args[0]
            return self.base.quota_of(st) + (st.granted - st.drawn).clamp_min(0)
        step, steps, budget_left, spent = _counters(self, args)
        if torch.is_tensor(step):
            return self.quotas(step, steps, budget_left, spent)
        c = self._cumulative(steps, budget_left + spent)
        return (c[:, step + 1] - spent).clamp_min(0)

    def quotas(self, step: Tensor, steps: int, budget_left: Tensor, spent: Tensor) -> Tensor:
        c = self._cumulative(steps, budget_left + spent)
        s = step.clamp(0, steps - 1)[:, None]
        return (c.gather(1, s + 1)[:, 0] - spent).clamp_min(0)

    def for_total(self, steps: int, total: int, device=None):
        upto = self._upto(steps, total).to(device)

        def f(step: Tensor, spent: Tensor) -> Tensor:
            return (upto.index_select(0, step) - spent).clamp_min_(0)

        return f

    def for_total_numpy(self, steps: int, total: int):
        upto = self._upto(steps, total).numpy()

        def f(step, spent):
            return np.maximum(upto[step] - spent, 0)

        return f

    def _upto(self, steps: int, total: int) -> Tensor:
        """(steps,) base_0 + ... + base_s for one run with search budget ``total`` (CPU)."""
        return self._cumulative(steps, torch.tensor([int(total)]))[0, 1:]

    def __repr__(self) -> str:
        return f"Rollover({self.base!r})"
