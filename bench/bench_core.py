"""Flow-core benchmarks. Run:  python bench/bench_core.py  (figures go to bench/RESULTS.md by hand).

1. 2D time-to-quality: the default `toyflow train 2d --dataset 8gaussians` configuration, 3 seeds:
   training wall time and energy distance of 10,000 samples (100-step Euler ODE) to 10,000 held-out points.
2. Sampler overhead: dynamics.sample for 100,000 particles x 10 steps vs the bare model calls it
   makes (same inputs, same number of calls), measured side by side, best of 5 repeats.
"""

from __future__ import annotations

import statistics
import time

import torch

from toyflow import dynamics
from toyflow.cli import build_parser
from toyflow.data import toy2d
from toyflow.metrics import energy_distance
from toyflow.models import VelocityMLP
from toyflow.train import TrainConfig, train_flow


def time_to_quality(seeds=(0, 1, 2)) -> None:
    args = build_parser().parse_args(["train", "2d", "--dataset", "8gaussians"])  # the CLI defaults
    rows = []
    for seed in seeds:
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, ema_decay=args.ema_decay,
                          seed=seed, device="cpu", progress=False)
        model = VelocityMLP(dim=2, hidden=args.hidden, depth=args.depth)
        cpu0 = time.process_time()
        res = train_flow(model, lambda n, g: toy2d.sample("8gaussians", n, generator=g), args.schedule, cfg)
        cpu = time.process_time() - cpu0  # CPU seconds: robust to other jobs on a shared machine
        g = torch.Generator().manual_seed(1000 + seed)
        x = dynamics.sample(res.model, torch.randn(10_000, 2, generator=g), "linear", steps=100).x
        held_out = toy2d.sample("8gaussians", 10_000, generator=g)
        ed = float(energy_distance(x, held_out))
        floor = float(energy_distance(toy2d.sample("8gaussians", 10_000, generator=g), held_out))
        rows.append((seed, res.wall_time, ed, floor, cpu))
        print(f"seed {seed}: train {res.wall_time:.2f} s wall ({cpu:.2f} CPU s), energy distance {ed:.4f} "
              f"(data-vs-data {floor:.4f})")
    n_params = sum(p.numel() for p in VelocityMLP(dim=2, hidden=args.hidden, depth=args.depth).parameters())
    print(f"MLP {n_params} parameters, {args.steps} steps x batch {args.batch_size}; "
          f"median train time {statistics.median(r[1] for r in rows):.2f} s wall, "
          f"{statistics.median(r[4] for r in rows):.2f} CPU s, median ED {statistics.median(r[2] for r in rows):.4f}")


def sampler_overhead(n=100_000, steps=10, repeats=5) -> None:
    torch.manual_seed(0)
    model = VelocityMLP().eval()
    x1 = torch.randn(n, 2)
    times = dynamics.time_grid("uniform", steps)

    @torch.no_grad()
    def bare():
        x = x1
        for k in range(steps):
            x = model(x1, times[k].expand(n))  # same shapes, no sampler bookkeeping
        return x

    def full(sde):
        return dynamics.sample(model, x1, "linear", steps=steps, sde=sde, generator=torch.Generator().manual_seed(0))

    results = {"bare": [], "ode": [], "sde": []}
    for _ in range(repeats):  # interleaved so machine noise hits all three alike
        for name, fn in (("bare", bare), ("ode", lambda: full(False)), ("sde", lambda: full(True))):
            t0 = time.perf_counter()
            fn()
            results[name].append(time.perf_counter() - t0)
    b = min(results["bare"])
    print(f"{n} particles x {steps} steps: bare model calls {b * 1e3:.1f} ms; "
          f"sample(ODE) {min(results['ode']) * 1e3:.1f} ms = {min(results['ode']) / b:.3f}x; "
          f"sample(SDE) {min(results['sde']) * 1e3:.1f} ms = {min(results['sde']) / b:.3f}x")


if __name__ == "__main__":
    torch.set_num_threads(2)
    time_to_quality()
    sampler_overhead()
