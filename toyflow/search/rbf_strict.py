"""RBF as one reading of the paper's text (the kernel is :func:`toyflow.search.rbf.run_rbf`).

A single initial noise, and the first improving candidate is accepted at every search step, the
last one included, so a run may finish with part of its budget unused (``res.nfe <= budget``).
"""

from __future__ import annotations

from toyflow.search.method import register
from toyflow.search.options import RBFStrictOptions
from toyflow.search.rbf import RBF

__all__ = ["RBFStrict"]


@register
class RBFStrict(RBF):
    """RBF with the paper's text defaults: ``initial_particles=1``, ``spend_rest_at_last_step=False``."""

    name = "rbf-strict"
    options = RBFStrictOptions
