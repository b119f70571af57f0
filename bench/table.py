"""Turn a `toyflow bench search` CSV into the paper-style markdown tables of bench/RESULTS.md.

    python bench/table.py bench/results_regime_a.csv [--metric reward_mean] [--error reward_se] [--extra realism]

One table per (task, model): rows method x mode, columns budgets, cells "mean ± se" of --metric,
optionally followed by "/ extra" (e.g. realism at the same cell).
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict

METHOD_ORDER = ("bon", "sop", "smc", "code", "svdd", "rbf", "rbf-strict", "dps", "rbf+dps")
MODE_ORDER = ("linear-ode", "linear-sde", "vp-sde")
LABELS = {"bon": "BoN", "sop": "SoP", "smc": "SMC", "code": "CoDe", "svdd": "SVDD", "rbf": "RBF", "dps": "DPS",
          "rbf+dps": "RBF+DPS", "rbf-strict": "RBF (strict)"}


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def tables(rows, metric="reward_mean", error="reward_se", extra=None, digits=3) -> str:
    groups = defaultdict(list)
    for r in rows:
        groups[(r["task"], r["model"])].append(r)
    out = []
    for (task, model), rs in groups.items():
        budgets = sorted({int(r["budget"]) for r in rs})
        cells = {(r["method"], r["mode"], int(r["budget"])): r for r in rs}
        head = f"**{task}**, model `{model}`, {metric}" + (f" ± {error}" if error else "") + (f" / {extra}" if extra else "")
        out.append(head + "\n")
        out.append("| method | mode | " + " | ".join(str(b) for b in budgets) + " |")
        out.append("|---|---|" + "---|" * len(budgets))
        methods = [m for m in METHOD_ORDER if any(k[0] == m for k in cells)]
        for m in methods:
            for mode in MODE_ORDER:
                if not any((m, mode, b) in cells for b in budgets):
                    continue
                vals = []
                for b in budgets:
                    r = cells.get((m, mode, b))
                    if r is None or r["status"] != "ok" or _num(r.get(metric)) is None:
                        vals.append("–")
                        continue
                    s = f"{_num(r[metric]):.{digits}f}"
                    if error and _num(r.get(error)) is not None:
                        s += f" ± {_num(r[error]):.{digits}f}"
                    if extra and _num(r.get(extra)) is not None:
                        s += f" / {_num(r[extra]):.2f}"
                    vals.append(s)
                out.append(f"| {LABELS.get(m, m)} | {mode} | " + " | ".join(vals) + " |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("csv", nargs="+")
    p.add_argument("--metric", default="reward_mean")
    p.add_argument("--error", default="reward_se")
    p.add_argument("--extra", default=None)
    p.add_argument("--digits", type=int, default=3)
    a = p.parse_args()
    rows = []
    for path in a.csv:
        with open(path) as f:
            rows += list(csv.DictReader(f))
    print(tables(rows, a.metric, a.error or None, a.extra, a.digits))
