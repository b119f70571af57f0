"""Seconds per training step of the shipped MNIST UNet (batch 128), fp32 vs bf16 autocast, side by side.

Run:  python bench/bench_train_speed.py [--device cpu|cuda] [--steps 8] [--rounds 3]

The two settings alternate within each round (this machine is shared and noisy); the best step
time of each is reported, and their ratio. bf16 autocast on CPU is ``toyflow train ... --amp-cpu``.
"""

from __future__ import annotations

import argparse
import time

import torch

from toyflow.interpolants import get
from toyflow.models.unet import UNet
from toyflow.train import flow_matching_loss


def step_time(model, opt, x0, g, bf16: bool, steps: int) -> float:
    device = x0.device
    best = float("inf")
    for i in range(steps + 2):  # two warm-up steps
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = flow_matching_loss(model, x0, get("linear"), g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            best = min(best, time.perf_counter() - t0)
    return best


def main(device: str = "cpu", steps: int = 8, rounds: int = 3, batch: int = 128) -> None:
    dev = torch.device(device)
    torch.manual_seed(0)
    model = UNet().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x0 = torch.randn(batch, 1, 28, 28, device=dev)
    g = torch.Generator(device="cpu").manual_seed(0)
    best = {False: float("inf"), True: float("inf")}
    for _ in range(rounds):
        for bf16 in (False, True):
            best[bf16] = min(best[bf16], step_time(model, opt, x0, g, bf16, steps))
    print(f"UNet {sum(p.numel() for p in model.parameters()):,} parameters, batch {batch}, device {dev}, "
          f"threads {torch.get_num_threads()}")
    print(f"fp32: {best[False]:.3f} s/step; bf16 autocast: {best[True]:.3f} s/step; "
          f"speed-up {best[False] / best[True]:.2f}x")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    main(a.device, a.steps, a.rounds)
