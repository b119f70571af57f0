"""The ``toyflow`` command.

    toyflow train 2d --dataset 8gaussians [--steps 2000] [--out runs/2d-8gaussians]
    toyflow train mnist [--data-dir DIR] [--steps N] [--out runs/mnist-flow]
    toyflow train classifier --role reward|evaluator [--data-dir DIR] [--out ...]
    toyflow sample --checkpoint PATH|--pretrained NAME [--mode linear-ode] [--n 2000] --out samples.png
    toyflow bench search --task ... --methods ... --modes ... --budgets ... --runs ... --out results.csv
    toyflow demo [--out DIR]
    toyflow figures [--out figures]
    toyflow export CHECKPOINT OUT [--dtype float16]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

log = logging.getLogger("toyflow")


def _add_train_options(p: argparse.ArgumentParser, *, steps: int, batch: int, lr: float, ema: float = 0.999) -> None:
    p.add_argument("--steps", type=int, default=steps, help=f"optimiser steps (default {steps})")
    p.add_argument("--batch-size", type=int, default=batch, help=f"batch size (default {batch})")
    p.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr})")
    p.add_argument("--ema-decay", type=float, default=ema, help=f"EMA decay of the saved weights (default {ema})")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and batches (default 0)")
    p.add_argument("--device", default="auto", help="cuda, mps, cpu or auto (default auto)")
    p.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")
    p.add_argument("--amp-cpu", action="store_true",
                   help="bf16 autocast on CPU too (about 1.6-1.8x faster on CPUs with AVX512-BF16 or AMX)")
    p.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N steps (default: only at the end)")
    p.add_argument("--resume", action="store_true", help="continue from the training state saved at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_t_sampling(p: argparse.ArgumentParser) -> None:
    """Flow trainers only: how the training times t are drawn (TrainConfig.t_sampling)."""
    p.add_argument("--t-sampling", choices=("uniform", "logit-normal-mix"), default="uniform",
                   help="training times: uniform (default) or half uniform, half sigmoid(N(0, 1))")


def _command_line(args) -> str:
    """The command as the user gave it (recorded in checkpoints)."""
    return " ".join(["toyflow"] + list(args.argv))


def _train_config(args, **overrides):
    from toyflow.train import TrainConfig

    kw = dict(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, ema_decay=args.ema_decay, seed=args.seed,
        device=args.device, amp=not args.no_amp, amp_cpu=args.amp_cpu, checkpoint_every=args.checkpoint_every, progress=not args.quiet,
    )
    kw.update(overrides)
    return TrainConfig(**kw)


def _cmd_train_2d(args) -> int:
    from toyflow.data import toy2d
    from toyflow.models import VelocityMLP
    from toyflow.train import train_flow

    from toyflow import rewards

    out = Path(args.out or f"runs/2d-{args.dataset}")
    if args.dataset in toy2d.DATASETS:
        def data(n, g):
            return toy2d.sample(args.dataset, n, generator=g)
    elif args.dataset in rewards.TASKS:
        base, _ = rewards.task(args.dataset)

        def data(n, g):
            return base.sample(n, g)
    else:
        raise ValueError(f"unknown dataset {args.dataset!r}; choose one of {', '.join(toy2d.DATASETS + rewards.TASKS)}")
    model = VelocityMLP(dim=2, hidden=args.hidden, depth=args.depth)

    res = train_flow(
        model, data, args.schedule, _train_config(args, t_sampling=args.t_sampling), checkpoint_path=out,
        resume=args.resume,
        extra_config={"dataset": args.dataset, "task": "2d", "command": _command_line(args)},
    )
    print(f"trained {sum(p.numel() for p in model.parameters())} parameters for {res.steps} steps "
          f"in {res.wall_time:.1f} s on {res.device}; final loss {sum(res.losses[-100:]) / len(res.losses[-100:]):.4f}")
    print(f"checkpoint: {res.checkpoint}")
    return 0


def _cmd_train_mnist(args) -> int:
    import torch

    from toyflow import checkpoint
    from toyflow.data.mnist import load_mnist
    from toyflow.models.unet import UNet
    from toyflow.train import CoupledPairs, command_history, train_flow

    if args.pairs:  # reflow: the flow's own noise -> sample pairs instead of the digits
        if args.data_dir or args.download:
            raise ValueError("--pairs replaces the digits as training data; drop --data-dir / --download")
        train_data = CoupledPairs.from_folder(args.pairs)
        if tuple(train_data.data.shape[1:]) != (1, 28, 28):
            raise ValueError(f"--pairs {args.pairs} holds samples of shape {tuple(train_data.data.shape[1:])}, "
                             "the MNIST UNet needs (1, 28, 28)")
        dataset = f"reflow-pairs ({train_data.data.shape[0]} pairs from {args.pairs})"
    else:
        train_data = load_mnist(args.split, args.data_dir, download=args.download).images
        dataset = f"mnist-{args.split}"
    out = Path(args.out or "runs/mnist-flow")
    torch.manual_seed(args.seed)  # the initial weights, reproducible (also of blocks added by --init-from)
    model = UNet(channels=tuple(args.channels), mid_blocks=args.mid_blocks,
                 extra_blocks=tuple(args.extra_blocks), mid_attention=args.mid_attention)
    extra = {"dataset": dataset, "task": "mnist", "command": _command_line(args)}
    overrides = {}
    if args.init_from:
        tensors, config = checkpoint.load(args.init_from)
        if config.get("arch") != "unet":
            raise ValueError(f"--init-from {args.init_from} holds a {config.get('arch')!r} model, not a UNet flow")
        new = model.load_smaller(tensors, config.get("arch_config", {}))
        log.info("initialised from %s; %d new tensors start as the identity", args.init_from, len(new))
        # the weights' history: every command that made the starting point, then this one
        extra.update(init_from=str(args.init_from), earlier_commands=command_history(config))
        overrides["reinit"] = False
    res = train_flow(
        model, train_data, "linear", _train_config(args, t_sampling=args.t_sampling, **overrides),
        checkpoint_path=out, resume=args.resume,
        extra_config=extra,
    )
    print(f"trained UNet ({sum(p.numel() for p in model.parameters())} parameters) for {res.steps} steps "
          f"in {res.wall_time:.1f} s on {res.device}")
    print(f"checkpoint: {res.checkpoint}")
    return 0


def _cmd_train_classifier(args) -> int:
    from toyflow.data.augment import random_shift
    from toyflow.data.mnist import load_mnist
    from toyflow.models.classifier import EvaluatorCNN, RewardCNN
    from toyflow.train import train_classifier

    split = args.split or ("test" if args.role == "reward" else "train5k")
    data = load_mnist(split, args.data_dir, download=args.download)
    model = RewardCNN() if args.role == "reward" else EvaluatorCNN()
    out = Path(args.out or f"runs/mnist-{args.role}")
    seed = args.seed if args.role == "reward" else args.seed + 1
    res = train_classifier(
        model, data.images, data.labels, _train_config(args, seed=seed),
        augment=lambda x, g: random_shift(x, 2, g), checkpoint_path=out, resume=args.resume,
        extra_config={"dataset": f"mnist-{split}", "role": args.role, "command": _command_line(args)},
    )
    print(f"trained {args.role} classifier on {split} in {res.wall_time:.1f} s; checkpoint: {res.checkpoint}")
    return 0


def _cmd_sample(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from toyflow import dynamics, interpolants
    from toyflow.models import load_model

    if (args.checkpoint is None) == (args.pretrained is None):
        raise SystemExit("give exactly one of --checkpoint PATH or --pretrained NAME")
    if args.checkpoint is not None:
        model = load_model(args.checkpoint)
    else:
        from toyflow import pretrained

        model = pretrained.load(args.pretrained)
    shape = (1, 28, 28) if type(model).arch == "unet" else (model.dim,)
    if type(model).arch not in ("unet", "mlp"):
        raise SystemExit(f"{args.checkpoint or args.pretrained} is a {type(model).arch!r} model, not a flow model")
    g = torch.Generator().manual_seed(args.seed)
    sched = "linear"
    if args.mode == "vp-sde":
        model, sched = interpolants.convert(model, "linear", "vp"), "vp"
    x1 = torch.randn((args.n,) + shape, generator=g)
    with torch.no_grad():
        traj = dynamics.sample(model, x1, sched, steps=args.steps, sde=args.mode != "linear-ode", generator=g)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if shape == (1, 28, 28):
        from toyflow.viz import image_grid

        fig = image_grid(traj.x[:64], title=f"{args.mode}, {args.steps} steps")
    else:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.scatter(traj.x[:, 0].numpy(), traj.x[:, 1].numpy(), s=2, alpha=0.5)
        ax.set(xlabel="$x_1$", ylabel="$x_2$", title=f"{args.n} samples, {args.mode}, {args.steps} steps", aspect="equal")
    fig.savefig(out, dpi=120, bbox_inches="tight")
    print(f"wrote {out}")
    return 0


def _cmd_bench_search(args) -> int:
    from toyflow.benchmark import main as bench_main

    return bench_main(args)


def _cmd_bench_merge(args) -> int:
    from toyflow.benchmark import merge_shards

    rows = merge_shards(args.shards, args.out)
    print(f"wrote {len(rows)} rows from {len(args.shards)} shards to {args.out}")
    return 0


def _cmd_demo(args) -> int:
    from toyflow.demo import run_demo

    run_demo(out_dir=args.out, quick=not args.full)
    return 0


def _cmd_figures(args) -> int:
    from toyflow.figures import make_all

    make_all(args.out)
    return 0


def _cmd_export(args) -> int:
    import json

    import torch

    from toyflow.checkpoint import checkpoint_paths
    from toyflow.models import load_model, save_model

    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    model = load_model(args.checkpoint)
    config = json.loads(checkpoint_paths(args.checkpoint)[1].read_text())
    extra = {k: v for k, v in config.items() if k not in ("arch", "arch_config", "weights_dtype")}
    extra["export_command"] = _command_line(args)
    save_model(args.out, model, weights_dtype=dtypes[args.dtype], **extra)
    weights = checkpoint_paths(args.out)[0]
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.2f} MB, {args.dtype})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toyflow", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model").add_subparsers(dest="what", required=True)
    p = train.add_parser("2d", help="flow model on a 2D toy dataset (MLP)")
    p.add_argument("--dataset", default="8gaussians", help="8gaussians, checkerboard, moons, spirals, rings, "
                   "or a search task's base mixture: rare-mode, counting, aesthetic (default 8gaussians)")
    p.add_argument("--schedule", default="linear", help="interpolant: linear, vp, cosine, polynomial-N (default linear)")
    p.add_argument("--hidden", type=int, default=128, help="MLP width (default 128)")
    p.add_argument("--depth", type=int, default=3, help="MLP hidden layers (default 3)")
    p.add_argument("--out", default=None, help="checkpoint path without suffix (default runs/2d-DATASET)")
    _add_train_options(p, steps=2000, batch=256, lr=2e-3)
    _add_t_sampling(p)
    p.set_defaults(func=_cmd_train_2d)

    for name, fn, help_ in (("mnist", _cmd_train_mnist, "UNet flow model on MNIST"),
                            ("classifier", _cmd_train_classifier, "MNIST reward or evaluator classifier")):
        p = train.add_parser(name, help=help_)
        p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files (default $TOYFLOW_DATA)")
        p.add_argument("--download", action="store_true", help="fetch MNIST from the public mirrors if missing")
        p.add_argument("--out", default=None, help="checkpoint path without suffix")
        if name == "mnist":
            p.add_argument("--split", default="test", help="which MNIST file set to train on (default test: t10k)")
            p.add_argument("--channels", type=int, nargs=3, default=[32, 64, 192], metavar=("C28", "C14", "C7"),
                           help="UNet widths at 28x28, 14x14, 7x7 (default 32 64 192, the shipped mnist-flow)")
            p.add_argument("--mid-blocks", type=int, default=2, help="UNet residual blocks at 7x7 (default 2)")
            p.add_argument("--extra-blocks", type=int, nargs=2, default=[0, 0], metavar=("K28", "K14"),
                           help="more UNet residual blocks at 28x28 and 14x14 on both paths (default 0 0)")
            p.add_argument("--mid-attention", action="store_true", help="self-attention block at 7x7")
            p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                           help="start from a trained UNet with the same widths and fewer blocks; "
                                "the added blocks start as the identity")
            _add_t_sampling(p)
            p.add_argument("--pairs", default=None, metavar="FOLDER",
                           help="reflow: train on a flow's noise -> sample pairs (the pairs-*.safetensors shards "
                                "of bench/reflow_pairs.py) instead of the digits; usually with --init-from")
            _add_train_options(p, steps=8000, batch=128, lr=1.5e-3, ema=0.9995)
        else:
            p.add_argument("--role", choices=("reward", "evaluator"), required=True)
            p.add_argument("--split", default=None, help="default: test (t10k) for reward, train5k for evaluator")
            _add_train_options(p, steps=3000, batch=128, lr=2e-3)
        p.set_defaults(func=fn)

    p = sub.add_parser("sample", help="sample a flow model and write a PNG")
    p.add_argument("--checkpoint", default=None, help="checkpoint path (with or without .safetensors)")
    p.add_argument("--pretrained", default=None, help="a shipped model name, e.g. 2d-8gaussians, mnist-flow")
    p.add_argument("--mode", choices=("linear-ode", "linear-sde", "vp-sde"), default="linear-ode")
    p.add_argument("--steps", type=int, default=100, help="sampling steps (default 100)")
    p.add_argument("--n", type=int, default=2000, help="number of samples (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="samples.png", help="PNG to write (default samples.png)")
    p.set_defaults(func=_cmd_sample)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="what", required=True)
    p = bench.add_parser("search", help="inference-time search scaling benchmark -> tidy CSV")
    from toyflow.benchmark import add_arguments

    add_arguments(p)
    p.set_defaults(func=_cmd_bench_search)
    p = bench.add_parser("merge", help="join the CSVs of --shard 0/n .. n-1/n back into one grid-ordered CSV")
    p.add_argument("out", help="CSV to write")
    p.add_argument("shards", nargs="+", help="the shard CSVs, in shard order 0/n, 1/n, ...")
    p.set_defaults(func=_cmd_bench_merge)

    p = sub.add_parser("demo", help="the main job: search on a toy task, table and figures")
    p.add_argument("--out", default="toyflow-demo", help="output folder (default ./toyflow-demo)")
    p.add_argument("--full", action="store_true", help="more runs and budgets (slower)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("figures", help="regenerate every README figure")
    p.add_argument("--out", default="figures", help="output folder (default figures)")
    p.set_defaults(func=_cmd_figures)

    p = sub.add_parser("export", help="copy a checkpoint's inference weights, e.g. as float16 for shipping")
    p.add_argument("checkpoint", help="checkpoint path (with or without .safetensors)")
    p.add_argument("out", help="output checkpoint path without suffix")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float16",
                   help="storage dtype of the floating-point weights (default float16)")
    p.set_defaults(func=_cmd_export)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"toyflow: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
