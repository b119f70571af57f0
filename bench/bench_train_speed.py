"""Seconds per training step of the shipped MNIST UNet (batch 128), fp32 vs ``--amp-cpu``, side by side.

Run:  python bench/bench_train_speed.py [--steps 10] [--rounds 3]

Times the real training loop (``toyflow.train.train_flow``: autocast, loss, backward, clipping,
AdamW, EMA) on random digits-shaped data, with ``amp_cpu`` off and on, alternating within each
round (this machine is shared and noisy); reports the best per-step time of each and their ratio.
"""

from __future__ import annotations

import argparse

import torch

from toyflow.models.unet import UNet
from toyflow.train import TrainConfig, train_flow


def per_step(amp_cpu: bool, steps: int, batch: int) -> float:
    def data(n, g):
        return torch.randn(n, 1, 28, 28, generator=g)

    cfg = TrainConfig(steps=steps, batch_size=batch, device="cpu", amp_cpu=amp_cpu, progress=False, warmup=1)
    return train_flow(UNet(), data, "linear", cfg).wall_time / steps


def main(steps: int = 10, rounds: int = 3, batch: int = 128) -> None:
    per_step(False, 2, batch)  # warm-up (allocator, oneDNN kernels)
    per_step(True, 2, batch)
    best = {False: float("inf"), True: float("inf")}
    for _ in range(rounds):
        for amp_cpu in (False, True):
            best[amp_cpu] = min(best[amp_cpu], per_step(amp_cpu, steps, batch))
    print(f"UNet {sum(p.numel() for p in UNet().parameters()):,} parameters, batch {batch}, cpu, "
          f"threads {torch.get_num_threads()}")
    print(f"fp32: {best[False]:.3f} s/step; --amp-cpu (bf16 autocast): {best[True]:.3f} s/step; "
          f"speed-up {best[False] / best[True]:.2f}x")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    main(a.steps, a.rounds)
