"""Sampling time per MNIST image on the CPU, both shipped flows side by side: 64 images, 1 / 4 / 20
Euler steps of the linear ODE (``dynamics.sample``), interleaved rounds, best of 5, two threads.

Run:  python bench/bench_mnist_sampling.py     (output of the recorded run: bench/mnist_sampling_time.txt)
"""

from __future__ import annotations

import time

import torch

from toyflow import dynamics, pretrained


@torch.no_grad()
def main(rounds: int = 5, steps=(1, 4, 20)) -> dict:
    torch.set_num_threads(2)
    flows = {name: pretrained.load(name) for name in ("mnist-flow", "mnist-flow-fewstep")}
    z = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    best: dict = {}
    for _ in range(rounds):  # interleaved, so a drift of the machine's speed favours neither flow
        for name, flow in flows.items():
            for k in steps:
                t0 = time.perf_counter()
                dynamics.sample(flow, z, "linear", steps=k)
                best[(name, k)] = min(best.get((name, k), float("inf")), time.perf_counter() - t0)
    for (name, k), dt in best.items():
        print(f"{name:20s} {k:2d} steps: {dt:.3f} s per 64 images, {dt / 64 * 1e3:.1f} ms per image")
    return best


if __name__ == "__main__":
    main()
