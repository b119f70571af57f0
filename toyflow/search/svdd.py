"""SVDD and CoDe: one particle per run; at each search step (SVDD) or block of L search steps
(CoDe) draw M candidates from the current particle, keep the one with the best x0_hat reward.

Grid: t_0 = 1 > ... > t_K = 0. The particle starts as one draw at t_0 (1 NFE). Search step j
(j = 0 .. K-2) moves it from t_j to t_{j+1}; each candidate is evaluated at t_{j+1} (1 NFE: its
velocity gives x0_hat for the reward, and the kept candidate reuses that velocity for its next
step). The last step t_{K-1} -> 0 is the deterministic x0_hat step: free, and no search is
possible there. CoDe's candidates are paths: a block of L search steps costs M * L NFE.

NFE: 1 + sum over search steps of M_j <= budget, M_j from the allocation scheme (default Uniform:
the budget left after the initial draw is spread evenly, so all of it is used). CoDe asks the
scheme for each step of a block and runs M = (sum of those quotas) // L paths through it.
Minimum budget: ``steps`` (one candidate per search step).

In "linear-ode" mode every candidate of a step is the same point (an ODE step has one outcome):
the NFE are spent without any diversity, the weakness the paper shows for ODE-based search.
"""

from __future__ import annotations

import functools

import torch

from toyflow.search._core import Context
from toyflow.search.budget import AllocationScheme, AllocationState, as_quota
from toyflow.search.method import Method, register
from toyflow.search.options import SVDDOptions

__all__ = ["minimum_budget", "run_blocks", "SVDD"]


def minimum_budget(steps: int) -> int:
    return steps


def run_blocks(ctx: Context, allocation: AllocationScheme, block: int = 1):
    """SVDD (``block=1``) or CoDe (``block=L``). Returns (samples, rewards, selected)."""
    R, K, shape = ctx.R, ctx.K, ctx.shape
    S = K - 1
    rec = ctx.recorder
    dev = ctx.device
    ar = torch.arange(R, device=dev)
    one = torch.ones(R, 1, dtype=torch.bool, device=dev)

    x = ctx.noise(R)
    u = ctx.velocity(x, 0)
    x0 = ctx.x0(x, u, 0)
    r = ctx.reward(x0)
    rec.step(0, candidates=(x0[:, None], r[:, None]), accepted=one, held=(x[:, None], x0[:, None], r[:, None]),
             quota=lambda: torch.ones(R, dtype=torch.int64, device=dev))

    initial = 1
    search_total = ctx.budget - initial
    reads_state = allocation.reads_state
    if reads_state:  # what a scheme reading the state sees of the previous step (step 0: the initial draw)
        best_r, prev_acc = r.clone(), torch.zeros(R, dtype=torch.bool, device=dev)
        prev_drawn = prev_granted = torch.ones(R, dtype=torch.int64, device=dev)
    blocks = [(j0, min(j0 + block, S)) for j0 in range(0, S, block)]
    for j0, j1 in blocks:
        L = j1 - j0
        spent = ctx.ledger.spent - initial
        left = search_total - spent
        # the block's quota: its steps' quotas, each asked as if the steps before spent theirs
        q, sp = torch.zeros_like(spent), spent
        for j in range(j0, j1):
            if reads_state:
                state = AllocationState(
                    step=torch.full((R,), j, dtype=torch.int64, device=dev), steps=S, t=ctx.times[j + 1].expand(R),
                    budget_left=search_total - sp, spent=sp.clone(), best_reward=best_r.clone(), drawn=prev_drawn,
                    accepted=prev_acc,
                    granted=prev_granted)
                qj = allocation.quota_of(state).clamp_min(0)
                prev_drawn = prev_granted = qj
            else:
                qj = as_quota(allocation.quota(j, S, search_total - sp, sp), sp).clamp_min(0)
            q, sp = q + qj, sp + qj
        hi = (left - (S - j1)) // L  # keep one NFE for every later search step
        M = torch.maximum(torch.minimum(q // L, hi), torch.ones_like(q))
        Mmax = int(M.max())
        mask = torch.arange(Mmax, device=dev)[None] < M[:, None]  # (R, Mmax)
        full = bool(mask.all())
        rows = mask.reshape(-1).nonzero().squeeze(1) if not full else None
        run_of = ar.repeat_interleave(Mmax)[rows] if not full else None
        y = x[:, None].expand((R, Mmax) + shape).reshape((R * Mmax,) + shape)
        uy = u[:, None].expand((R, Mmax) + shape).reshape((R * Mmax,) + shape)
        path = []  # (y, uy) at t_{j0+1} .. t_{j1}, for the history
        for k in range(j0, j1):
            z = ctx.noise(R * Mmax) if ctx.needs_noise(k) else None
            y = ctx.step(y, uy, k, z)
            if full:
                uy = ctx.velocity(y, k + 1)
            else:
                uy = torch.zeros_like(y).index_copy_(0, rows, ctx.velocity(y[rows], k + 1, run=run_of))
            path.append((y, uy))
        y0 = ctx.x0(y, uy, j1)
        if full:
            ry = ctx.reward(y0).view(R, Mmax)
        else:
            ry = torch.full((R * Mmax,), -torch.inf, dtype=ctx.dtype, device=dev)
            ry = ry.index_copy_(0, rows, ctx.reward(y0[rows])).view(R, Mmax)
        best = ry.argmax(1)
        pick = ar * Mmax + best
        x, u, x0, r = y[pick], uy[pick], y0[pick], ry[ar, best]
        if reads_state:
            prev_acc, best_r = r > best_r, torch.maximum(best_r, r)
            prev_drawn = prev_granted = M
        for i, (py, pu) in enumerate(path):
            k = j0 + 1 + i

            @functools.cache
            def seen(py=py, pu=pu, k=k, mask=mask):  # every candidate's x0_hat and reward at t_k, for the history
                p0 = ctx.x0(py, pu, k)
                pr = torch.full((R * Mmax,), float("nan"), dtype=ctx.dtype, device=dev)
                pr[mask.reshape(-1)] = ctx.reward(p0[mask.reshape(-1)])
                return p0, pr

            rec.step(k, candidates=lambda seen=seen, mask=mask: (seen()[0].view((R, Mmax) + shape), seen()[1].view(R, Mmax), mask),
                     accepted=lambda best=best, mask=mask: torch.nn.functional.one_hot(best, Mmax).bool() & mask,
                     held=lambda seen=seen, py=py, pick=pick: (py[pick][:, None], seen()[0][pick][:, None], seen()[1][pick][:, None]),
                     quota=M)

    xK = ctx.step(x, u, K - 1)
    rK = ctx.reward(xK)
    rec.step(K, candidates=(xK[:, None], rK[:, None]), accepted=one, held=(xK[:, None], xK[:, None], rK[:, None]))
    return xK, rK, torch.zeros(R, dtype=torch.int64, device=dev)


@register
class SVDD(Method):
    """SVDD: M = quota candidates from the current particle at every search step, the best kept."""

    name = "svdd"
    options = SVDDOptions

    def run(self, ctx: Context, opts: SVDDOptions):
        return run_blocks(ctx, opts.allocation, 1)
