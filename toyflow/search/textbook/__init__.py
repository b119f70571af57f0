"""Textbook implementations: each search method as the paper's pseudo-code writes it.

One run at a time, plain loops, the equations by name (``run.step``, ``run.velocity``,
``run.x0``, ``run.reward``): the code the notebooks show. ``search.run(..., engine="textbook")``
runs them; the fast, vectorized engine (the default) is tested to equal them (tests/test_textbook.py).
"""

from __future__ import annotations

from toyflow.search.textbook.bon import run_bon
from toyflow.search.textbook.code import run_code
from toyflow.search.textbook.dps import run_dps
from toyflow.search.textbook.rbf import run_rbf, run_rbf_dps
from toyflow.search.textbook.smc import run_smc
from toyflow.search.textbook.sop import run_sop
from toyflow.search.textbook.svdd import run_svdd

__all__ = ["TEXTBOOK", "textbook_runner"]

#: method name -> (its built-in Method class name, the textbook run(ctx, opts))
TEXTBOOK = {
    "bon": ("BestOfN", run_bon),
    "sop": ("SearchOverPaths", run_sop),
    "smc": ("SMC", run_smc),
    "svdd": ("SVDD", run_svdd),
    "code": ("CoDe", run_code),
    "rbf": ("RBF", run_rbf),
    "rbf-strict": ("RBFStrict", run_rbf),
    "dps": ("DPS", run_dps),
    "rbf+dps": ("RBFDPS", run_rbf_dps),
}


def textbook_runner(method, record: bool = False):
    """The textbook ``run(ctx, opts)`` of a built-in method, or a ValueError naming those that have one."""
    entry = TEXTBOOK.get(method.name)
    if entry is None or type(method).__name__ != entry[0] or not type(method).__module__.startswith("toyflow.search."):
        raise ValueError(
            f"method {method.name!r} has no textbook implementation; engine='textbook' runs "
            f"{', '.join(map(repr, TEXTBOOK))} (use engine='fast', the default, for the others)"
        )
    if record:
        raise ValueError("record=True needs engine='fast' (the textbook implementations keep no history)")
    return entry[1]
