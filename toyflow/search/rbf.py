"""Rollover Budget Forcing (RBF, Kim et al. 2025) and RBF with DPS-guided proposals.

One particle per run. Grid t_0 = 1 > ... > t_K = 0; search step j (j = 0 .. K-2) moves the particle
from t_j to t_{j+1}; the last step t_{K-1} -> 0 is the deterministic x0_hat step (free).

1. Draw n0 initial noises at t_0, evaluate them (1 NFE each), keep the best x0_hat reward.
   ``best`` := its reward. Default n0 = max(1, budget // 20), the official code's batch (25 at
   budget 500); the paper's text draws one (``initial_particles=1``, or the "rbf-strict" variant).
2. At search step j the run gets a quota from the allocation scheme (default
   ``Rollover(Uniform())``: an even share of the budget left after step 1, plus whatever earlier
   steps left unused). It draws candidates one at a time (independent SDE noise from the current
   particle), evaluating each at t_{j+1} (1 NFE: velocity -> x0_hat -> reward; the accepted
   candidate reuses that velocity for its own next step), and **accepts the first whose reward
   beats ``best``** (the best reward on the path so far), moving on at once; the rest of the quota
   rolls over. If the quota runs out first, the step's best candidate is kept (``best`` unchanged).
3. At the last search step (``spend_rest_at_last_step=True``, the official code and the default)
   there is no early acceptance: every NFE left is drawn and the best candidate kept, so every run
   spends exactly its budget (``res.nfe == budget``). "rbf-strict" (``False``) accepts the first
   improvement there too and may leave budget unused.

NFE per run: n0 + sum of the candidates drawn <= budget (== budget by default); minimum budget
``n0 + steps - 1`` (one candidate per search step).

Vectorized: all R runs advance together, one batched model call per tick, whatever step each run
is at. In a tick each searching run evaluates a chunk of its next draws (``proposals_per_tick``;
default adaptive, see :class:`~toyflow.search.options.RBFOptions`): the chunk is read in draw
order, the ledger charges the draws up to the first improving one (or the whole chunk), and the
rest are discarded unread (``SearchResult.discarded``, not NFE). With ``proposals_per_tick=1``
this is literally one draw per run and call. Drawing several at once changes how fast a call
advances a run, not what the algorithm does: the draws are i.i.d. given the held particle.
In "linear-ode" mode all candidates of a step coincide (the ODE step has one outcome), so only the
initial draws can diversify the search.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from toyflow.search._core import Context, ParticleSlot, TickColumn as T
from toyflow.search.budget import AllocationState, clamp_quota
from toyflow.search.method import Method, register
from toyflow.search.options import RBFOptions

__all__ = ["minimum_budget", "run_rbf", "RBF"]

X, U, X0, GRAD = ParticleSlot.X, ParticleSlot.U, ParticleSlot.X0, ParticleSlot.GRAD  # slots of a held particle

# proposals_per_tick=None: chunk widths keep the expected discarded draws per charged draw near
# RBFOptions.discard_share, and a model call holds at most CHUNK_MAX_ROWS x runs rows
CHUNK_MAX_ROWS = 4


def minimum_budget(steps: int, opts: RBFOptions) -> int:
    """The smallest budget that holds the initial draws and one draw per search step."""
    if opts.initial_particles is not None:
        return opts.initial_particles + steps - 1
    budget = steps  # budget - initial_draws(budget) never decreases with the budget: the first fit is the minimum
    while budget - opts.initial_draws(budget, steps) < steps - 1:
        budget += 1
    return budget


def run_rbf(ctx: Context, opts: RBFOptions, lam: Optional[float] = None):
    R, K, shape = ctx.R, ctx.K, ctx.shape
    S = K - 1
    n0 = opts.initial_draws(ctx.budget, K)
    rec = ctx.recorder
    guided = lam is not None
    dev = ctx.device
    ar = torch.arange(R, device=dev)

    # 1. initial draw(s) at t_0
    xi = ctx.noise(R * n0)
    if guided:
        ui, x0i, ri, gi = ctx.guided(xi, 0)
    else:
        ui = ctx.velocity(xi, 0)
        x0i = ctx.x0(xi, ui, 0)
        ri = ctx.reward(x0i)
    b0 = ri.view(R, n0).argmax(1)
    pick = ar * n0 + b0
    # held particle of every run, packed: [x, u, x0_hat (, grad r)] -> (R, P, *shape)
    H = torch.stack([xi[pick], ui[pick], x0i[pick]] + ([gi[pick]] if guided else []), 1)
    r = ri[pick]
    rec.step(0, candidates=(x0i.view((R, n0) + shape), ri.view(R, n0)),
             accepted=lambda: torch.nn.functional.one_hot(b0, n0).bool(),
             held=(H[:, X:X + 1], H[:, X0:X0 + 1], r[:, None]),
             quota=lambda: torch.full((R,), n0, dtype=torch.int64, device=dev))

    if S > 0:
        H, r = _search_steps(ctx, opts, lam, H, r)

    # the last step t_{K-1} -> 0: x0_hat (plus the guidance term for RBF+DPS), free
    x, u = H[:, X], H[:, U]
    xK = ctx.step(x, u, K - 1)
    if guided:
        xK = xK + (ctx.h(K - 1, x) / lam) * H[:, GRAD]
    rK = ctx.reward(xK)
    rec.step(K, candidates=(xK[:, None], rK[:, None]), accepted=lambda: torch.ones(R, 1, dtype=torch.bool, device=dev),
             held=(xK[:, None], xK[:, None], rK[:, None]))
    return xK, rK, torch.zeros(R, dtype=torch.int64, device=dev)


def _search_steps(ctx: Context, opts: RBFOptions, lam: Optional[float], H: Tensor, r: Tensor):
    """Search steps 0 .. S-1 of all R runs, one batched model call per tick. ``H`` (R, P, *shape)
    holds each run's particle [x, u, x0_hat (, grad r)] at t_0 and ``r`` (R,) its reward; returns
    both at t_{K-1}.

    Every tick, each run still searching evaluates a chunk of its next draws (``width`` of them,
    rows in draw order); finished runs keep their place but draw nothing. The per-run bookkeeping
    (R small integers and rewards) lives in numpy: RBF makes a few dozen such operations per tick,
    and a numpy one costs well under a microsecond where a torch one costs several.
    """
    R, K, shape = ctx.R, ctx.K, ctx.shape
    S = K - 1
    n0 = opts.initial_draws(ctx.budget, K)
    rec = ctx.recorder
    guided = lam is not None
    dev = ctx.device
    spend_rest = opts.spend_rest_at_last_step
    ones = (1,) * len(shape)
    search_total = ctx.budget - n0
    reads_state = opts.allocation.reads_state  # else: the scheme's precomputed table of counters
    base_quota = None if reads_state else opts.allocation.for_total(S, search_total, device=dev)
    tab = ctx.tick_table()  # row k: step t_k -> t_{k+1}, then x0_hat and velocity rows of t_{k+1}
    W = tab.shape[1]
    # column-major (W, K, *ones): one gather of the rows' grid indices, then one unbind gives every
    # coefficient column, each (rows, *ones) broadcasting against (rows, *shape)
    tab_cols = tab.t().contiguous().view((W, K) + ones)

    on_cpu = torch.device(dev).type == "cpu"

    def to_torch(a: np.ndarray) -> Tensor:
        return torch.from_numpy(a) if on_cpu else torch.from_numpy(a).to(dev)

    base_quota_np = None if reads_state else opts.allocation.for_total_numpy(S, search_total)

    def state_at(k_now: np.ndarray) -> AllocationState:
        """The AllocationState of every run about to start search step k_now (copies: the scheme may keep it)."""
        drawn = np.where(k_now == 0, n0, per_step[runs, k_now])  # the previous step's draws (step 0: the initial ones)
        return AllocationState(
            step=to_torch(k_now.copy()), steps=S, t=ctx.times.index_select(0, to_torch(k_now + 1)),
            budget_left=to_torch(search_total - spent), spent=to_torch(spent.copy()),
            best_reward=to_torch(best.copy()).to(ctx.dtype), drawn=to_torch(drawn), accepted=to_torch(accepted.copy()),
            granted=to_torch(granted.copy()),
        )

    def quota_for(k_now: np.ndarray) -> np.ndarray:
        """Clamped quota of the search step each run is about to start (k_now < S)."""
        if reads_state:
            q = opts.allocation.quota_of(state_at(k_now)).cpu().numpy()
        elif base_quota_np is not None:
            q = base_quota_np(k_now, spent)
        else:
            q = base_quota(to_torch(k_now), to_torch(spent)).cpu().numpy()
        left = search_total - spent
        if spend_rest:
            q = np.where(k_now == S - 1, left, q)
        return clamp_quota(np.asarray(q, dtype=np.int64), k_now, S, left)

    runs = np.arange(R)
    spent = np.zeros(R, dtype=np.int64)  # search NFE of each run so far
    per_step = np.zeros((R, K), dtype=np.int64)  # charged to the ledger at the end
    discarded = np.zeros(R, dtype=np.int64)
    k = np.zeros(R, dtype=np.int64)  # grid index of each held particle (S: done)
    r_np = r.detach().to(torch.float64).cpu().numpy()  # float64 holds every reward dtype exactly
    best = r_np.copy()  # best reward on the path so far
    accepted = np.zeros(R, dtype=bool)  # did the previous step accept early (for schemes that read the state)
    granted = np.full(R, n0, dtype=np.int64)  # the previous step's quota (step 0: the initial draws)
    remaining = quota_for(k)  # draws the current step may still make (0 once done)
    granted = remaining.copy()
    rec.step(1, quota=lambda: to_torch(remaining))
    sb_r = np.full(R, -np.inf)  # the step's best draw so far
    SB = torch.zeros_like(H)
    sb_slot = np.zeros(R, dtype=np.int64)  # its slot in the history
    stochastic = ctx.sde
    # linear-ode: every draw of a step is the same point; evaluate it once and charge the draws the
    # algorithm makes (1 if it improves, else the whole quota). All runs then move in lockstep.
    # The history records the charged copies, so recording does not change what is computed.
    coincide = not stochastic
    fixed = opts.proposals_per_tick
    # adaptive widths: draws and early acceptances seen so far at each grid index; with acceptance
    # rate p a chunk of m discards about p (m - 1) / 2 draws per draw, so m = 1 + 2 share / p
    seen_draws = np.zeros(K + 1, dtype=np.int64)
    seen_accepts = np.zeros(K + 1, dtype=np.int64)
    never = np.iinfo(np.int64).max  # "no such draw" in the per-run minima below
    n_done = 0
    while True:
        kn = k + 1
        if coincide:
            width = np.ones(R, dtype=np.int64)
        elif fixed is None:
            chunk = (1 + (2 * opts.discard_share * (seen_draws + 1)) // (seen_accepts + 1)).astype(np.int64)
            width = np.minimum(np.minimum(chunk[kn], max(1, CHUNK_MAX_ROWS * R // (R - n_done))), remaining)
        else:
            width = np.minimum(remaining, fixed)
        m = int(width.max())
        dense = m == 1 and n_done == 0
        if dense:  # one draw per run: rows are runs
            N, src, start = R, runs, runs
            c = tab_cols.index_select(1, to_torch(k)).unbind(0)  # W columns (R, *ones): c[T.A] etc. (TickColumn)
            Hm = H  # (R, P, *shape)
        else:  # width[i] draws of run i in rows start[i] .. start[i] + width[i] - 1, in draw order
            start = np.cumsum(width) - width
            N = int(start[-1] + width[-1])
            src = np.repeat(runs, width)  # (N,) run of each row
            c = tab_cols.index_select(1, to_torch(k[src])).unbind(0)  # W columns (N, *ones)
            Hm = H.index_select(0, to_torch(src))  # (N, P, *shape): each row's held particle
        held = Hm.unbind(1)  # its slots: held[X], held[U] (N, *shape) ...
        y = torch.addcmul(c[T.A] * held[X], c[T.B], held[U])  # (N, *shape), the deterministic part
        if guided:
            y = y.addcmul_(c[T.H], held[GRAD], value=1.0 / lam)  # the guidance term h grad r / lam
        if stochastic:
            y = y.addcmul_(c[T.C], ctx.noise(N))
        krow = to_torch(kn[src]) if guided else None  # the guided x0_hat's grid rows
        vcols = (c[T.VELOCITY].view(N),) + c[T.VELOCITY + 1:]  # (t,) or (t, 1/s, ds/s, s dt)
        if guided:
            uy, y0, ry, gy = ctx.guided(y, krow, cols=vcols, charge=False)
        else:
            uy = ctx.velocity(y, krow, cols=vcols, charge=False)
            y0 = torch.addcmul(c[T.P_NEXT] * y, c[T.Q_NEXT], uy)
            ry = ctx.reward(y0, check_finite=False)  # checked below, on the host copy RBF reads anyway
        ry_np = ry.detach() if on_cpu else ry.detach().cpu()
        ry_np = ry_np.numpy().astype(np.float64, copy=False) if ry_np.dtype in (torch.float32, torch.float64) else \
            ry_np.to(torch.float64).numpy()  # float64 holds every reward dtype exactly
        if not np.isfinite(ry_np).all():
            ctx.check_reward_values(ry, y0)  # raises the reward's NaN / inf error
        no_stop = (k == S - 1) if spend_rest else None  # runs that may not stop early
        if dense:
            imp = ry_np > best  # the first draw that beats the best so far is accepted ...
            if no_stop is not None:
                imp &= ~no_stop
            used = np.where(imp, 1, remaining) if coincide else np.ones(R, dtype=np.int64)
            pick_j = np.zeros(R, dtype=np.int64)
            idx, pick_r = None, ry_np
        else:
            # per-run reductions over the flat rows (run i: rows start[i] .. start[i] + width[i] - 1,
            # in draw order), O(rows) whatever the widest chunk
            pos = np.arange(N) - start[src]  # each row's place in its run's chunk
            imp_row = ry_np > best[src]
            if no_stop is not None:
                imp_row &= ~no_stop[src]
            has = width > 0
            drawing = None if has.all() else has  # None: every run draws this tick (no masks needed)
            # charged: up to and including the first improving draw, else the whole chunk; the later
            # draws of a chunk are discarded unread (the sequential algorithm never makes them). The
            # first improving draw is also the best charged one (the draws before it are <= best).
            first = _reduce_per_run(np.minimum, np.where(imp_row, pos, never), start, drawing, never)
            imp = first != never
            top = _reduce_per_run(np.maximum, ry_np, start, drawing, -np.inf)
            # the chunk's best draw (its first, on ties)
            first_top = _reduce_per_run(np.minimum, np.where(ry_np == top[src], pos, never), start, drawing, 0)
            used = np.where(imp, first + 1, width)
            pick_j = np.where(imp, first, first_top)
            idx = np.minimum(start + pick_j, N - 1)  # (runs without draws: any row, never used)
            pick_r = np.where(has, ry_np[idx], -np.inf)
            discarded += width - used
        active = k < S
        per_step[runs[active], kn[active]] += used[active]
        spent += used
        if fixed is None and not coincide:
            seen_draws += np.bincount(kn, weights=used, minlength=K + 1).astype(np.int64)
            seen_accepts += np.bincount(kn[imp], minlength=K + 1)
        if rec.active:  # the history holds every charged draw (linear-ode: the charged copies of one point)
            first_at = np.cumsum(used) - used  # each run's first recorded draw
            run_rows = np.repeat(runs, used)
            place = np.arange(int(used.sum())) - first_at[run_rows]  # the draw's place in its run's chunk
            at = to_torch(np.asarray(start)[run_rows] + (0 if coincide else place))
            slot_rows = rec.draws(to_torch(kn[run_rows]), lambda: (to_torch(run_rows), y0.index_select(0, at),
                                                                    ry.index_select(0, at))).cpu().numpy()
            slot_now = slot_rows[np.minimum(first_at + pick_j, max(len(slot_rows) - 1, 0))] if len(slot_rows) else sb_slot
            sb_slot = np.where(pick_r > sb_r, slot_now, sb_slot)
        better = pick_r > sb_r
        if better.any():
            sb_r = np.where(better, pick_r, sb_r)
            cand = torch.stack([y, uy, y0] + ([gy] if guided else []), 1)  # (N, P, *shape)
            if idx is not None:  # the picked row of every run (R of the N rows)
                cand = cand.index_select(0, to_torch(idx))  # (R, P, *shape)
            SB = torch.where(to_torch(better).view((R, 1) + ones), cand, SB)  # (R, P, *shape)
        remaining -= used
        fin = imp | (remaining <= 0)  # ... or the step's best is kept when the quota is spent
        fin &= active  # finished runs stay finished
        if not fin.any():
            continue
        H = torch.where(to_torch(fin).view((R, 1) + ones), SB, H)
        r_np = np.where(fin, sb_r, r_np)
        best = np.maximum(best, r_np)  # best >= r before, so only finishing runs change
        k += fin
        sb_r[fin] = -np.inf
        if rec.active:
            fr = np.nonzero(fin)[0]
            fr_t = to_torch(fr)
            rec.accept_rows(fr_t, to_torch(k[fr]), to_torch(sb_slot[fr]))
            rec.hold_rows(fr_t, to_torch(k[fr]), H[fr_t, X], H[fr_t, X0], to_torch(r_np[fr]).to(ctx.dtype))
        done = k >= S
        n_done = int(done.sum())
        if n_done == R:
            break
        # a new quota for runs starting a step (unused quota is not carried here: the allocation
        # decides, Rollover adds it back); none for finished runs
        if reads_state:
            accepted = np.where(fin, imp, accepted)
        remaining = np.where(fin & ~done, quota_for(np.minimum(k, S - 1)), remaining)
        remaining[done] = 0
        if reads_state:
            granted = np.where(fin & ~done, remaining, granted)
        if rec.active:
            go = np.nonzero(fin & ~done)[0]
            rec.set_quota(to_torch(go), to_torch(k[go] + 1), to_torch(remaining[go]))
    ctx.ledger.charge_table(to_torch(per_step))
    ctx.ledger.discarded += to_torch(discarded)
    return H, to_torch(r_np).to(ctx.dtype)


def _reduce_per_run(ufunc, values: np.ndarray, start: np.ndarray, drawing, fill) -> np.ndarray:
    """(R,) ``ufunc`` over each run's rows of ``values`` (run i: rows start[i] .. start[i] + width[i] - 1).
    ``drawing`` (R,) bool marks the runs with rows this tick (None: all); the others get ``fill``."""
    if drawing is None:
        return ufunc.reduceat(values, start)
    out = np.full(start.shape[0], fill, dtype=values.dtype)
    out[drawing] = ufunc.reduceat(values, start[drawing])
    return out


@register
class RBF(Method):
    """Rollover Budget Forcing as the official code runs it: n0 initial draws, first improvement
    accepted, unused quota rolled over, the rest of the budget spent at the last search step."""

    name = "rbf"
    options = RBFOptions

    def minimum_budget(self, steps: int, opts: RBFOptions) -> int:
        return minimum_budget(steps, opts)

    def check_budget(self, budget: int, steps: int, opts: RBFOptions) -> None:
        n0 = opts.initial_draws(budget, steps)
        if budget < n0 + steps - 1:
            raise ValueError(
                f"budget {budget} cannot hold {self.name}'s {n0} initial draws and one draw per search step "
                f"({steps - 1}): it needs at least {n0 + steps - 1} NFE per run; lower initial_particles or raise the "
                f"budget (the smallest budget with these options is {self.minimum_budget(steps, opts)})"
            )

    def run(self, ctx: Context, opts: RBFOptions):
        return run_rbf(ctx, opts)
