"""The image-scale table of both MNIST flows (bench/RESULTS.md §3, "In the paper's regime").

Run:  python bench/summary_fewstep.py bench/results_mnist_b*_unet.csv bench/results_mnist_b*_unet-fewstep.csv \
          [--plot figures/mnist_fewstep_budgets.png]

One Markdown table per flow: rows = methods, columns = task x mode, cells = mean reward ± s.e. over
the cell's runs (tasks with a target digit: "/ evaluator accuracy" after it); "n/a" where the method
does not apply (DPS needs a differentiable reward). Then, per task and mode, which method is best.
``--plot PNG``: mean reward ± s.e. against the budget, one row per task, one panel per (flow, mode),
the methods as curves (toyflow.viz.scaling_curves).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict

METHODS = ("bon", "smc", "svdd", "code", "rbf", "dps", "rbf+dps")
MODES = ("linear-ode", "linear-sde", "vp-sde")
LABELS = {"bon": "BoN", "smc": "SMC", "svdd": "SVDD", "code": "CoDe", "rbf": "RBF", "dps": "DPS", "rbf+dps": "RBF+DPS"}


def cell(r: dict) -> str:
    if not r["status"].startswith("ok"):
        return "n/a"
    out = f"{float(r['reward_mean']):.3f} ± {float(r['reward_se']):.3f}"
    if r.get("accuracy"):
        out += f" / {float(r['accuracy']):.2f}"
    return out


def main(paths):
    rows = [r for p in paths for r in csv.DictReader(open(p))]
    by_model = defaultdict(dict)
    for r in rows:
        by_model[r["model"]][(r["task"], r["method"], r["mode"], r["budget"])] = r
    for model, cells in by_model.items():
        tasks = list(dict.fromkeys(k[0] for k in cells))
        budgets = sorted({k[3] for k in cells}, key=int)
        for budget in budgets:
            runs = {r["runs"] for k, r in cells.items() if k[3] == budget}
            print(f"\n**{model}**, budget {budget}, {'/'.join(sorted(runs))} runs per cell, "
                  "mean reward ± s.e. (/ evaluator accuracy):\n")
            cols = [(t, m) for t in tasks for m in MODES]
            print("| method | " + " | ".join(f"{t} {m}" for t, m in cols) + " |")
            print("|---" * (len(cols) + 1) + "|")
            for meth in METHODS:
                print(f"| {LABELS[meth]} | " + " | ".join(
                    cell(cells[(t, meth, m, budget)]) if (t, meth, m, budget) in cells else "-" for t, m in cols) + " |")
            print()
            for t in tasks:
                best = []
                for m in MODES:
                    ok = [(float(cells[k]["reward_mean"]), LABELS[k[1]]) for k in cells
                          if k[0] == t and k[2] == m and k[3] == budget and cells[k]["status"].startswith("ok")]
                    if ok:
                        v, name = max(ok)
                        best.append(f"{m}: {name} ({v:.3f})")
                print(f"- {t}, best per mode: " + "; ".join(best))


def plot(paths, out) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from toyflow import viz

    rows = [r for p in paths for r in viz.read_results_csv(p) if str(r["status"]).startswith("ok")]
    fig = viz.scaling_curves(rows, facet="mode", title="MNIST, both flows: mean reward ± s.e. vs NFE budget")
    fig.savefig(out, dpi=110, bbox_inches="tight")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="+", help="results CSVs of toyflow bench search (both flows, any budgets)")
    ap.add_argument("--plot", default=None, help="also draw reward vs budget to this PNG")
    args = ap.parse_args()
    if args.plot:
        plot(args.csv, args.plot)
    main(args.csv)
