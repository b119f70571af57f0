"""RBF on an image model: what the adaptive chunk width costs and saves.

Run:  python bench/bench_rbf_chunks.py [--runs 16] [--budget 500] [--repeats 3] [--threads 2]

RBF evaluates a chunk of each run's next draws per model call and discards the draws after an
accepted one (``SearchResult.discarded``, not NFE). On the 2D MLP the fixed cost of a call
dominates, so wide chunks pay; on the MNIST UNet every row costs real time, so discarded rows
are wasted. This compares, on the shipped ``mnist-flow`` (task mnist-digit-7, linear-SDE,
10 steps), RBF with

- ``proposals_per_tick=1`` (one draw per run and call: the paper's algorithm literally),
- the adaptive width with ``discard_share`` = 0.1 and 0.5 (the default),

interleaved ``repeats`` times on the same seeds so machine noise hits all alike. Reported per
setting: model calls, rows evaluated, the share of them discarded, NFE, mean reward and the best
wall time per search of ``runs`` runs.
"""

from __future__ import annotations

import argparse
import time

import torch

from toyflow import pretrained, rewards, search
from _common import CallLogger


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--budget", type=int, default=500)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    flow = pretrained.load("mnist-flow")
    reward = rewards.mnist_digit(7, pretrained.load("mnist-reward"))
    settings = {
        "proposals_per_tick=1": dict(proposals_per_tick=1),
        "discard_share=0.1": dict(discard_share=0.1),
        "discard_share=0.5 (default)": dict(),
    }
    kw = dict(mode="linear-sde", budget=args.budget, steps=args.steps, runs=args.runs, shape=(1, 28, 28))
    best = {name: float("inf") for name in settings}
    stats = {}
    for rep in range(args.repeats):
        for name, opts in settings.items():
            model = CallLogger(flow)
            t0 = time.perf_counter()
            with torch.no_grad():
                res = search.run("rbf", model, reward, generator=torch.Generator().manual_seed(rep), **kw, **opts)
            best[name] = min(best[name], time.perf_counter() - t0)
            s = stats.setdefault(name, {"calls": 0, "rows": 0, "discarded": 0, "nfe": 0, "reward": 0.0})
            s["calls"] += len(model.sizes)
            s["rows"] += sum(model.sizes)
            s["discarded"] += int(res.discarded.sum())
            s["nfe"] += int(res.nfe.sum())
            s["reward"] += float(res.rewards.mean())
    n = args.repeats
    print(f"RBF, mnist-digit-7, linear-SDE, budget {args.budget}, {args.runs} runs, {args.steps} steps, "
          f"{args.threads} threads; means over {n} seeds, best wall time of {n}")
    print(f"| setting | model calls | rows evaluated | discarded | NFE / run | mean reward | wall time / search |")
    print("|---|---|---|---|---|---|---|")
    for name, s in stats.items():
        print(f"| {name} | {s['calls'] / n:.0f} | {s['rows'] / n:.0f} | {100 * s['discarded'] / s['rows']:.1f} % | "
              f"{s['nfe'] / n / args.runs:.0f} | {s['reward'] / n:.3f} | {best[name]:.2f} s |")


if __name__ == "__main__":
    main()
