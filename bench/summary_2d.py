"""Summary numbers of bench/RESULTS.md §2 from bench/results_2d.csv.

Run:  python bench/summary_2d.py [bench/results_2d.csv]

- normalised reward at budgets 500 and 1000: min-max over the 21 method x mode cells of each
  (task, model, budget), averaged over 3 tasks x 2 models x 2 budgets;
- the share of its budget RBF spends, per mode (mean of nfe_mean / budget over all its cells).
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict

METHODS = ("bon", "sop", "smc", "code", "svdd", "rbf", "rbf-official")
MODES = ("linear-ode", "linear-sde", "vp-sde")


def main(path: str = "bench/results_2d.csv") -> None:
    rows = [r for r in csv.DictReader(open(path)) if r["status"] == "ok"]
    groups = defaultdict(list)
    for r in rows:
        if r["budget"] in ("500", "1000"):
            groups[(r["task"], r["model"], r["budget"])].append(r)
    score = defaultdict(list)
    for cells in groups.values():
        v = [float(c["reward_mean"]) for c in cells]
        lo, hi = min(v), max(v)
        for c in cells:
            score[(c["method"], c["mode"])].append((float(c["reward_mean"]) - lo) / (hi - lo) if hi > lo else 1.0)
    print("normalised reward at budgets 500 and 1000 (mean over tasks, models, budgets)")
    print(f"{'method':<14}" + "".join(f"{m:>12}" for m in MODES))
    for method in METHODS:
        vals = [sum(score[(method, m)]) / len(score[(method, m)]) if score[(method, m)] else float("nan") for m in MODES]
        print(f"{method:<14}" + "".join(f"{v:>12.3f}" for v in vals))
    print("\nshare of the budget spent (mean nfe_mean / budget over all cells)")
    for method in ("rbf", "rbf-official"):
        shares = []
        for m in MODES:
            s = [float(r["nfe_mean"]) / float(r["budget"]) for r in rows if r["method"] == method and r["mode"] == m]
            shares.append(f"{m} {100 * sum(s) / len(s):.0f} % (min {100 * min(s):.0f} %)")
        print(f"{method:<14}" + "; ".join(shares))


if __name__ == "__main__":
    main(*sys.argv[1:])
