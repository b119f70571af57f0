"""A reward-adaptive allocation scheme: search harder where the search stalls.

    python examples/stall_boost_allocation.py      # compares it with RBF's and uniform allocation

The scheme reads the search state (:class:`toyflow.search.AllocationState`, one entry per run):
the quota of a step is an even share of the budget left, times ``boost`` after a step whose kept
candidate did not beat the best reward so far, and divided by ``boost`` after one that did; the
first search step gets the plain share and the last one what is left. Each run gets its own quota.

With RBF wrap it in ``Rollover(...)``: RBF stops at the first improvement, and the rollover hands
what a step left unused to the next step.
"""

from __future__ import annotations

import torch

from toyflow import search


class StallBoost(search.AllocationScheme):
    """Even share of the budget left; ``boost`` times more after a step without improvement, ``boost``
    times less after an improvement."""

    def __init__(self, boost: float = 2.0):
        if not boost >= 1.0:
            raise ValueError(f"StallBoost needs boost >= 1, got {boost!r}")
        self.boost = float(boost)

    def quota(self, state: search.AllocationState) -> torch.Tensor:
        share = state.budget_left.double() / (state.steps - state.step).double()
        factor = torch.where(state.accepted, 1.0 / self.boost, self.boost).double()
        factor = torch.where(state.step == 0, torch.ones_like(factor), factor)
        q = torch.floor(share * factor).long()
        return torch.where(state.step == state.steps - 1, state.budget_left, q)  # the last step takes the rest

    def __repr__(self) -> str:
        return f"StallBoost(boost={self.boost:g})"


def compare(budget: int = 100, runs: int = 256, mode: str = "vp-sde", seed: int = 0) -> dict:
    """Mean reward on the rare-mode task of uniform SVDD, RBF (Rollover(Uniform())) and both with StallBoost."""
    from toyflow import rewards

    gmm, reward = rewards.task("rare-mode")
    cells = {
        "svdd, Uniform": ("svdd", search.Uniform()),
        "svdd, StallBoost": ("svdd", StallBoost()),
        "rbf, Rollover(Uniform)": ("rbf", search.Rollover(search.Uniform())),
        "rbf, Rollover(StallBoost)": ("rbf", search.Rollover(StallBoost())),
    }
    out = {}
    for label, (method, allocation) in cells.items():
        res = search.run(method, gmm, reward, mode=mode, budget=budget, steps=10, runs=runs, shape=(2,),
                         generator=torch.Generator().manual_seed(seed), allocation=allocation)
        out[label] = (float(res.rewards.mean()), float(res.rewards.std() / runs**0.5), float(res.nfe.double().mean()))
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    for budget in (50, 100, 200):
        for label, (mean, se, nfe) in compare(budget).items():
            print(f"budget {budget:>4}  {label:<28} mean reward {mean:.3f} ± {se:.3f}   NFE {nfe:.0f}")
