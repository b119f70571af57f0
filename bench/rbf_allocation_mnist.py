"""Where RBF's budget goes on MNIST: the mean NFE per grid step of RBF and SVDD (``res.nfe_per_step``).

Run:  python bench/rbf_allocation_mnist.py [--flow mnist-flow-fewstep] [--budget 500] [--runs 8] [--seed 5]

One search per method and mode on task mnist-thick (digit 7), 10 steps, the given budget; column 0 is
RBF's initial draws at t = 1 (SVDD's one initial particle), column j the draws evaluated at t_j. With the
official default (spend the rest at the last search step) RBF's extra budget lands in the last column.
Output of the recorded run: bench/rbf_allocation_mnist.txt.
"""

from __future__ import annotations

import argparse

import torch

from toyflow import pretrained, search, tasks


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flow", default="mnist-flow-fewstep", choices=("mnist-flow-fewstep", "mnist-flow"))
    ap.add_argument("--budget", type=int, default=500)
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    flow = pretrained.load(args.flow)
    reward = tasks.get("mnist-thick").build_reward(7, pretrained.load("mnist-reward"))
    print(f"{args.flow}, mnist-thick (7), budget {args.budget}, {args.runs} runs, seed {args.seed}: mean NFE per grid step")
    for mode in ("linear-sde", "vp-sde"):
        for method in ("rbf", "svdd"):
            res = search.run(method, flow, reward, mode=mode, budget=args.budget, steps=10, runs=args.runs,
                             shape=(1, 28, 28), generator=torch.Generator().manual_seed(args.seed))
            per_step = res.nfe_per_step.double().mean(0)
            print(f"{mode:<11} {method:<5} {' '.join(f'{v:6.1f}' for v in per_step.tolist())}  last step "
                  f"{per_step[-1].item() / args.budget:.0%} of the budget, mean reward {res.rewards.double().mean().item():.3f}")


if __name__ == "__main__":
    main()
