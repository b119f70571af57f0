"""The ``toyflow`` command (entry point :func:`main`).

    toyflow train 2d --dataset 8gaussians [--steps 2000] [--out runs/2d-8gaussians]
    toyflow train mnist [--data-dir DIR] [--split train50k] [--steps N] [--out runs/mnist-flow]
    toyflow train classifier --role reward|evaluator [--data-dir DIR] [--out ...]
    toyflow data train5k [--data-dir DIR] [--download] [--check]
    toyflow sample --checkpoint PATH|--pretrained NAME [--mode linear-ode] [--n 2000] --out samples.png
    toyflow bench search --task ... --methods ... --modes ... --budgets ... --runs ... --out results.csv
    toyflow demo [--out DIR]
    toyflow figures [--out DIR]
    toyflow export CHECKPOINT OUT [--dtype float16]

Errors end the command with one line on stderr (exit status 2, or 1 for an unexpected internal
error) naming the problem and the fix; ``--debug`` (anywhere on the line) shows the traceback instead.

Building the parser imports neither torch nor matplotlib (``toyflow --help`` is instant); each
command imports what it needs. Only ``toyflow bench search`` fills in its options (from
:mod:`toyflow.benchmark`, which imports torch) when it is the command given. Small 2D work runs
on one torch thread unless ``--threads N`` says otherwise: batches of a few hundred 2D points gain
nothing from more threads and lose a lot when the cores are busy.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import math
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

log = logging.getLogger("toyflow")

DESCRIPTION = """\
toyflow: inference-time scaling for flow models (ODE to SDE, linear to VP, search methods
with a budget of network evaluations) on 2D toy tasks and MNIST, on a CPU.

examples:
  toyflow demo                                  search on a toy task: a table and three figures
  toyflow train 2d --dataset moons --steps 300  train a small 2D flow model
  toyflow sample --pretrained 2d-8gaussians --mode vp-sde --out samples.png
  toyflow bench search --task rare-mode --methods bon rbf --budgets 50 200 --out results.csv
  toyflow figures                               the README figures, into ./toyflow-figures
  toyflow COMMAND --help                        the options of a command, with their defaults
"""
EPILOG = """\
On an error a command prints one line naming the problem and the fix (exit status 2; 1 for an
internal error); --debug, anywhere on the line, shows the traceback instead.
"""
DEMO_OUT = "toyflow-demo"
# toyflow.data.mnist.SPLITS, written out so that the parser needs neither torch nor numpy
# (tests/test_mnist.py checks that the two agree)
_MNIST_SPLITS = ("train", "test", "train5k", "val5k", "train50k")
FIGURES_OUT = "toyflow-figures"
_IGNORE_ALL = "# written by toyflow: git ignores this output folder (delete this file to commit it)\n*\n"


class _HelpFormatter(argparse.HelpFormatter):
    """Descriptions of several lines as written, one-line ones wrapped; every option's help ends with
    its default, unless the help already says it (``default`` in the text), the option is a switch,
    or it has no default value."""

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action):
        text = action.help or ""
        value = action.default
        if ("default" in text.lower() or action.nargs == 0 or action.required or value is None
                or value is argparse.SUPPRESS or not action.option_strings):
            return text
        if isinstance(value, (list, tuple)):
            shown = " ".join(map(str, value)) if value else "none"
        else:
            shown = str(value)
        shown = shown.replace("%", "%%")  # help strings are %-formatted by argparse
        return f"{text} (default {shown})" if text else f"(default {shown})"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the problem, then where the help is), every option's
    help shows its default, and a parser can fill in its options only when it is used (``populate``)."""

    def __init__(self, *args, populate: Optional[Callable[["_Parser"], None]] = None, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self._populate = populate

    def _filled(self) -> "_Parser":
        if self._populate is not None:
            fill, self._populate = self._populate, None
            fill(self)
        return self

    def parse_known_args(self, args=None, namespace=None):
        return super(_Parser, self._filled()).parse_known_args(args, namespace)

    def format_help(self):
        return super(_Parser, self._filled()).format_help()

    def format_usage(self):
        return super(_Parser, self._filled()).format_usage()

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


@contextlib.contextmanager
def _torch_threads(n: Optional[int]):
    """Run the block on ``n`` torch intra-op threads (restored afterwards); None: leave torch's count."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _add_threads(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help=f"torch CPU threads (default {default})")


_THREADS_2D = "1: small 2D batches gain nothing from more threads and lose a lot on a busy machine"
_THREADS_TORCH = "PyTorch's choice: $OMP_NUM_THREADS, else one per core"
_THREADS_BY_MODEL = "1 for a 2D model, PyTorch's choice for MNIST"


def _ignored_by_git(folder: Path) -> None:
    """A default output folder made by toyflow holds a ``.gitignore`` of ``*``, so running a command
    inside a clone (at its root or anywhere below) never leaves untracked files behind."""
    from toyflow.checkpoint import atomic_write_text

    atomic_write_text(folder / ".gitignore", _IGNORE_ALL)


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


_positive_int, _nonneg_int = _int_at_least(1), _int_at_least(0)


def _float_in(low: float, high: float, *, high_open: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not (math.isfinite(value) and low <= value and (value < high if high_open else value <= high)):
            raise argparse.ArgumentTypeError(f"must be a finite number in [{low}, {high}{')' if high_open else ']'}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def _add_train_options(p: argparse.ArgumentParser, *, steps: int, batch: int, lr: float, ema: float = 0.999,
                       threads: str = _THREADS_TORCH) -> None:
    p.add_argument("--steps", type=_positive_int, default=steps, help=f"optimiser steps (default {steps})")
    p.add_argument("--batch-size", type=_positive_int, default=batch, help=f"batch size (default {batch})")
    p.add_argument("--lr", type=_float_in(0.0, math.inf, high_open=True), default=lr, help=f"peak learning rate (default {lr})")
    p.add_argument("--ema-decay", type=_float_in(0.0, 1.0, high_open=True), default=ema,
                   help=f"EMA decay of the saved weights, in [0, 1) (default {ema})")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and batches (default 0)")
    p.add_argument("--device", default="auto", help="cuda, mps, cpu or auto (default auto)")
    p.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA (default: on)")
    p.add_argument("--amp-cpu", action="store_true",
                   help="bf16 autocast on CPU too (about 1.6-1.8x faster on CPUs with AVX512-BF16 or AMX)")
    p.add_argument("--checkpoint-every", type=_nonneg_int, default=0, metavar="N",
                   help="also checkpoint every N steps (default 0: only at the end)")
    p.add_argument("--resume", action="store_true", help="continue from the training state saved at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_threads(p, threads)


def _add_t_sampling(p: argparse.ArgumentParser) -> None:
    """Flow trainers only: how the training times t are drawn (TrainConfig.t_sampling)."""
    p.add_argument("--t-sampling", choices=("uniform", "logit-normal-mix"), default="uniform",
                   help="training times: uniform (default) or half uniform, half sigmoid(N(0, 1))")


def _command_line(args) -> str:
    """The command as the user gave it (recorded in checkpoints)."""
    return " ".join(["toyflow"] + list(args.argv))


def _mnist_command_line(args, split: str) -> str:
    """The command of an MNIST training as a checkpoint records it, in a form that runs anywhere:
    the split it trained on written out (a later default cannot change what it means), and no
    --data-dir / --download (the data folder is this machine's; the digits are named by the split,
    found through $TOYFLOW_DATA or --data-dir wherever the command is run again)."""
    words, skip = [], False
    for w in args.argv:
        if skip:
            skip = False
            continue
        if w in ("--data-dir", "--split"):
            skip = True
            continue
        if w == "--download" or w.startswith(("--data-dir=", "--split=")):
            continue
        words.append(w)
    head = 2  # "train mnist" / "train classifier"
    return " ".join(["toyflow"] + words[:head] + ["--split", split] + words[head:])


def _check_checkpoint_out(out: Path, args=None) -> None:
    """Before any compute: the checkpoint ``out`` can be written, no other process is writing it,
    the device exists, and a --resume has a state to resume."""
    from toyflow import checkpoint
    from toyflow.train import pick_device

    checkpoint.check_writable(checkpoint.checkpoint_paths(out)[0], "--out")
    with checkpoint.OutputLock(out, what="checkpoint"):
        pass  # only a probe: the training holds it for real
    if args is not None:
        pick_device(args.device)
        if args.resume and not checkpoint.state_path(out).exists():
            raise FileNotFoundError(f"--resume: no training state at {checkpoint.state_path(out)}; "
                                    "train without --resume first (or give the --out of that training)")


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

    from toyflow import interpolants

    out = Path(args.out or f"runs/2d-{args.dataset}")
    interpolants.get(args.schedule)  # an unknown schedule fails here, before anything is written
    if args.dataset in toy2d.DATASETS:
        def data(n, g):
            return toy2d.sample(args.dataset, n, generator=g)
    elif args.dataset in rewards.TASKS:
        base, _ = rewards.task(args.dataset)

        def data(n, g):
            return base.sample(n, g)
    else:
        raise ValueError(f"unknown dataset {args.dataset!r}; choose one of {', '.join(toy2d.DATASETS + rewards.TASKS)}")
    _check_checkpoint_out(out, args)
    model = VelocityMLP(dim=2, hidden=args.hidden, depth=args.depth)

    with _torch_threads(args.threads or 1):
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

    out = Path(args.out or "runs/mnist-flow")
    _check_checkpoint_out(out, args)
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
        if args.split == "test":
            log.warning("training on the official MNIST test split (t10k): keep it out of any evaluation of this "
                        "model (the default, --split train50k, leaves val5k and test unseen)")
    torch.manual_seed(args.seed)  # the initial weights, reproducible (also of blocks added by --init-from)
    model = UNet(channels=tuple(args.channels), mid_blocks=args.mid_blocks,
                 extra_blocks=tuple(args.extra_blocks), mid_attention=args.mid_attention)
    command = _command_line(args) if args.pairs else _mnist_command_line(args, args.split)
    extra = {"dataset": dataset, "task": "mnist", "command": command}
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
    with _torch_threads(args.threads):
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

    split = args.split or ("train50k" if args.role == "reward" else "train5k")
    out = Path(args.out or f"runs/mnist-{args.role}")
    _check_checkpoint_out(out, args)
    data = load_mnist(split, args.data_dir, download=args.download)
    model = RewardCNN() if args.role == "reward" else EvaluatorCNN()
    seed = args.seed if args.role == "reward" else args.seed + 1
    with _torch_threads(args.threads):
        res = train_classifier(
            model, data.images, data.labels, _train_config(args, seed=seed),
            augment=lambda x, g: random_shift(x, 2, g), checkpoint_path=out, resume=args.resume,
            extra_config={"dataset": f"mnist-{split}", "role": args.role, "command": _mnist_command_line(args, split)},
        )
    print(f"trained {args.role} classifier on {split} in {res.wall_time:.1f} s; checkpoint: {res.checkpoint}")
    return 0


def _cmd_data_train5k(args) -> int:
    from toyflow.data import mnist

    if args.check:
        if args.download:
            raise ValueError("--check only reads the train5k files already there: drop --download, or drop --check "
                             "to rebuild them from the (downloaded) training split")
        report = mnist.verify_train5k(args.data_dir)
        if not report.ok:
            raise ValueError(f"train5k in {report.paths[0].parent} does not match the shipped digests: "
                             + "; ".join(report.problems)
                             + ". Rebuild it from the official training split: toyflow data train5k")
        print(f"train5k in {report.paths[0].parent}: all 5,000 digits match the shipped digests "
              f"({mnist.TRAIN5K_MANIFEST.name})")
        return 0
    report = mnist.rebuild_train5k(args.data_dir, args.out, download=args.download)
    print(f"rebuilt train5k from the official training split and checked it against the shipped digests: "
          f"{', '.join(str(p) for p in report.paths)}")
    if args.indices:
        from toyflow.checkpoint import atomic_write_text

        atomic_write_text(Path(args.indices), "\n".join(map(str, report.indices)) + "\n")
        print(f"wrote the training-split index of each train5k digit (in train5k order) to {args.indices}")
    return 0


def _recorded_schedule(path: Path, flag: str):
    """The interpolant a flow checkpoint was trained on (its JSON's ``schedule``; linear when absent,
    as in checkpoints older than the field)."""
    import json

    from toyflow import checkpoint, interpolants

    config = json.loads(checkpoint.checkpoint_paths(path)[1].read_text())
    name = config.get("schedule", "linear")
    try:
        return interpolants.get(name)
    except ValueError:
        raise ValueError(f"{flag} {path} records the schedule {name!r}, which this toyflow does not know; "
                         "use the toyflow version that trained it, or fix 'schedule' in its JSON "
                         "(linear, vp, cosine or polynomial-N)") from None


def _cmd_sample(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from toyflow import checkpoint, dynamics, interpolants, pretrained
    from toyflow.models import load_model

    flows = ("unet", "mlp")
    if (args.checkpoint is None) == (args.pretrained is None):
        raise ValueError("give exactly one of --checkpoint PATH or --pretrained NAME")
    out = checkpoint.check_writable(args.out, "--out")
    fmt = (out.suffix[1:] or "png").lower()
    supported = plt.gcf().canvas.get_supported_filetypes()
    plt.close("all")
    if fmt not in supported:
        raise ValueError(f"--out {out}: matplotlib cannot write {fmt!r} files; use one of {', '.join(sorted(supported))} "
                         "(e.g. samples.png)")
    if args.pretrained is not None and pretrained.MODELS.get(args.pretrained, "mlp") not in flows:
        raise ValueError(f"--pretrained {args.pretrained} is a {pretrained.MODELS[args.pretrained]!r} classifier, not a "
                         f"flow model; sample one of {', '.join(n for n, a in pretrained.MODELS.items() if a in flows)}")
    model = load_model(args.checkpoint) if args.checkpoint is not None else pretrained.load(args.pretrained)
    if type(model).arch not in flows:
        raise ValueError(f"--checkpoint {args.checkpoint} holds a {type(model).arch!r} model, not a flow model; "
                         "give a checkpoint of toyflow train 2d or toyflow train mnist")
    images = type(model).arch == "unet"
    shape = (1, 28, 28) if images else (model.dim,)
    source = (Path(args.checkpoint), "--checkpoint") if args.checkpoint is not None \
        else (pretrained.path(args.pretrained), "--pretrained")
    trained = _recorded_schedule(*source)  # the path the model was trained on: its velocity is of that path
    sched = "vp" if args.mode == "vp-sde" else "linear"
    model = interpolants.convert(model, trained, sched)  # unchanged when trained on the sampling path
    # the linear-trained models (every shipped flow) sample vp-sde by conversion as always; say so otherwise
    converted = trained != interpolants.get(sched) and trained != interpolants.get("linear")
    note = f" (trained on {trained.name}, converted)" if converted else ""
    if converted:
        print(f"the model was trained on the {trained.name!r} path; {args.mode} samples it on the {sched!r} "
              "path (interpolants.convert)")
    g = torch.Generator().manual_seed(args.seed)
    x1 = torch.randn((args.n,) + shape, generator=g)
    threads = args.threads if args.threads is not None else (None if images else 1)
    with _torch_threads(threads), torch.no_grad():
        traj = dynamics.sample(model, x1, sched, steps=args.steps, sde=args.mode != "linear-ode", generator=g)
    if images:
        from toyflow.viz import image_grid

        fig = image_grid(traj.x[:64], title=f"{args.mode}, {args.steps} steps{note}")
    else:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.scatter(traj.x[:, 0].numpy(), traj.x[:, 1].numpy(), s=2, alpha=0.5)
        ax.set(xlabel="$x_1$", ylabel="$x_2$", title=f"{args.n} samples, {args.mode}, {args.steps} steps{note}",
               aspect="equal")
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=120, bbox_inches="tight")
    plt.close(fig)
    checkpoint.atomic_write_bytes(out, buf.getvalue())
    print(f"wrote {out}")
    return 0


def _cmd_bench_search(args) -> int:
    from toyflow.benchmark import TASKS_MNIST
    from toyflow.benchmark import main as bench_main

    threads = args.threads
    if threads is None and not any(t in TASKS_MNIST for t in args.task):
        threads = 1  # 2D tasks only
    with _torch_threads(threads):
        return bench_main(args)


def _cmd_bench_merge(args) -> int:
    from toyflow.benchmark import merge_shards
    from toyflow.checkpoint import check_writable

    check_writable(args.out, "OUT")
    rows = merge_shards(args.shards, args.out)
    print(f"wrote {len(rows)} rows from {len(args.shards)} shards to {args.out}")
    return 0


def _output_folder(args, default: str, command: str) -> Path:
    """--out, checked before any compute; the default folder, when this command creates it, is
    ignored by git (see :func:`_ignored_by_git`). Says where the output goes."""
    from toyflow.checkpoint import check_writable

    out = Path(args.out or default)
    fresh = not out.exists()
    check_writable(out / "index", "--out")  # the folder can be created and written
    if args.out is None and fresh:
        _ignored_by_git(out)
    how = " (the default; choose another with --out DIR)" if args.out is None else ""
    print(f"toyflow {command}: writing into {out.resolve()}{how}", flush=True)
    return out


def _cmd_demo(args) -> int:
    from toyflow.demo import run_demo
    from toyflow.figures import forced_threads

    out = _output_folder(args, DEMO_OUT, "demo")
    with forced_threads(args.threads), _torch_threads(args.threads or 1):
        run_demo(out_dir=out, quick=not args.full)
    return 0


def _cmd_figures(args) -> int:
    from toyflow.figures import make_all

    out = _output_folder(args, FIGURES_OUT, "figures")
    paths = make_all(out, progress=not args.quiet, quick=args.quick, threads=args.threads)
    print(f"wrote {len(paths)} figures into {out.resolve()}")
    return 0


def _cmd_export(args) -> int:
    import json

    import torch

    from toyflow.checkpoint import OutputLock, check_writable, checkpoint_paths
    from toyflow.models import load_model, save_model

    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    weights = check_writable(checkpoint_paths(args.out)[0], "OUT")
    with OutputLock(checkpoint_paths(args.out)[0].with_suffix(""), flag="OUT", what="checkpoint"):
        model = load_model(args.checkpoint)
        config = json.loads(checkpoint_paths(args.checkpoint)[1].read_text())
        extra = {k: v for k, v in config.items() if k not in ("arch", "arch_config", "weights_dtype", "weights_sha256")}
        extra["export_command"] = _command_line(args)
        save_model(args.out, model, weights_dtype=dtypes[args.dtype], **extra)
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.2f} MB, {args.dtype})")
    return 0


#: help of the ``bench search`` options that toyflow.benchmark.add_arguments leaves without one
_BENCH_HELP = {
    "--budgets": "NFE budgets per run: each is one grid cell per (task, model, method, mode)",
    "--seed": "base seed; each cell's seed is derived from it and the cell's coordinates",
}


def _fill_bench_search(p: argparse.ArgumentParser) -> None:
    """The options of ``toyflow bench search``: those of toyflow.benchmark (imports torch), so added
    only when this command is parsed or its help is shown."""
    from toyflow.benchmark import add_arguments

    add_arguments(p)
    for action in p._actions:
        if action.help is None:
            action.help = _BENCH_HELP.get(action.option_strings[0] if action.option_strings else action.dest)
    _add_threads(p, "1 for 2D tasks, PyTorch's choice when an MNIST task is in --task")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; imports neither torch nor matplotlib."""
    from toyflow import __version__

    parser = _Parser(prog="toyflow", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"toyflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--debug", action="store_true", help="on an error, show the traceback (accepted anywhere on the line)")
    parser.set_defaults(help_of=parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    train_parser = sub.add_parser("train", help="train a model", description="Train a model; each writes a "
                                  "checkpoint (NAME.safetensors + NAME.json) and can --resume.")
    train_parser.set_defaults(help_of=train_parser)
    train = train_parser.add_subparsers(dest="what", metavar="WHAT", title="what to train")
    p = train.add_parser("2d", help="flow model on a 2D toy dataset (MLP)",
                         description="Train a velocity MLP on a 2D toy dataset by flow matching.")
    p.add_argument("--dataset", default="8gaussians", help="8gaussians, checkerboard, moons, spirals, rings, "
                   "or a search task's base mixture: rare-mode, counting, aesthetic (default 8gaussians)")
    p.add_argument("--schedule", default="linear", help="interpolant: linear, vp, cosine, polynomial-N (default linear)")
    p.add_argument("--hidden", type=_positive_int, default=128, help="MLP width (default 128)")
    p.add_argument("--depth", type=_positive_int, default=3, help="MLP hidden layers (default 3)")
    p.add_argument("--out", default=None, help="checkpoint path without suffix (default runs/2d-DATASET)")
    _add_train_options(p, steps=2000, batch=256, lr=2e-3, threads=_THREADS_2D)
    _add_t_sampling(p)
    p.set_defaults(func=_cmd_train_2d)

    for name, fn, help_ in (("mnist", _cmd_train_mnist, "UNet flow model on MNIST"),
                            ("classifier", _cmd_train_classifier, "MNIST reward or evaluator classifier")):
        p = train.add_parser(name, help=help_, description=f"Train a {help_}.")
        p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files (default $TOYFLOW_DATA)")
        p.add_argument("--download", action="store_true",
                       help="fetch missing MNIST files from the public mirrors (MD5-checked); train5k is rebuilt "
                            "from the downloaded training split and checked against its shipped digests")
        if name == "mnist":
            p.add_argument("--out", default=None, help="checkpoint path without suffix (default runs/mnist-flow)")
            p.add_argument("--split", default="train50k", choices=_MNIST_SPLITS,
                           help="MNIST digits to train on: train50k (the official training split without "
                                "train5k and val5k, the held-out parts), train, train5k, val5k, or test (the "
                                "official test split: only when asked; default train50k)")
            p.add_argument("--channels", type=_positive_int, nargs=3, default=[32, 64, 192], metavar=("C28", "C14", "C7"),
                           help="UNet widths at 28x28, 14x14, 7x7 (default 32 64 192, the shipped mnist-flow)")
            p.add_argument("--mid-blocks", type=_nonneg_int, default=2, help="UNet residual blocks at 7x7 (default 2)")
            p.add_argument("--extra-blocks", type=_nonneg_int, nargs=2, default=[0, 0], metavar=("K28", "K14"),
                           help="more UNet residual blocks at 28x28 and 14x14 on both paths (default 0 0)")
            p.add_argument("--mid-attention", action="store_true", help="self-attention block at 7x7")
            p.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                           help="start from a trained UNet with the same widths and fewer blocks; "
                                "the added blocks start as the identity (default: from scratch)")
            _add_t_sampling(p)
            p.add_argument("--pairs", default=None, metavar="FOLDER",
                           help="reflow: train on a flow's noise -> sample pairs (the pairs-*.safetensors shards "
                                "of bench/reflow_pairs.py) instead of the digits; usually with --init-from "
                                "(default: the digits)")
            _add_train_options(p, steps=8000, batch=128, lr=1.5e-3, ema=0.9995)
        else:
            p.add_argument("--out", default=None, help="checkpoint path without suffix (default runs/mnist-ROLE)")
            p.add_argument("--role", choices=("reward", "evaluator"), required=True,
                           help="reward: the model the search steers with; evaluator: the held-out scorer "
                                "(required)")
            p.add_argument("--split", default=None, choices=_MNIST_SPLITS,
                           help="MNIST digits to train on (default: train50k for reward, train5k for evaluator; "
                                "test, the official test split, only when asked)")
            _add_train_options(p, steps=3000, batch=128, lr=2e-3)
        p.set_defaults(func=fn)

    p = sub.add_parser("sample", help="sample a flow model and write a PNG",
                       description="Sample a flow model (a checkpoint or a shipped one) and draw the samples. "
                                   "The model is converted from the path it was trained on (its checkpoint's "
                                   "recorded schedule) to the path the mode samples.")
    p.add_argument("--checkpoint", default=None, help="checkpoint path, with or without .safetensors "
                                                      "(give this or --pretrained)")
    p.add_argument("--pretrained", default=None, help="a shipped model name, e.g. 2d-8gaussians, mnist-flow "
                                                      "(give this or --checkpoint)")
    p.add_argument("--mode", choices=("linear-ode", "linear-sde", "vp-sde"), default="linear-ode",
                   help="sampler: ODE or SDE on the linear path, or SDE on the VP path")
    p.add_argument("--steps", type=_positive_int, default=100, help="sampling steps (default 100)")
    p.add_argument("--n", type=_positive_int, default=2000, help="number of samples (default 2000; images show 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and the SDE increments")
    p.add_argument("--out", default="samples.png", help="image to write; the suffix picks the format "
                                                        "(default samples.png)")
    _add_threads(p, _THREADS_BY_MODEL)
    p.set_defaults(func=_cmd_sample)

    data_parser = sub.add_parser("data", help="datasets: check or rebuild MNIST's train5k",
                                 description="Datasets on disk.")
    data_parser.set_defaults(help_of=data_parser)
    data = data_parser.add_subparsers(dest="what", metavar="WHAT", title="datasets")
    p = data.add_parser("train5k", help="rebuild MNIST's train5k from the training split, or --check a copy",
                        description="train5k is 5,000 digits of the official MNIST training split (500 per class, "
                                    "sorted by class), pinned by the digests shipped in toyflow/data/"
                                    "mnist_train5k.json. Without --check: find them in the training split "
                                    "(train-images-idx3-ubyte, train-labels-idx1-ubyte) by content, write "
                                    "train5k-*.gz and verify them. With --check: verify the train5k files there.")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files (default $TOYFLOW_DATA, "
                                                    "else ~/.cache/toyflow/mnist)")
    p.add_argument("--download", action="store_true", help="fetch the training split from the public mirrors "
                                                           "if missing (MD5-checked)")
    p.add_argument("--check", action="store_true", help="only verify the train5k files against the digests")
    p.add_argument("--out", default=None, help="folder for the rebuilt train5k files (default: --data-dir)")
    p.add_argument("--indices", default=None, metavar="FILE",
                   help="also write where each train5k digit sits in the training split, one index a line "
                        "(default: not written)")
    p.set_defaults(func=_cmd_data_train5k)

    bench_parser = sub.add_parser("bench", help="benchmarks", description="Benchmarks that write tidy CSVs.")
    bench_parser.set_defaults(help_of=bench_parser)
    bench = bench_parser.add_subparsers(dest="what", metavar="WHAT", title="benchmarks")
    p = bench.add_parser("search", help="inference-time search scaling benchmark -> tidy CSV",
                         description="Inference-time search scaling benchmark: one CSV row per (task, model, "
                                     "method, mode, budget).", populate=_fill_bench_search)
    p.set_defaults(func=_cmd_bench_search)
    p = bench.add_parser("merge", help="join the CSVs of --shard 0/n .. n-1/n back into one grid-ordered CSV",
                         description="Join the CSVs of --shard 0/n .. n-1/n back into one grid-ordered CSV.")
    p.add_argument("out", help="CSV to write")
    p.add_argument("shards", nargs="+", help="the shard CSVs, in shard order 0/n, 1/n, ...")
    p.set_defaults(func=_cmd_bench_merge)

    p = sub.add_parser("demo", help="the main job: search on a toy task, table and figures",
                       description="Search on a toy task in two regimes: prints the tables, writes them with "
                                   "a CSV and three figures.")
    p.add_argument("--out", default=None, help=f"output folder (default ./{DEMO_OUT}, which git ignores)")
    p.add_argument("--full", action="store_true", help="more methods, runs and budgets (slower)")
    _add_threads(p, _THREADS_2D)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("figures", help="regenerate every README figure",
                       description="Draw every README figure (seeded; the same bytes run to run on one "
                                   "machine with the default threads). --out figures regenerates the "
                                   "committed ones.")
    p.add_argument("--out", default=None, help=f"output folder (default ./{FIGURES_OUT}, which git ignores; "
                                               "figures for the committed ones)")
    p.add_argument("--quick", action="store_true", help="a smaller scaling grid, for a smoke test "
                                                        "(not the README figures)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_threads(p, "1, for every figure: the same bytes run to run, whatever the machine's load")
    p.set_defaults(func=_cmd_figures)

    p = sub.add_parser("export", help="copy a checkpoint's inference weights, e.g. as float16 for shipping",
                       description="Copy a checkpoint's inference weights (and its JSON record), e.g. as "
                                   "float16 for shipping.")
    p.add_argument("checkpoint", help="checkpoint path (with or without .safetensors)")
    p.add_argument("out", help="output checkpoint path without suffix")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float16",
                   help="storage dtype of the floating-point weights (default float16)")
    p.set_defaults(func=_cmd_export)
    return parser


def _describe(e: BaseException) -> tuple[str, int]:
    """(one line naming the problem and the fix, exit status) for an exception that ends a command."""
    from toyflow.checkpoint import OutputLocked

    if isinstance(e, OSError) and e.errno is not None:  # from the system: name the file and what to do
        where = e.filename if e.filename is not None else "a file"
        if e.errno == errno.ENOSPC:
            text = f"no space left on the device while writing {where}; free some space or write to another disk"
        elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            text = f"cannot write {where}: {e.strerror}; check its permissions or choose another path"
        elif e.errno == errno.ENOENT:
            text = f"no such file or folder: {where}; check the path"
        else:
            text = f"{e.strerror or type(e).__name__} ({where}); check the path and the disk"
        return text, 2
    if isinstance(e, (ValueError, OSError, OutputLocked, FloatingPointError, TypeError)):
        return str(e), 2
    if isinstance(e, MemoryError) or any(s in str(e).lower() for s in ("out of memory", "can't allocate memory")):
        return (f"out of memory ({str(e).splitlines()[0] if str(e) else type(e).__name__}); use a smaller --n, --runs, "
                "--batch-size or model", 2)
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"internal error {type(e).__name__}: {first}; rerun with --debug for the traceback and report it", 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    args = build_parser().parse_args(argv)
    args.argv = argv
    if getattr(args, "func", None) is None:  # toyflow, toyflow train, toyflow bench: what can follow
        args.help_of.print_help()
        return 0
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print("toyflow: interrupted; every file written so far is complete (atomic writes); a training continues "
              "with the same command and --resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (toyflow demo | head): stop quietly, as shell tools do
        if debug:
            raise
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except (OSError, ValueError):
            pass
        return 141
    except Exception as e:  # noqa: BLE001 - one line for the user; the traceback with --debug
        if debug:
            raise
        text, status = _describe(e)
        print(f"toyflow: error: {' '.join(text.split())}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
