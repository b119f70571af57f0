"""Noise -> sample pairs of a flow checkpoint, for a reflow experiment (bench/RESULTS.md §3). Run:

    python bench/reflow_pairs.py --flow runs/mnist-flow-v7 --steps 100 --shards 10 --out runs/reflow-v7

A thin wrapper of :func:`toyflow.train.make_reflow_pairs`: shards of 1,000 pairs (``noise`` ~ N(0, I),
``samples`` = the flow's linear-ODE solution from it), each written atomically with a JSON naming
the flow, steps and seed; running the same command again skips finished shards and gives the same
pairs. Train on them with ``toyflow train mnist --pairs FOLDER --init-from CHECKPOINT ...``.
"""

from __future__ import annotations

import argparse

import torch

from toyflow.models import load_model
from toyflow.train import make_reflow_pairs

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flow", required=True, help="flow checkpoint (path without suffix)")
    p.add_argument("--steps", type=int, default=100, help="Euler steps of the linear ODE (default 100)")
    p.add_argument("--shards", type=int, default=10, help="shards of 1,000 pairs (default 10)")
    p.add_argument("--seed", type=int, default=100, help="seed of the noises (default 100)")
    p.add_argument("--out", required=True, help="output folder")
    a = p.parse_args()
    torch.set_num_threads(2)
    flow = load_model(a.flow, arch="unet").float().requires_grad_(False)
    make_reflow_pairs(flow, a.out, generator_seed=a.seed, steps=a.steps, shards=a.shards, source=a.flow)
