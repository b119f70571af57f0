"""Few-step MNIST student from the shipped flow's own trajectories (toyflow.fewstep).

On a GPU:

    python bench/distill_fewstep_mnist.py --device cuda --amp --out runs/mnist-fewstep4

The teacher is ``pretrained.load("mnist-flow")``; no digits are needed: the training pairs are the
teacher's ODE trajectories from noise (``--pool-size`` of them, ``--substeps`` Heun steps per interval
of the student's ``--grid-steps`` uniform grid), and the student, a smaller UNet trained from scratch,
learns x - t student(x, t) = the trajectory's end point at the grid's times
(:func:`toyflow.fewstep.distill_few_step`). It samples with
``toyflow.fewstep.few_step_sample(student, torch.randn(n, 1, 28, 28), GRID_STEPS)`` (add
``generator=`` to re-noise between steps), or in one step, x0 = z - student(z, 1).

The default student layout (``--student-channels 32 64 112``, 2 blocks and attention at 7x7, time
embedding 128 wide) has 915,281 parameters, 1.83 MB in float16: it must fit ``--size-limit-mb``
(1.9 MB, the script stops before any compute otherwise). The checkpoint is written in float32 with
``toyflow.models.save_model`` (safetensors + JSON recording this command, atomically);
``toyflow export OUT NAME --dtype float16`` makes the shipped-size copy.

``--select-every N``: every N steps the EMA student samples ``--select-samples`` digits with its own
sampler (``--grid-steps`` steps) from fixed noises (``Generator().manual_seed(seed + 20000)``: not the
pool's noises, not bench/bench_mnist.py's quality seeds 0-4) and the validation classifier
``mnist-reward`` scores them; OUT gets the best evaluation's weights (highest confident share among
the evaluations with every class >= 5 % of the samples), not the last, and its JSON the whole curve
(``selection``). The reported evaluator, ``mnist-evaluator``, plays no part in the choice.

Cost: the pool takes pool_size * grid_steps * 2 * substeps teacher evaluations (32768 * 4 * 2 * 8 =
2.1M at the defaults: minutes on one GPU, far too slow on a CPU, where ``--quick`` is the smoke test),
and the pool stays on the device (x and u: 32768 * 4 * 784 * 8 bytes = 0.8 GB at the defaults);
the defaults were not tuned on a GPU. ``--quick``: a tiny pool, student and run (seconds on a CPU).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

import torch

from toyflow import checkpoint, pretrained
from toyflow.fewstep import FewStepConfig, distill_few_step, few_step_sample, trajectory_pairs, uniform_grid
from toyflow.models import load_model, save_model
from toyflow.models.unet import UNet
from toyflow.train import command_history, pick_device

SHAPE = (1, 28, 28)
# values of the options that --quick changes, for a full run and for the smoke test
FULL = dict(student_channels=[32, 64, 112], student_mid_blocks=2, student_emb_dim=128, student_time_dim=64,
            student_attention=True, pool_size=32768, substeps=8, steps=20000, batch_size=128, chunk=1024)
QUICK = dict(student_channels=[8, 16, 32], student_mid_blocks=1, student_emb_dim=32, student_time_dim=16,
             student_attention=False, pool_size=8, substeps=1, steps=3, batch_size=8, chunk=8)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/distill_fewstep_mnist.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="checkpoint path without suffix (writes OUT.safetensors, OUT.json)")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny pool, student and run (overrides their defaults)")
    f = FULL
    p.add_argument("--student-channels", type=int, nargs=3, metavar=("C28", "C14", "C7"), default=None,
                   help=f"student UNet widths at 28x28, 14x14, 7x7 (default {' '.join(map(str, f['student_channels']))})")
    p.add_argument("--student-mid-blocks", type=int, default=None,
                   help=f"residual blocks at 7x7 (default {f['student_mid_blocks']})")
    p.add_argument("--student-emb-dim", type=int, default=None, help=f"time-embedding width (default {f['student_emb_dim']})")
    p.add_argument("--student-time-dim", type=int, default=None,
                   help=f"sinusoidal time features (default {f['student_time_dim']})")
    p.add_argument("--student-attention", action=argparse.BooleanOptionalAction, default=None,
                   help="self-attention at 7x7 (default on)")
    p.add_argument("--size-limit-mb", type=float, default=1.9, help="largest student size in float16, MB (default 1.9)")
    p.add_argument("--grid-steps", type=int, default=4, help="the student's sampling steps K (default 4)")
    p.add_argument("--substeps", type=int, default=None, help=f"teacher Heun steps per grid interval (default {f['substeps']})")
    p.add_argument("--pool-size", type=int, default=None, help=f"teacher trajectories (default {f['pool_size']})")
    p.add_argument("--chunk", type=int, default=None, help=f"trajectories per teacher call (default {f['chunk']})")
    p.add_argument("--steps", type=int, default=None, help=f"training steps (default {f['steps']})")
    p.add_argument("--batch-size", type=int, default=None, help=f"pairs per step (default {f['batch_size']})")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--warmup", type=int, default=500, help="warm-up steps (default 500; at most a tenth of --steps)")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where the teacher and the student run (default: cuda if available, else cpu)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast for the student (CUDA only; ignored on the CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--select-every", type=int, default=0,
                   help="every N steps score the EMA student with the validation classifier (mnist-reward, not the "
                        "reported evaluator) and keep the best evaluation's weights instead of the last (default 0: off)")
    p.add_argument("--select-samples", type=int, default=1000, help="samples per selection evaluation (default 1000)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = _parser()
    a = p.parse_args(argv)
    for name, value in (QUICK if a.quick else FULL).items():
        if getattr(a, name) is None:
            setattr(a, name, value)
    if a.device is None:
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    command = "python bench/distill_fewstep_mnist.py " + " ".join(argv)
    if a.select_every < 0 or (a.select_every and a.select_samples < 10):
        p.error(f"--select-every must be >= 0 (0: keep the last weights) and --select-samples >= 10, got "
                f"{a.select_every} and {a.select_samples}")

    try:
        student = UNet(channels=tuple(a.student_channels), mid_blocks=a.student_mid_blocks, time_dim=a.student_time_dim,
                       emb_dim=a.student_emb_dim, mid_attention=a.student_attention)
    except ValueError as e:
        p.error(f"student UNet: {e}")
    n_params = sum(q.numel() for q in student.parameters())
    fp16_mb = 2 * n_params / 1e6
    print(f"student UNet {student.config()}: {n_params:,} parameters, {fp16_mb:.2f} MB in float16")
    if fp16_mb > a.size_limit_mb:
        p.error(f"the student ({n_params:,} parameters) is {fp16_mb:.2f} MB in float16, over --size-limit-mb "
                f"{a.size_limit_mb:g}; choose narrower --student-channels (the default 32 64 112 is 1.83 MB), "
                "fewer --student-mid-blocks or a smaller --student-emb-dim, or raise --size-limit-mb")
    try:
        cfg = FewStepConfig(steps=a.steps, batch_size=a.batch_size, lr=a.lr, warmup=min(a.warmup, a.steps // 10),
                            ema_decay=a.ema_decay, seed=a.seed, pool_size=a.pool_size, grid_steps=a.grid_steps,
                            substeps=a.substeps, chunk=a.chunk, amp=a.amp, device=a.device)
        device = pick_device(a.device)
        out = checkpoint.check_writable(checkpoint.checkpoint_paths(a.out)[0], "--out")
    except ValueError as e:
        p.error(str(e))

    with checkpoint.OutputLock(out.with_suffix(""), flag="--out", what="checkpoint", command=command):
        teacher = pretrained.load("mnist-flow", device=device)
        t0 = time.perf_counter()
        pairs = trajectory_pairs(teacher, cfg.pool_size, SHAPE, uniform_grid(cfg.grid_steps), cfg.substeps,
                                 torch.Generator().manual_seed(cfg.seed), device, cfg.chunk, progress=not a.quiet)
        if device.type == "cuda":
            torch.cuda.synchronize()
        pool_s = time.perf_counter() - t0
        nfe = cfg.pool_size * cfg.grid_steps * 2 * cfg.substeps
        print(f"pool: {cfg.pool_size} trajectories x {cfg.grid_steps} times = {len(pairs.t)} pairs, {nfe:,} teacher "
              f"evaluations in {pool_s:.1f} s ({nfe / pool_s:,.0f} images/s)")

        losses: list[float] = []
        t0 = time.perf_counter()
        curve = _selection(a, cfg, out, device, t0) if a.select_every else None
        student = distill_few_step(teacher, student, cfg, SHAPE, pairs=pairs, progress=not a.quiet, losses=losses,
                                   on_step=curve)
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_s = time.perf_counter() - t0 - (curve.eval_seconds if curve else 0.0)
        selection = {}
        if curve is not None and curve.best is not None:  # the validation classifier's choice, not the last step
            student.load_state_dict(load_model(curve.best_path, arch="unet", device=device).state_dict())
            selection = dict(selection=dict(by="mnist-reward", every=a.select_every, samples=a.select_samples,
                                            noise_seed=a.seed + SELECT_SEED_OFFSET, chosen=curve.best, curve=curve.points))
            print(f"chosen by the validation classifier: step {curve.best['step']} (confident share "
                  f"{curve.best['validation_share']:.3f}, rarest class {curve.best['rarest_class']:.3f})")
        tail = losses[-min(len(losses), 100):]
        final_loss = sum(tail) / len(tail)
        print(f"training: {cfg.steps} steps in {train_s:.1f} s ({cfg.steps / train_s:.2f} steps/s, batch "
              f"{cfg.batch_size}, {device.type}{' bf16' if cfg.amp and device.type == 'cuda' else ''}); "
              f"final loss {final_loss:.4f} (mean of the last {len(tail)} steps)")

        save_model(
            out.with_suffix(""), student.cpu(),
            command=command,
            earlier_commands=command_history(pretrained.info("mnist-flow")),
            objective=f"few-step distillation from teacher trajectories (grid_steps={cfg.grid_steps}, "
                      f"substeps={cfg.substeps})",
            distilled_from="pretrained mnist-flow",
            sampler={"function": "toyflow.fewstep.few_step_sample", "steps": cfg.grid_steps, "grid": "uniform"},
            task="mnist", dataset="mnist-flow trajectories", schedule="linear", step=cfg.steps,
            train_config=asdict(cfg), parameters=n_params, float16_mb=round(fp16_mb, 3),
            pool_seconds=round(pool_s, 1), train_seconds=round(train_s, 1),
            steps_per_second=round(cfg.steps / train_s, 3), final_loss=round(final_loss, 5), **selection,
        )
    print(f"checkpoint: {out} / {Path(out).with_suffix('.json')}; total {pool_s + train_s:.1f} s")
    print(f"sample: few_step_sample(load_model({str(out.with_suffix(''))!r}), torch.randn(n, 1, 28, 28), {cfg.grid_steps})")
    return 0


# the selection's noises: neither the pool's (seed) nor bench/bench_mnist.py's quality sets (seeds 0-4)
SELECT_SEED_OFFSET = 20_000


def _selection(a, cfg: FewStepConfig, out: Path, device: torch.device, t_start: float):
    """The on_step hook that scores the EMA student every --select-every steps (its --grid-steps sampler)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: also when this file is imported by path
    from _common import QualityCurve

    noises = torch.randn((a.select_samples,) + SHAPE, generator=torch.Generator().manual_seed(a.seed + SELECT_SEED_OFFSET))
    return QualityCurve(every=a.select_every, noises=noises.to(device),
                        sample=lambda m, z: few_step_sample(m, z, cfg.grid_steps),
                        validator=pretrained.load("mnist-reward", device=device), target=None,
                        best_path=Path(str(out.with_suffix("")) + "-best"), device=device, t_start=t_start)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
