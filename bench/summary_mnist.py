"""The budget-500 summary table of bench/RESULTS.md §3 from the MNIST search CSVs.

Run:  python bench/summary_mnist.py [--budget 500]

Rows: methods; columns: digit-7 and thick-7 (mean reward / evaluator accuracy) and ink (mean
reward), each in linear-ODE, linear-SDE and VP-SDE mode.
"""

from __future__ import annotations

import argparse
import csv

METHODS = ("bon", "sop", "smc", "code", "svdd", "rbf", "rbf-strict")
LABELS = {"bon": "BoN", "sop": "SoP", "smc": "SMC", "code": "CoDe", "svdd": "SVDD", "rbf": "RBF", "rbf-strict": "RBF-strict"}
MODES = ("linear-ode", "linear-sde", "vp-sde")


def main(budget: int = 500) -> None:
    cells = {}
    for task in ("digit", "thick", "ink"):
        for r in csv.DictReader(open(f"bench/results_mnist-{task}.csv")):
            if int(r["budget"]) == budget and r["status"] == "ok":
                cells[(task, r["method"], r["mode"])] = r

    def fmt(task, method, mode):
        r = cells.get((task, method, mode))
        if r is None:
            return "–"
        rew = f"{float(r['reward_mean']):.3f}".replace("-", "−")
        return rew if task == "ink" else f"{rew} / {float(r['accuracy']):.2f}"

    head = ["method"] + [f"{t} {m}" for t in ("digit-7", "thick-7", "ink") for m in ("linear-ODE", "linear-SDE", "VP-SDE")]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for method in METHODS:
        row = [LABELS[method]] + [fmt(t, method, m) for t in ("digit", "thick", "ink") for m in MODES]
        print("| " + " | ".join(row) + " |")
    per_run = [float(r["wall_per_run_s"]) for r in cells.values()]
    print(f"\nwall time per run at budget {budget}: {min(per_run):.2f}–{max(per_run):.2f} s")
    # RBF evaluates chunks of draws; the ones after the accepted draw are made but not charged
    rbf = [r for r in cells.values() if r["method"] == "rbf" and r.get("discarded_mean")]
    if rbf:
        shares = {f"{r['task']} {r['mode']}": float(r["discarded_mean"]) / (float(r["nfe_mean"]) + float(r["discarded_mean"]))
                  for r in rbf}
        print(f"RBF discarded evaluations at budget {budget} (share of all its model evaluations): "
              + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--budget", type=int, default=500)
    main(p.parse_args().budget)
