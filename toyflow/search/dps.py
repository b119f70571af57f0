"""DPS: gradient-guided Best-of-N (the kernel is :func:`toyflow.search.bon.run_bon`).

N = budget // steps trajectories per run, each update x <- step(x, u) + h (1/lam) grad_x r(x0_hat(x))
with h = t_k - t_{k+1}, the gradient taken through the model; the best final reward is returned.
NFE: N K (the backward passes are not counted). budget = steps is plain DPS (one guided path).
"""

from __future__ import annotations

from toyflow.search._core import SearchContext
from toyflow.search.bon import BestOfN, run_bon
from toyflow.search.method import register
from toyflow.search.options import DPSOptions

__all__ = ["DPS"]


@register
class DPS(BestOfN):
    """Best-of-N with DPS-guided trajectories (needs a differentiable reward)."""

    name = "dps"
    options = DPSOptions
    needs_gradients = True

    def run(self, ctx: SearchContext, opts: DPSOptions):
        return run_bon(ctx, lam=opts.lam)
