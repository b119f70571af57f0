"""Seconds per training step of the shipped MNIST UNet (batch 128), fp32 vs ``--amp-cpu``, side by side.

Run:  python bench/bench_train_speed.py [--steps 10] [--rounds 3] [--layout shipped|v5|v4]

``--layout shipped`` (default) builds the UNet from the shipped ``mnist-flow`` config (its extra
blocks and attention included); ``v5`` is the 2.41 M-parameter layout shipped before the distilled flow
(``extra_blocks=(0, 1)``, attention); ``v4`` is ``UNet()``, the 2.05 M-parameter layout of the v2-v4 flows.

Times the real training loop (``toyflow.train.train_flow``: autocast, loss, backward, clipping,
AdamW, EMA) on random digits-shaped data, with ``amp_cpu`` off and on, alternating within each
round (this machine is shared and noisy); reports the best per-step time of each and their ratio.
"""

from __future__ import annotations

import argparse

import torch

from toyflow import pretrained
from toyflow.models.unet import UNet
from toyflow.train import TrainConfig, train_flow


def make_unet(layout: str) -> UNet:
    if layout == "v4":
        return UNet()
    if layout == "v5":  # the flow shipped before the distilled one
        return UNet(extra_blocks=(0, 1), mid_attention=True)
    if layout == "shipped":
        return UNet(**pretrained.info("mnist-flow")["arch_config"])
    raise ValueError(f"unknown layout {layout!r}; choose shipped, v5 or v4")


def per_step(amp_cpu: bool, steps: int, batch: int, layout: str = "shipped") -> float:
    def data(n, g):
        return torch.randn(n, 1, 28, 28, generator=g)

    cfg = TrainConfig(steps=steps, batch_size=batch, device="cpu", amp_cpu=amp_cpu, progress=False, warmup=1)
    return train_flow(make_unet(layout), data, "linear", cfg).wall_time / steps


def main(steps: int = 10, rounds: int = 3, batch: int = 128, layout: str = "shipped") -> None:
    per_step(False, 2, batch, layout)  # warm-up (allocator, oneDNN kernels)
    per_step(True, 2, batch, layout)
    best = {False: float("inf"), True: float("inf")}
    for _ in range(rounds):
        for amp_cpu in (False, True):
            best[amp_cpu] = min(best[amp_cpu], per_step(amp_cpu, steps, batch, layout))
    print(f"UNet ({layout} layout) {sum(p.numel() for p in make_unet(layout).parameters()):,} parameters, "
          f"batch {batch}, cpu, "
          f"threads {torch.get_num_threads()}")
    print(f"fp32: {best[False]:.3f} s/step; --amp-cpu (bf16 autocast): {best[True]:.3f} s/step; "
          f"speed-up {best[False] / best[True]:.2f}x")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--layout", choices=("shipped", "v5", "v4"), default="shipped",
                   help="UNet layout: the shipped mnist-flow's (default), the v5 flow's, or UNet() of the v2-v4 flows")
    a = p.parse_args()
    main(a.steps, a.rounds, layout=a.layout)
