"""Before/after identity of ``search.run``: every method x mode x budget, recorded and not, fixed generators.

Run (the old code from git, the new from the working tree):

    git archive HEAD toyflow | tar -x -C /tmp/before
    PYTHONPATH=/tmp/before python bench/bench_search_identity.py save /tmp/before.pt
    python bench/bench_search_identity.py save /tmp/after.pt
    python bench/bench_search_identity.py compare /tmp/before.pt /tmp/after.pt

The task is the exact oracle ``rewards.task("rare-mode")`` (its Gaussian-mixture flow and reward),
10 steps, 32 runs, budgets 50, 100, 500, 2000, each cell seeded from its budget; besides every
registered method with its defaults, RBF and RBF-strict with ``proposals_per_tick`` 1 and 4.
``compare`` prints how many cells are bit-identical (samples, rewards, NFE, NFE per step,
discarded draws, and with ``record=True`` the whole history, NaN = NaN), which differ, grouped, and whether ``record=True`` changed any result.
"""

from __future__ import annotations

import sys
from collections import Counter

import torch

BUDGETS = (50, 100, 500, 2000)
HISTORY_FIELDS = ("states", "x0", "rewards", "parents", "selected", "nfe", "quota", "ess", "proposals_x0",
                  "proposal_rewards", "proposal_mask", "accepted")


def _equal(a, b) -> bool:
    """Equal values, NaN equal to NaN (unrecorded entries), lists element by element, None only to None."""
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if a is None or b is None:
        return a is b
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[f], b[f]) for f in a)
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.nan_to_num(123.25) if a.is_floating_point() else a,
                                                                     b.nan_to_num(123.25) if b.is_floating_point() else b)


def save(path: str) -> None:
    import toyflow
    from toyflow import rewards, search

    torch.set_num_threads(1)
    gmm, reward = rewards.task("rare-mode")
    variants = [(m, {}) for m in search.METHODS] + [
        (m, {"proposals_per_tick": p}) for m in ("rbf", "rbf-strict") for p in (1, 4)]
    out = {}
    for method, opts in variants:
        for mode in search.MODES:
            for budget in BUDGETS:
                for record in (False, True):
                    key = (f"{method}{opts or ''}", mode, budget, record)
                    try:
                        res = search.run(method, gmm, reward, mode=mode, budget=budget, steps=10, runs=32, shape=(2,),
                                         generator=torch.Generator().manual_seed(budget + 7), record=record, **opts)
                    except ValueError as e:  # a budget below the method's minimum: the message must match too
                        out[key] = str(e)
                        continue
                    out[key] = dict(samples=res.samples, rewards=res.rewards, nfe=res.nfe, per_step=res.nfe_per_step,
                                    discarded=res.discarded)
                    if record:  # the history too, field by field (NaN marks what was not recorded)
                        h = res.history
                        out[key]["history"] = {f: getattr(h, f) for f in HISTORY_FIELDS}
    torch.save(out, path)
    print(f"{len(out)} cells from {toyflow.__file__} -> {path}")


def _same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return a.keys() == b.keys() and all(_equal(a[f], b[f]) for f in a)


def _without_history(cell):
    return cell if isinstance(cell, str) else {f: v for f, v in cell.items() if f != "history"}


def compare(path_a: str, path_b: str) -> None:
    a, b = torch.load(path_a, weights_only=False), torch.load(path_b, weights_only=False)
    assert a.keys() == b.keys(), "the two files hold different cells"
    diff = [k for k in a if not _same(a[k], b[k])]
    print(f"bit-identical: {len(a) - len(diff)} of {len(a)} cells")
    if diff:
        print("differ, by method and mode:", dict(Counter((k[0], k[1]) for k in diff)))
        print("differ, by method and budget:", dict(Counter((k[0], k[2]) for k in diff)))
    for name, d in (("first", a), ("second", b)):
        rec = [k[:3] for k in d if not k[3] and not _same(d[k], _without_history(d[k[:3] + (True,)]))]
        print(f"record=True changes a result in the {name} file: {rec or 'never'}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "save":
        save(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
