"""Search overhead: wall time of toyflow.search.run vs the bare model calls it makes.

Run:  python bench/bench_search_overhead.py [--runs 256] [--budget 500] [--steps 10] [--repeats 5]

Setup: R = 256 runs, budget 500 NFE per run, 10 steps, vp-sde mode, an untrained 2D
``VelocityMLP()`` (default size; timing only) and a cheap quadratic reward (``--reward flat``: a
reward that never improves, so RBF spends every quota with all runs in every batch). For every
method:

1. one recording pass through a wrapper logs the batch size of every model call the search makes;
2. then, interleaved ``repeats`` times (so machine noise hits all alike): the search itself
   (plain model, no wrapper), and *bare* calls of the raw MLP on pre-built inputs:
   (a) "own calls": the same calls, same batch sizes, as the search made;
   (b) "one draw / call": the same NFE as this search spent, in the calls the paper's algorithm
       makes, one draw per run and call: for RBF, a first call of R rows (the initial draw), then
       call j holds the runs that drew at least j proposals (each run's own NFE); for the other
       methods (a) = (b).

RBF evaluates chunks of draws per call by default and discards the draws after an accepted one
(not NFE, column "discarded / run"); the row "rbf (1 / call)" is RBF with ``proposals_per_tick=1``.
The table reports best-of-repeats wall times and ratio = search / bare. The vp-sde search uses
precomputed per-step constants of the Linear -> VP conversion, so the bare calls are of the raw MLP.
DPS methods also run a backward pass per evaluation, which the bare forward calls do not.
"""

from __future__ import annotations

import argparse
import time

import torch

from toyflow import search
from toyflow.models import VelocityMLP
from _common import CallLogger


class QuadReward:
    """r(x) = -|x - (1, 1)|^2 (differentiable, cheap). RBF often accepts early: batches shrink."""

    name = "quadratic"
    differentiable = True

    def __call__(self, x0):
        return -((x0 - 1.0) ** 2).sum(-1)


class FlatReward:
    """r(x) = 0 * x_1 (never improves): RBF spends every quota, all runs stay in every batch."""

    name = "flat"
    differentiable = True

    def __call__(self, x0):
        return 0.0 * x0[:, 0]


def bare_calls(model, sizes, max_b):
    x = torch.randn(max_b, 2)
    t = torch.rand(max_b) * 0.9 + 0.05
    inputs = {b: (x[:b].contiguous(), t[:b].contiguous()) for b in set(sizes)}
    with torch.no_grad():
        t0 = time.perf_counter()
        for b in sizes:
            model(*inputs[b])
        return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=256)
    ap.add_argument("--budget", type=int, default=500)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default=",".join(search.METHODS))
    ap.add_argument("--reward", choices=("quadratic", "flat"), default="quadratic")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    mlp = VelocityMLP().eval()
    reward = QuadReward() if args.reward == "quadratic" else FlatReward()
    kw = dict(mode="vp-sde", budget=args.budget, steps=args.steps, runs=args.runs, shape=(2,))

    print(f"R = {args.runs} runs, budget {args.budget}, {args.steps} steps, vp-sde, VelocityMLP() untrained, "
          f"{reward.name} reward, {args.threads} thread(s), best of {args.repeats}")
    header = f"{'method':<15} {'calls':>6} {'NFE/run':>8} {'discarded/run':>14} {'search ms':>10} " \
             f"{'own calls ms':>13} {'ratio':>6} {'1 draw/call ms':>15} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    rows = [(m, {}) for m in args.methods.split(",")]
    if "rbf" in args.methods.split(","):
        rows.insert([m for m, _ in rows].index("rbf") + 1, ("rbf (1 / call)", {"proposals_per_tick": 1}))
    for label, options in rows:
        method = label.split()[0]

        def sizes_of(opts):
            logger = CallLogger(mlp)
            res = search.run(method, logger, reward, generator=torch.Generator().manual_seed(1), **kw, **opts)
            return logger.sizes, res

        sizes, res = sizes_of(options)
        if method.startswith("rbf"):  # the same NFE, one draw per run and call
            search_nfe = res.nfe - res.nfe_per_step[:, 0]
            # the initial draws in one call, then one row per run still drawing
            strict = [int(res.nfe_per_step[:, 0].sum())] + [int((search_nfe >= j).sum()) for j in range(1, int(search_nfe.max()) + 1)]
            assert sum(strict) == int(res.nfe.sum())
        else:
            strict = sizes
        t_search, t_own, t_strict = [], [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            search.run(method, mlp, reward, generator=torch.Generator().manual_seed(1), **kw, **options)
            t_search.append(time.perf_counter() - t0)
            t_own.append(bare_calls(mlp, sizes, max(sizes)))
            t_strict.append(bare_calls(mlp, strict, max(strict)))
        s, b, c = min(t_search), min(t_own), min(t_strict)
        print(f"{label:<15} {len(sizes):>6} {res.nfe.float().mean().item():>8.1f} "
              f"{res.discarded.float().mean().item():>14.1f} {s * 1e3:>10.1f} {b * 1e3:>13.1f} {s / b:>6.2f} "
              f"{c * 1e3:>15.1f} {s / c:>6.2f}")


if __name__ == "__main__":
    main()
