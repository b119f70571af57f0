"""The path x schedule table of bench/RESULTS.md §2a (grid d) from the cross CSVs.

Run:  python bench/cross_regimes.py bench/results_regime_d_x1.csv [more ...]

Each CSV holds `toyflow bench search ... --modes linear-sde vp-sde --time-grid vp-snr` run twice,
with `--diffusion-path linear` and `--diffusion-path vp`; its four crossings per cell are
path (Linear / VP) x schedule (g = 3t^2 in Linear time / g = 3r^2 in VP time), all at the noise
levels of the VP uniform grid. Printed: mean reward ± s.e. per (task, model, method, budget).
"""

from __future__ import annotations

import csv
import sys

CROSS = (("linear-sde", "linear", "Linear path, Linear g"), ("linear-sde", "vp", "Linear path, VP g"),
         ("vp-sde", "vp", "VP path, VP g"), ("vp-sde", "linear", "VP path, Linear g"))
LABELS = {"bon": "BoN", "svdd": "SVDD", "rbf": "RBF"}


def main(paths) -> None:
    for path in paths:
        rows = [r for r in csv.DictReader(open(path)) if r["status"] == "ok"]
        cells = {(r["task"], r["model"], r["method"], int(r["budget"]), r["mode"], r["diffusion_path"]): r for r in rows}
        print(f"{path}\n")
        print("| task | model | method | budget | " + " | ".join(c[2] for c in CROSS) + " |")
        print("|---|---|---|---|" + "---|" * len(CROSS))
        for task, model, method, budget in dict.fromkeys(k[:4] for k in cells):
            vals = []
            for mode, dp, _ in CROSS:
                r = cells.get((task, model, method, budget, mode, dp))
                vals.append(f"{float(r['reward_mean']):.3f} ± {float(r['reward_se']):.3f}" if r else "–")
            print(f"| {task} | {model} | {LABELS.get(method, method)} | {budget} | " + " | ".join(vals) + " |")
        print()


if __name__ == "__main__":
    main(sys.argv[1:] or ["bench/results_regime_d_x1.csv"])
