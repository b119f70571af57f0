"""Search over paths (SoP, Ma et al. 2025), on the time grid t_0 = 1 > ... > t_K = 0.

Schedule (N = paths, M = branch, f = renoise_steps, s = start index):

1. Phase 0: N paths from t_0 down to t_s (evaluated at t_0 .. t_s; the evaluation at t_s gives
   their x0_hat rewards).
2. Iteration from grid index i (i = s, s+1, ..., K-1): every kept path spawns M copies, re-noised
   up to t_{i-f} with the interpolant's forward kernel (``dynamics.renoise``, no NFE), then
   denoised f + 1 steps down to t_{i+1} (evaluations at t_{i-f} .. t_i) and evaluated there for its
   x0_hat reward (one more NFE; none when t_{i+1} = 0, where the sample is exact). The N best of the
   N M candidates are kept. Each iteration advances one grid step, so the search ends at t = 0.
3. The best of the N final paths is returned.

NFE per run: N (s + 1) + N M ((f + 2)(K - 1 - s) + (f + 1)). With ``branch=None`` M is the
largest value that fits the budget; the minimum budget is the cost with M = 1.
"""

from __future__ import annotations

import torch

from toyflow.search._core import Context
from toyflow.search.method import Method, register
from toyflow.search.options import SoPOptions

__all__ = ["start_index", "cost", "minimum_budget", "branch_for", "run_sop", "SearchOverPaths"]


def start_index(steps: int, opts: SoPOptions) -> int:
    return int(min(max(round(opts.start * steps), opts.renoise_steps), steps - 1))


def cost(steps: int, opts: SoPOptions, branch: int) -> int:
    """NFE per run of the schedule above."""
    K, N, f = steps, opts.paths, opts.renoise_steps
    s = start_index(K, opts)
    return N * (s + 1) + N * branch * ((f + 2) * (K - 1 - s) + (f + 1))


def _check_steps(steps: int, opts: SoPOptions) -> None:
    if steps < opts.renoise_steps + 1:
        raise ValueError(
            f"SoP needs steps >= renoise_steps + 1 = {opts.renoise_steps + 1} (it re-noises by renoise_steps grid "
            f"steps after a start index >= renoise_steps), got steps = {steps}"
        )


def minimum_budget(steps: int, opts: SoPOptions) -> int:
    _check_steps(steps, opts)
    return cost(steps, opts, opts.branch or 1)


def branch_for(budget: int, steps: int, opts: SoPOptions) -> int:
    if opts.branch is not None:
        return opts.branch
    per = cost(steps, opts, 1) - cost(steps, opts, 0)
    return max(1, (budget - cost(steps, opts, 0)) // per)


def run_sop(ctx: Context, opts: SoPOptions):
    R, K, shape = ctx.R, ctx.K, ctx.shape
    N, f = opts.paths, opts.renoise_steps
    M = branch_for(ctx.budget, K, opts)
    s = start_index(K, opts)
    rec = ctx.recorder
    dev = ctx.device
    ar = torch.arange(R, device=dev)[:, None]
    all_true = torch.ones(R, N, dtype=torch.bool, device=dev)

    x = ctx.noise(R * N)
    for k in range(s + 1):
        u = ctx.velocity(x, k)
        x0 = ctx.x0(x, u, k)
        r = ctx.reward(x0) if (rec.active or k == s) else None  # SoP reads the reward at t_s only
        rec.step(k, held=lambda x=x, x0=x0, r=r: (x.view((R, N) + shape), x0.view((R, N) + shape), r.view(R, N)),
                 candidates=lambda x0=x0, r=r: (x0.view((R, N) + shape), r.view(R, N)), accepted=all_true)
        if k < s:
            z = ctx.noise(R * N) if ctx.needs_noise(k) else None
            x = ctx.step(x, u, k, z)
    r = r.view(R, N)

    for i in range(s, K):
        y = x.view((R, N, 1) + shape).expand((R, N, M) + shape).reshape((R * N * M,) + shape)
        y = ctx.renoise(y, i, i - f, ctx.noise(R * N * M))
        for k in range(i - f, i + 1):
            uy = ctx.velocity(y, k)
            z = ctx.noise(R * N * M) if ctx.needs_noise(k) else None
            y = ctx.step(y, uy, k, z)
        land = i + 1
        if land < K:
            uy = ctx.velocity(y, land)
            y0 = ctx.x0(y, uy, land)
        else:
            y0 = y
        ry = ctx.reward(y0).view(R, N * M)
        top = ry.topk(N, dim=1).indices  # (R, N), best first
        pick = (ar * (N * M) + top).reshape(-1)
        x, r = y[pick], ry.gather(1, top)
        rec.step(land, candidates=(y0.view((R, N * M) + shape), ry),
                 accepted=lambda top=top: torch.zeros(R, N * M, dtype=torch.bool, device=dev).scatter_(1, top, True),
                 parents=(i, top // M), held=lambda x=x, pick=pick, r=r: (x.view((R, N) + shape), y0[pick].view((R, N) + shape), r))
    xs = x.view((R, N) + shape)
    sel = r.argmax(1)
    return xs[ar[:, 0], sel], r[ar[:, 0], sel], sel


@register
class SearchOverPaths(Method):
    """SoP: N paths, re-noised and denoised in M copies each per iteration, the N best kept."""

    name = "sop"
    options = SoPOptions

    def minimum_budget(self, steps: int, opts: SoPOptions) -> int:
        return minimum_budget(steps, opts)

    def particles(self, budget: int, steps: int, opts: SoPOptions) -> int:
        return opts.paths

    def run(self, ctx: Context, opts: SoPOptions):
        return run_sop(ctx, opts)
