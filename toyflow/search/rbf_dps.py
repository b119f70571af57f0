"""RBF whose proposals take DPS-guided steps (the kernel is :func:`toyflow.search.rbf.run_rbf`).

Every proposal from the held particle adds h (1/lam) grad_x r(x0_hat(x)) to its update, the
gradient taken through the model (needs a differentiable reward; backward passes are not NFE).
"""

from __future__ import annotations

from toyflow.search._core import SearchContext
from toyflow.search.method import register
from toyflow.search.options import RBFDPSOptions
from toyflow.search.rbf import RBF, run_rbf

__all__ = ["RBFDPS"]


@register
class RBFDPS(RBF):
    """RBF with DPS-guided proposals."""

    name = "rbf+dps"
    options = RBFDPSOptions
    needs_gradients = True

    def run(self, ctx: SearchContext, opts: RBFDPSOptions):
        return run_rbf(ctx, opts, lam=opts.lam)
