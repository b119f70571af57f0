"""Summary numbers of bench/RESULTS.md §2a from the two-regimes CSVs.

Run:  python bench/summary_regimes.py bench/results_regime_a.csv [more CSVs ...] [--budgets 100 500]

For each CSV (one grid):
- the paper's table layout: method x mode, mean reward ± s.e. over 64 runs, one table per
  (task, model) at each of --budgets;
- the normalised summary of §2: reward min-max normalised within each (task, model, budget)
  across all method x mode cells, averaged over tasks, models and --budgets;
- the claims: per (task, model, budget), is linear-ODE < linear-SDE < VP-SDE for SVDD, CoDe and RBF
  (each comparison by more than the two standard errors combined), and RBF's rank among the
  methods in VP-SDE;
- the share of its budget each RBF variant spends (nfe_mean / budget), min / mean per mode.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict

METHODS = ("bon", "sop", "smc", "code", "svdd", "rbf", "rbf-strict")
LABELS = {"bon": "BoN", "sop": "SoP", "smc": "SMC", "code": "CoDe", "svdd": "SVDD", "rbf": "RBF",
          "rbf-strict": "RBF-strict"}
MODES = ("linear-ode", "linear-sde", "vp-sde")


def _rows(path):
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r["status"] == "ok"]


def paper_tables(rows, budgets) -> list[str]:
    out = []
    cells = {(r["task"], r["model"], r["method"], r["mode"], int(r["budget"])): r for r in rows}
    for task, model in dict.fromkeys((r["task"], r["model"]) for r in rows):
        for b in budgets:
            out.append(f"**{task}**, `{model}`, budget {b}: mean reward ± s.e. (64 runs)\n")
            out.append("| method | " + " | ".join(MODES) + " |")
            out.append("|---|" + "---|" * len(MODES))
            for m in METHODS:
                vals = []
                for mode in MODES:
                    r = cells.get((task, model, m, mode, b))
                    vals.append(f"{float(r['reward_mean']):.3f} ± {float(r['reward_se']):.3f}" if r else "–")
                if any(v != "–" for v in vals):
                    out.append(f"| {LABELS[m]} | " + " | ".join(vals) + " |")
            out.append("")
    return out


def normalised(rows, budgets) -> list[str]:
    groups = defaultdict(list)
    for r in rows:
        if int(r["budget"]) in budgets:
            groups[(r["task"], r["model"], r["budget"])].append(r)
    score = defaultdict(list)
    for cells in groups.values():
        v = [float(c["reward_mean"]) for c in cells]
        lo, hi = min(v), max(v)
        for c in cells:
            score[(c["method"], c["mode"])].append((float(c["reward_mean"]) - lo) / (hi - lo) if hi > lo else 1.0)
    out = [f"normalised reward at budgets {', '.join(map(str, budgets))} (mean over tasks, models, budgets)\n",
           "| method | " + " | ".join(MODES) + " |", "|---|" + "---|" * len(MODES)]
    for m in METHODS:
        if any(score[(m, mode)] for mode in MODES):
            vals = [sum(score[(m, mode)]) / len(score[(m, mode)]) if score[(m, mode)] else float("nan") for mode in MODES]
            out.append(f"| {LABELS[m]} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    return out + [""]


def claims(rows, budgets) -> list[str]:
    cells = {(r["task"], r["model"], r["method"], r["mode"], int(r["budget"])): r for r in rows}

    def beats(a, b):  # a > b by more than the combined standard error (2 sigma of the difference)
        return float(a["reward_mean"]) - float(b["reward_mean"]) > 2 * math.hypot(float(a["reward_se"]), float(b["reward_se"]))

    out = ["claims per (task, model, budget): C1 linear-SDE > linear-ODE, C2 VP-SDE > linear-SDE "
           "(each by > 2 s.e. of the difference; '<' where the reverse holds, '=' otherwise); "
           "C3 RBF's rank (1 = best) among the methods in VP-SDE, and the best method there\n",
           "| task | model | budget | SVDD C1 C2 | CoDe C1 C2 | RBF C1 C2 | RBF rank in VP-SDE | best in VP-SDE |",
           "|---|---|---|---|---|---|---|---|"]
    for task, model in dict.fromkeys((r["task"], r["model"]) for r in rows):
        for b in budgets:
            parts = []
            for m in ("svdd", "code", "rbf"):
                o, l, v = (cells.get((task, model, m, mode, b)) for mode in MODES)
                if not (o and l and v):
                    parts.append("–")
                    continue
                c1 = ">" if beats(l, o) else "<" if beats(o, l) else "="
                c2 = ">" if beats(v, l) else "<" if beats(l, v) else "="
                parts.append(f"{c1} {c2}")
            vp = sorted(((float(r["reward_mean"]), r["method"]) for k, r in cells.items()
                         if k[0] == task and k[1] == model and k[3] == "vp-sde" and k[4] == b and k[2] in METHODS),
                        reverse=True)
            rank = next((i + 1 for i, (_, m) in enumerate(vp) if m == "rbf"), None)
            best = LABELS[vp[0][1]] if vp else "–"
            out.append(f"| {task} | {model} | {b} | " + " | ".join(parts) + f" | {rank} of {len(vp)} | {best} |")
    return out + [""]


def claim_counts(rows) -> list[str]:
    """C1 / C2 over every (task, model, budget) cell: how often '>', '=' and '<' (see :func:`claims`)."""
    cells = {(r["task"], r["model"], r["method"], r["mode"], int(r["budget"])): r for r in rows}

    def verdict(a, b):
        d = float(a["reward_mean"]) - float(b["reward_mean"])
        s = 2 * math.hypot(float(a["reward_se"]), float(b["reward_se"]))
        return ">" if d > s else "<" if d < -s else "="

    keys = sorted({(k[0], k[1], k[4]) for k in cells})
    out = [f"claims over all {len(keys)} (task, model, budget) cells: counts of > / = / <\n",
           "| method | C1 linear-SDE vs linear-ODE | C2 VP-SDE vs linear-SDE | RBF best in VP-SDE |", "|---|---|---|---|"]
    for m in ("bon", "smc", "code", "svdd", "rbf", "rbf-strict"):
        c1, c2 = defaultdict(int), defaultdict(int)
        for task, model, b in keys:
            o, l, v = (cells.get((task, model, m, mode, b)) for mode in MODES)
            if o and l:
                c1[verdict(l, o)] += 1
            if l and v:
                c2[verdict(v, l)] += 1
        extra = ""
        if m == "rbf":
            best = 0
            for task, model, b in keys:
                vp = [(float(r["reward_mean"]), k[2]) for k, r in cells.items()
                      if (k[0], k[1], k[3], k[4]) == (task, model, "vp-sde", b) and k[2] in METHODS]
                best += bool(vp) and max(vp)[1] == "rbf"
            extra = f"{best} of {len(keys)}"
        out.append(f"| {LABELS[m]} | {c1['>']} / {c1['=']} / {c1['<']} | {c2['>']} / {c2['=']} / {c2['<']} | {extra} |")
    return out + [""]


def budget_share(rows) -> list[str]:
    out = ["share of the budget spent (nfe_mean / budget): mean (min) over the cells of each mode\n",
           "| method | " + " | ".join(MODES) + " |", "|---|" + "---|" * len(MODES)]
    for m in ("rbf", "rbf-strict"):
        vals = []
        for mode in MODES:
            s = [float(r["nfe_mean"]) / float(r["budget"]) for r in rows if r["method"] == m and r["mode"] == mode]
            vals.append(f"{100 * sum(s) / len(s):.0f} % ({100 * min(s):.0f} %)" if s else "–")
        out.append(f"| {LABELS[m]} | " + " | ".join(vals) + " |")
    return out + [""]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv", nargs="+")
    p.add_argument("--budgets", nargs="+", type=int, default=[100, 500])
    p.add_argument("--normalise-at", nargs="+", type=int, default=[500, 1000])
    p.add_argument("--no-tables", action="store_true", help="skip the per-task tables")
    a = p.parse_args()
    for path in a.csv:
        rows = _rows(path)
        wall = sum(float(r["wall_time_s"]) for r in rows if r["wall_time_s"])
        print(f"## {path}: {len(rows)} cells, {wall:.0f} s of cell wall time\n")
        print("\n".join(normalised(rows, a.normalise_at)))
        print("\n".join(claim_counts(rows)))
        print("\n".join(claims(rows, a.budgets)))
        print("\n".join(budget_share(rows)))
        if not a.no_tables:
            print("\n".join(paper_tables(rows, a.budgets)))


if __name__ == "__main__":
    main()
