"""Host syncs per step: how often a search reads a tensor's value back to Python.

Run:  python bench/bench_host_syncs.py [--runs 256] [--budget 500] [--steps 10] [--mode vp-sde]

On a GPU every such read waits for the device to finish its queue, so a search that reads values
back in every tick cannot keep a GPU busy; on the CPU each costs a few microseconds of Python. The
counter wraps the torch.Tensor methods that return Python values or host arrays (``item``,
``__bool__``, ``__float__``, ``__int__``, ``__index__``, ``tolist``, ``numpy``) and counts their
calls during one ``search.run`` of every registered method (the shipped 2D MLP, the rare-mode task),
split into the run's set-up (everything before the first model call) and its search (from the first
model call on, per grid step). Values are deterministic: no timing involved.
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch
from _common import count_host_reads

from toyflow import pretrained, search, tasks


class PhaseModel(torch.nn.Module):
    """The model, switching the counter's phase to "search" at its first call."""

    def __init__(self, model, phase):
        super().__init__()
        self.model, self.phase = model, phase

    def forward(self, x, t):
        self.phase[0] = "search"
        return self.model(x, t)


def measure(method: str, model, reward, **kw) -> dict:
    phase = ["setup"]
    wrapped = PhaseModel(model, phase)
    with count_host_reads(phase) as counter:
        search.run(method, wrapped, reward, generator=torch.Generator().manual_seed(0), **kw)
    setup = sum(v for (p, _), v in counter.items() if p == "setup")
    per_name = Counter({name: v for (p, name), v in counter.items() if p == "search"})
    return {"setup": setup, "search": sum(per_name.values()), "by_name": per_name}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=256)
    ap.add_argument("--budget", type=int, default=500)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--mode", default="vp-sde")
    ap.add_argument("--methods", default=",".join(search.METHODS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    task = tasks.get("rare-mode")
    _, reward = task.make()
    model = pretrained.load("2d-rare-mode").eval()
    kw = dict(mode=args.mode, budget=args.budget, steps=args.steps, runs=args.runs, shape=(2,))
    print(f"host reads (tensor -> Python) during search.run: R = {args.runs}, budget {args.budget}, {args.steps} steps, "
          f"{args.mode}, shipped 2d-rare-mode MLP")
    head = f"{'method':<10} {'set-up':>7} {'search':>7} {'per step':>9}  by kind (search)"
    print(head)
    print("-" * len(head))
    for m in args.methods.split(","):
        opts = task.options(m)
        if search.get_method(m).needs_gradients:
            print(f"{m:<10} (needs a differentiable reward; rare-mode's is: run anyway)")
        out = measure(m, model, reward, **kw, **opts)
        kinds = ", ".join(f"{k} {v}" for k, v in out["by_name"].most_common())
        print(f"{m:<10} {out['setup']:>7} {out['search']:>7} {out['search'] / args.steps:>9.1f}  {kinds}")


if __name__ == "__main__":
    main()
