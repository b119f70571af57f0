"""Noise -> sample pairs of a flow checkpoint, for a reflow experiment (bench/RESULTS.md §3). Run:

    python bench/reflow_pairs.py --flow runs/mnist-flow-v7 --steps 100 --shards 10 --out runs/reflow-v7

Each shard holds 1,000 pairs (``noise`` (1000, 1, 28, 28) ~ N(0, I) and ``samples``, the flow's
linear-ODE solution from that noise with ``--steps`` Euler steps), written atomically as
``pairs-NN.safetensors``, so an interrupted run keeps its finished shards, and running the same
command again skips them and makes the rest. Noises come from one ``torch.Generator`` seeded with
``--seed``, 250 per batch (a skipped shard's noises are still drawn), so the same command gives the
same pairs.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from toyflow import dynamics
from toyflow.models import load_model


def main(flow_path: str, steps: int, shards: int, out: str, seed: int = 100) -> None:
    flow = load_model(flow_path, arch="unet").float().requires_grad_(False)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for shard in range(shards):
        t0 = time.perf_counter()
        if (folder / f"pairs-{shard:02d}.safetensors").exists():  # made by an earlier, interrupted run
            for _ in range(4):
                torch.randn(250, 1, 28, 28, generator=g)  # keep the noise stream in step
            print(shard, "exists, skipped", flush=True)
            continue
        zs, xs = [], []
        for _ in range(4):
            z = torch.randn(250, 1, 28, 28, generator=g)
            with torch.no_grad():
                xs.append(dynamics.sample(flow, z, "linear", steps=steps).x)
            zs.append(z)
        tmp = folder / f"pairs-{shard:02d}.tmp"
        save_file({"noise": torch.cat(zs).contiguous(), "samples": torch.cat(xs).contiguous()}, str(tmp))
        os.replace(tmp, folder / f"pairs-{shard:02d}.safetensors")
        print(shard, f"{time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flow", required=True, help="flow checkpoint (path without suffix)")
    p.add_argument("--steps", type=int, default=100, help="Euler steps of the linear ODE (default 100)")
    p.add_argument("--shards", type=int, default=10, help="shards of 1,000 pairs (default 10)")
    p.add_argument("--seed", type=int, default=100, help="seed of the noises (default 100)")
    p.add_argument("--out", required=True, help="output folder")
    a = p.parse_args()
    torch.set_num_threads(2)
    main(a.flow, a.steps, a.shards, a.out, a.seed)
