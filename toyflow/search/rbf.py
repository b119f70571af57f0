"""Rollover Budget Forcing (RBF, Kim et al. 2025) and RBF with DPS-guided proposals.

One particle per run. Grid t_0 = 1 > ... > t_K = 0; search step j (j = 0 .. K-2) moves the particle
from t_j to t_{j+1}; the last step t_{K-1} -> 0 is the deterministic x0_hat step (free).

1. Draw ``initial_particles`` noises at t_0, evaluate them (1 NFE each), keep the best x0_hat
   reward (paper: a single draw). ``best`` := its reward.
2. At search step j the run gets a quota from the allocation scheme (default
   ``Rollover(Uniform())``: an even share of the budget left after step 1, plus whatever earlier
   steps left unused). It draws candidates one at a time (independent SDE noise from the current
   particle), evaluating each at t_{j+1} (1 NFE: velocity -> x0_hat -> reward; the accepted
   candidate reuses that velocity for its own next step), and **accepts the first whose reward
   beats ``best``** (the best reward on the path so far), moving on at once; the rest of the quota
   rolls over. If the quota runs out first, the step's best candidate is kept (``best`` unchanged).
3. ``spend_rest_at_last_step=True`` (official code): at the last search step, no early acceptance:
   every NFE left is drawn and the best candidate kept.

NFE per run: initial_particles + sum of the candidates drawn <= budget; minimum budget
``initial_particles + steps - 1`` (one candidate per search step).

Vectorized: all R runs advance together, one batched model call per tick with one candidate per
active run, whatever step each run is at (runs that finished are left out of the batch).
In "linear-ode" mode all candidates of a step coincide (the ODE step has one outcome), so only the
initial draw can diversify the search.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from toyflow.search._core import Context
from toyflow.search.budget import clamp_quota
from toyflow.search.options import RBFOptions

__all__ = ["minimum_budget", "run_rbf"]


def minimum_budget(steps: int, opts: RBFOptions) -> int:
    return opts.initial_particles + steps - 1


def run_rbf(ctx: Context, opts: RBFOptions, lam: Optional[float] = None):
    R, K, shape = ctx.R, ctx.K, ctx.shape
    S = K - 1
    n0 = opts.initial_particles
    rec = ctx.recorder
    guided = lam is not None
    dev = ctx.device
    ar = torch.arange(R, device=dev)
    spend_rest = opts.spend_rest_at_last_step
    ones = (1,) * len(shape)

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
    if rec is not None:
        slots = rec.candidates(0, x0i.view((R, n0) + shape), ri.view(R, n0))
        rec.accept(0, slots, torch.nn.functional.one_hot(b0, n0).bool())
        rec.hold(0, H[:, 0:1], H[:, 2:3], r[:, None])
        rec.set_quota(None, 0, torch.full((R,), n0, dtype=torch.int64, device=dev))

    out_H, out_r = H, r
    if S > 0:
        search_total = ctx.budget - n0
        base_quota = opts.allocation.for_total(S, search_total, device=dev)
        tab = ctx.tick_table()  # row k: step t_k -> t_{k+1}, then x0_hat and velocity rows of t_{k+1}
        W = tab.shape[1]

        def quota_for(k_now: Tensor, alive: Tensor, n: int) -> Tensor:
            """Clamped quota of the search step each working run is about to start."""
            spent = (ctx.ledger.spent if n == R else ctx.ledger.spent[alive]) - n0
            q = base_quota(k_now, spent)
            if spend_rest:
                q = torch.where(k_now == S - 1, search_total - spent, q)
            return clamp_quota(q, k_now, S, search_total - spent)

        out_H, out_r = H.clone(), r.clone()
        alive = ar  # run id of each working row; finished runs are compacted away
        k = torch.zeros(R, dtype=torch.int64, device=dev)  # grid index of each held particle
        best = r.clone()  # best reward on the path so far
        remaining = quota_for(k, alive, R)  # candidates the current step may still draw
        if rec is not None:
            rec.set_quota(None, 1, remaining)
        sb_r = torch.full((R,), -torch.inf, dtype=ctx.dtype, device=dev)  # the step's best candidate so far
        SB = torch.zeros_like(H)
        sb_slot = torch.zeros(R, dtype=torch.int64, device=dev)  # its slot in the history
        stochastic = ctx.sde
        n = R
        while True:
            # one candidate for every working run, all evaluated in one batched model call
            T2 = tab[k]
            c = T2.view((n, W) + ones).unbind(1)
            y = torch.addcmul(c[0] * H[:, 0], c[1], H[:, 1])
            if stochastic:
                y = y.addcmul_(c[2], ctx.noise(n))
            if guided:
                y = y.addcmul_(c[3], H[:, 3], value=1.0 / lam)
            kn = k + 1
            vcols = (T2[:, 6],) + c[7:]
            run = None if n == R else alive
            if guided:
                uy, y0, ry, gy = ctx.guided(y, kn, run, cols=vcols, unique=True)
                cand = torch.stack([y, uy, y0, gy], 1)
            else:
                uy = ctx.velocity(y, kn, run, cols=vcols, unique=True)
                y0 = torch.addcmul(c[4] * y, c[5], uy)
                ry = ctx.reward(y0)
                cand = torch.stack([y, uy, y0], 1)
            if rec is not None:
                slot_now = rec.candidate_rows(alive, kn, y0, ry)
                sb_slot = torch.where(ry > sb_r, slot_now, sb_slot)
            better = ry > sb_r
            sb_r = torch.where(better, ry, sb_r)
            SB = torch.where(better.view((n, 1) + ones), cand, SB)
            remaining -= 1
            fin = ry > best  # accept the first candidate that beats the best so far ...
            if spend_rest:
                fin &= k != S - 1
            fin |= remaining <= 0  # ... or take the step's best when the quota is spent
            if not bool(fin.any()):
                continue
            H = torch.where(fin.view((n, 1) + ones), SB, H)
            r = torch.where(fin, sb_r, r)
            best = torch.maximum(best, r)  # best >= r before, so only finishing runs change
            k = k.add_(fin)
            sb_r = sb_r.masked_fill_(fin, -torch.inf)
            if rec is not None:
                fr = fin.nonzero().squeeze(1)
                rec.accept_rows(alive[fr], k[fr], sb_slot[fr])
                rec.hold_rows(alive[fr], k[fr], H[fr, 0], H[fr, 2], r[fr])
            if int(k.max()) >= S:  # some runs finished their last search step: write out, compact
                done = k >= S
                d = done.nonzero().squeeze(1)
                out_H[alive[d]] = H[d]
                out_r[alive[d]] = r[d]
                keep = (~done).nonzero().squeeze(1)
                n = keep.shape[0]
                if n == 0:
                    break
                alive, H, SB, r, best, k = alive[keep], H[keep], SB[keep], r[keep], best[keep], k[keep]
                sb_r, remaining, fin = sb_r[keep], remaining[keep], fin[keep]
                if rec is not None:
                    sb_slot = sb_slot[keep]
            # unused quota is not carried here: the allocation decides (Rollover adds it back)
            remaining = torch.where(fin, quota_for(k, alive, n), remaining)
            if rec is not None:
                go = fin.nonzero().squeeze(1)
                rec.set_quota(alive[go], k[go] + 1, remaining[go])

    # the last step t_{K-1} -> 0: x0_hat (plus the guidance term for RBF+DPS), free
    x, u = out_H[:, 0], out_H[:, 1]
    xK = ctx.step(x, u, K - 1)
    if guided:
        xK = xK + (ctx.h(K - 1, x) / lam) * out_H[:, 3]
    rK = ctx.reward(xK)
    if rec is not None:
        slots = rec.candidates(K, xK[:, None], rK[:, None])
        rec.accept(K, slots, torch.ones(R, 1, dtype=torch.bool, device=dev))
        rec.hold(K, xK[:, None], xK[:, None], rK[:, None])
    return xK, rK, torch.zeros(R, dtype=torch.int64, device=dev)
