"""Beam search, a toyflow search method written outside the package.

    from toyflow import search
    search.register(BeamSearch)   # or search.resolve_method("examples/beam_search.py:BeamSearch")
    res = search.run("beam", model, reward, mode="vp-sde", budget=200, steps=10, runs=64, shape=(2,), beams=4)

    toyflow bench search --methods svdd rbf examples/beam_search.py:BeamSearch --option beam.beams=4

Per run, on the grid t_0 = 1 > ... > t_K = 0 (B = ``beams``, W = ``width``):

1. draw B noises at t_0 and evaluate them (B NFE);
2. at search step k (t_k -> t_{k+1}, k = 0 .. K-2) every beam spawns W children by one step of the
   sampler with independent noise; each child is evaluated at t_{k+1} (1 NFE: its velocity gives
   x0_hat for the reward and is reused for the child's next step), and the B children with the
   best x0_hat rewards are the new beams;
3. the last step to t_K = 0 is the x0_hat step (free); the beam with the best final reward is returned.

NFE per run: B + B W (K - 1) <= budget (``width=None``: the largest W that fits). Minimum budget:
B K (W = 1, B plain sampling paths). B = 1 is SVDD with W candidates per step. In "linear-ode" the
W children of a beam coincide (an ODE step has one outcome), as SVDD's candidates do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from toyflow import search


@dataclass(frozen=True)
class BeamOptions:
    """``beams`` B: particles kept per run. ``width`` W: children per beam and search step (None: the
    largest that fits the budget)."""

    beams: int = 4
    width: Optional[int] = None

    def __post_init__(self):
        for name, v in (("beams", self.beams), ("width", self.width)):
            if (v is not None or name == "beams") and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")


class BeamSearch(search.Method):
    """Keep the B best of B W children (by x0_hat reward) at every search step."""

    name = "beam"
    options = BeamOptions
    label = "Beam"

    def width(self, budget: int, steps: int, opts: BeamOptions) -> int:
        if opts.width is not None or steps == 1:
            return opts.width or 1
        return (budget - opts.beams) // (opts.beams * (steps - 1))

    def minimum_budget(self, steps: int, opts: BeamOptions) -> int:
        return opts.beams * (1 + (opts.width or 1) * (steps - 1))

    def particles(self, budget: int, steps: int, opts: BeamOptions) -> int:
        return opts.beams

    def run(self, ctx: search.SearchContext, opts: BeamOptions):
        R, K, B, W = ctx.runs, ctx.steps, opts.beams, self.width(ctx.budget, ctx.steps, opts)
        first_of_run = torch.arange(R, device=ctx.device)[:, None]
        x = ctx.noise(R * B)  # (R * B, *shape), run-major
        u = ctx.velocity(x, 0)
        for k in range(K - 1):
            y = ctx.step(x.repeat_interleave(W, 0), u.repeat_interleave(W, 0), k,
                         ctx.noise(R * B * W) if ctx.needs_noise(k) else None)
            uy = ctx.velocity(y, k + 1)
            r = ctx.reward(ctx.x0(y, uy, k + 1)).view(R, B * W)
            keep = (first_of_run * (B * W) + r.topk(B, dim=1).indices).reshape(-1)
            x, u = y[keep], uy[keep]
        xK = ctx.step(x, u, K - 1)  # the x0_hat step to t = 0
        rK = ctx.reward(xK).view(R, B)
        best = rK.argmax(1)
        return xK.view((R, B) + ctx.shape)[first_of_run[:, 0], best], rK[first_of_run[:, 0], best], best
