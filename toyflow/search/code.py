"""CoDe: SVDD over blocks of L search steps (the kernel is :func:`toyflow.search.svdd.run_blocks`).

Each candidate is a path through the block; a block of L steps runs M = (sum of its steps'
quotas) // L candidate paths and costs M L NFE. L = 1 is SVDD.
"""

from __future__ import annotations

from toyflow.search._core import SearchContext
from toyflow.search.method import register
from toyflow.search.options import CoDeOptions
from toyflow.search.svdd import SVDD, run_blocks

__all__ = ["CoDe"]


@register
class CoDe(SVDD):
    """CoDe: the best of M candidate paths through every block of ``block`` search steps."""

    name = "code"
    options = CoDeOptions

    def run(self, ctx: SearchContext, opts: CoDeOptions):
        return run_blocks(ctx, opts.allocation, opts.block)
