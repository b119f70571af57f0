"""One run of a search, as the textbook methods see it: the SearchContext primitives for run ``i``.

Every velocity evaluation is charged to run ``i`` of the shared ledger (1 NFE per row), and every
random number comes from the call's generator, drawn in the order this run asks for it.
"""

from __future__ import annotations

import torch

from toyflow.search.budget import AllocationState


class OneRun:
    """The primitives of :class:`~toyflow.search.SearchContext` for a single run (batches of B rows)."""

    def __init__(self, ctx, i: int):
        self.ctx, self.i = ctx, i
        self.K, self.budget, self.shape, self.times = ctx.steps, ctx.budget, ctx.shape, ctx.times

    def noise(self, n: int):
        return self.ctx.noise(n)

    def uniform(self, n: int):
        return self.ctx.uniform(n)

    def velocity(self, x, k: int):
        """u_{t_k}(x); charges len(x) NFE to this run."""
        run = torch.full((x.shape[0],), self.i, dtype=torch.int64, device=x.device)
        return self.ctx.velocity(x, k, run=run)

    def guided(self, x, k: int):
        """(u, x0_hat, reward, grad_x reward) at t_k; charges len(x) NFE to this run."""
        run = torch.full((x.shape[0],), self.i, dtype=torch.int64, device=x.device)
        return self.ctx.guided(x, k, run=run)

    def x0(self, x, u, k: int):
        return self.ctx.x0(x, u, k)

    def step(self, x, u, k: int, z=None):
        return self.ctx.step(x, u, k, z)

    def needs_noise(self, k: int) -> bool:
        return self.ctx.needs_noise(k)

    def h(self, k: int, x):
        return self.ctx.h(k, x)

    def renoise(self, x, k_from: int, k_to: int, z):
        return self.ctx.renoise(x, k_from, k_to, z)

    def reward(self, x0):
        return self.ctx.reward(x0)

    def quota(self, allocation, j: int, S: int, total: int, spent: int, best: float, drawn: int,
              accepted: bool, granted: int) -> int:
        """The allocation scheme's quota for search step j of this run (not yet clamped)."""
        dev = self.ctx.device

        def t(v, dtype=torch.int64):
            return torch.tensor([v], dtype=dtype, device=dev)

        state = AllocationState(step=t(j), steps=S, t=self.times[j + 1].reshape(1), budget_left=t(total - spent),
                                spent=t(spent), best_reward=t(best, self.ctx.dtype), drawn=t(drawn),
                                accepted=t(accepted, torch.bool), granted=t(granted))
        return int(allocation.quota_of(state)[0])


def each_run(ctx):
    """The R runs, one after another."""
    return [OneRun(ctx, i) for i in range(ctx.runs)]


def stack(results):
    """[(sample, reward), ...] per run -> (samples (R, *shape), rewards (R,))."""
    return torch.stack([s for s, _ in results]), torch.stack([r for _, r in results])
