"""Best-of-N and DPS (gradient-guided Best-of-N).

BoN: N = budget // steps independent trajectories per run, all advanced by one batched model call
per grid time; the sample with the best final reward is returned.

NFE: N at every grid time t_0 .. t_{K-1} (the step to t_K = 0 is the x0_hat step, free):
N * K <= budget. Minimum budget: ``steps`` (N = 1).

DPS: the same with each update x <- step(x, u) + h (1/lam) grad_x r(x0_hat(x)), h = t_k - t_{k+1},
the gradient taken through the model's x0_hat (one NFE per particle and step; the backward pass is
not counted). With budget = steps it is a single guided trajectory.
"""

from __future__ import annotations

import functools

from typing import Optional

import torch

from toyflow.search._core import Context
from toyflow.search.method import Method, register
from toyflow.search.options import BoNOptions

__all__ = ["minimum_budget", "run_bon", "BestOfN"]


def minimum_budget(steps: int) -> int:
    return steps


def run_bon(ctx: Context, lam: Optional[float] = None):
    """Return (samples (R, *shape), rewards (R,), selected (R,)). ``lam`` given: DPS guidance."""
    R, K, shape = ctx.R, ctx.K, ctx.shape
    N = ctx.budget // K
    rec = ctx.recorder
    guided = lam is not None
    x = ctx.noise(R * N)
    all_true = torch.ones(R, N, dtype=torch.bool, device=ctx.device)
    for k in range(K):
        if guided:
            u, x0, r, grad = ctx.guided(x, k)
        else:
            u = ctx.velocity(x, k)
            x0 = r = None  # BoN itself needs neither; the history does

        @functools.cache
        def seen(x=x, u=u, x0=x0, r=r, k=k):  # (x, x0_hat, reward) per particle, for the history only
            x0 = ctx.x0(x, u, k) if x0 is None else x0
            r = ctx.reward(x0) if r is None else r
            return x.view((R, N) + shape), x0.view((R, N) + shape), r.view(R, N)

        rec.step(k, held=seen, candidates=lambda: seen()[1:], accepted=all_true)
        z = ctx.noise(R * N) if ctx.needs_noise(k) else None
        x_next = ctx.step(x, u, k, z)
        if guided:
            x_next = x_next + (ctx.h(k, x) / lam) * grad
        x = x_next
    r = ctx.reward(x).view(R, N)
    best = r.argmax(1)
    ar = torch.arange(R, device=ctx.device)
    xs = x.view((R, N) + shape)
    rec.step(K, held=(xs, xs, r), candidates=(xs, r), accepted=lambda: torch.nn.functional.one_hot(best, N).bool())
    return xs[ar, best], r[ar, best], best


@register
class BestOfN(Method):
    """Best-of-N: N = budget // steps independent trajectories, the best final reward is returned."""

    name = "bon"
    options = BoNOptions

    def particles(self, budget: int, steps: int, opts) -> int:
        return budget // steps

    def run(self, ctx: Context, opts: BoNOptions):
        return run_bon(ctx)
