"""Euler distillation of a flow checkpoint (bench/RESULTS.md §3: how the shipped MNIST flow was made). Run:

    python bench/distill_euler.py --teacher runs/mnist-flow-v7 --data-dir ../shared/data/mnist \\
        --out runs/mnist-flow-v7-distill20 --steps 2500

A thin wrapper of :func:`toyflow.train.train_euler_distillation`: the student starts as a copy of the
teacher and is trained so that one of its ``--euler-steps`` uniform Euler steps lands where
``--substeps`` teacher Euler steps do (the teacher's velocity averaged over the step). The digits are
the teacher's own training digits (t10k). Checkpoints, EMA and resume as for ``toyflow train``; the
JSON records this command after every command that made the teacher.
"""

from __future__ import annotations

import argparse
import sys

import torch

from toyflow import checkpoint
from toyflow.data.mnist import load_mnist
from toyflow.models import load_model
from toyflow.train import TrainConfig, command_history, train_euler_distillation


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True, help="flow checkpoint (path without suffix)")
    p.add_argument("--data-dir", default=None, help="MNIST IDX folder (default: TOYFLOW_DATA)")
    p.add_argument("--out", required=True, help="checkpoint path of the student (without suffix)")
    p.add_argument("--euler-steps", type=int, default=20, help="N of the student's sampler (default 20)")
    p.add_argument("--substeps", type=int, default=5, help="teacher Euler steps per student step (default 5)")
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--resume", action="store_true", help="continue from the training state at --out")
    a = p.parse_args()
    torch.set_num_threads(2)

    teacher = load_model(a.teacher, arch="unet").float()
    student = load_model(a.teacher, arch="unet").float()
    history = command_history(checkpoint.load(a.teacher)[1])
    digits = load_mnist("test", a.data_dir).images  # the teacher's own training digits (t10k)
    cfg = TrainConfig(steps=a.steps, batch_size=a.batch_size, lr=a.lr, warmup=50, ema_decay=a.ema_decay,
                      seed=a.seed, device="cpu", amp_cpu=True, reinit=False, checkpoint_every=a.checkpoint_every)
    extra = {"task": "mnist", "dataset": "mnist-test", "distilled_from": a.teacher, "earlier_commands": history,
             "command": "python " + " ".join(sys.argv)}
    res = train_euler_distillation(student, teacher, digits, "linear", cfg, euler_steps=a.euler_steps,
                                   substeps=a.substeps, checkpoint_path=a.out, resume=a.resume, extra_config=extra)
    print(f"{res.steps} steps in {res.wall_time:.0f} s; checkpoint {res.checkpoint}")


if __name__ == "__main__":
    main()
