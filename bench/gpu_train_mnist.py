"""Train the MNIST flow on a GPU and report steps per second, time to the quality target, the
checkpoint a validation classifier chooses, that checkpoint's quality by an evaluator that chose
nothing, and the search benchmark's wall time on the GPU against the CPU: one prepared run.

Run:  python bench/gpu_train_mnist.py --data-dir DIR [--split train50k] [--reference-split val5k]
          [--steps 20000 | --time-budget SECONDS] [--batch-size 256] [--eval-every 1000] [--out-dir runs/gpu-mnist]
          [--md FILE.md]
      python bench/gpu_train_mnist.py --device cpu --quick --data-dir DIR    (a smoke test of the script)

Two classifiers, two roles, so that the reported figures were not selected on:

- the **validation classifier**, ``mnist-reward`` (trained on t10k), scores the EMA weights every
  ``--eval-every`` steps: its confident share (max softmax >= 0.9) on ``--eval-samples`` samples
  (20 Euler steps of the linear ODE, the same noises every time) is the quality curve; it decides
  when the target is met and which evaluation's weights are kept as ``best``;
- the **reported evaluator**, ``mnist-evaluator`` (trained on train5k), judges that one checkpoint
  once, at the end: confident share, per-class frequencies, FID in its features against the
  reference digits, with the real-vs-real floor (two disjoint reference sets) beside it.

Quality target: the validation share of the samples within ``--target-gap`` points (default 5) of
its share on real reference digits, with every class at least 5 % of the samples by its argmax (a
collapsed flow's samples can all be confident). The best checkpoint is the evaluation with the
highest share among those with every class covered (any evaluation if none is). Time to target: training wall time, evaluations excluded, up to
the first evaluation that meets it. The defaults (the flow on ``train50k``, reference ``val5k``)
keep the reference digits unseen by the flow and by both classifiers; with other splits the report
says which of them saw the reference.

Training runs through ``toyflow.train.train_flow`` (bf16 autocast on CUDA, TF32 matmuls and
convolutions, EMA), the shipped layout by default. The search section times ``search.run`` with the
shipped 20-step flow on task mnist-thick (digit 7), linear SDE, on the device and on the CPU, the same
cells and seeds. Without CUDA (and without ``--device cpu``) the script says so and exits 0, having
measured nothing (``--require-cuda``: status 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from _common import COVERAGE, QualityCurve, confident_share, sync

SHIPPED_LAYOUT = dict(channels=(32, 64, 192), mid_blocks=2, extra_blocks=(1, 2), mid_attention=True)
FULL = dict(steps=20_000, batch_size=256, eval_every=1000, eval_samples=1000, real=1000, sample_steps=20,
            arch=SHIPPED_LAYOUT, search_runs=64, search_budget=50, search_methods=("svdd", "rbf"), probe_steps=50)
QUICK = dict(steps=6, batch_size=8, eval_every=3, eval_samples=16, real=32, sample_steps=4,
             arch=dict(channels=(8, 16, 16), mid_blocks=1, mid_attention=True),
             search_runs=2, search_budget=20, search_methods=("svdd", "rbf"), probe_steps=2)
# which split each shipped classifier trained on: a reference split named here is not held out for it
CLASSIFIER_SPLITS = {"mnist-reward": "test", "mnist-evaluator": "train5k"}


@torch.no_grad()
def euler_samples(flow: torch.nn.Module, noises: torch.Tensor, steps: int, batch: int = 500) -> torch.Tensor:
    """Linear-ODE samples (B, 1, 28, 28) from the given noises, ``steps`` uniform Euler steps."""
    from toyflow import dynamics

    return torch.cat([dynamics.sample(flow, noises[i:i + batch], "linear", steps=steps).x
                      for i in range(0, noises.shape[0], batch)])


def time_search(device: torch.device, size: dict, data_dir) -> list[dict]:
    """search.run wall time per method on ``device`` and on the CPU: the shipped flow, mnist-thick (7), linear SDE."""
    from toyflow import pretrained, search, tasks

    rows = []
    spec = tasks.get("mnist-thick")
    for where in ([device, torch.device("cpu")] if device.type != "cpu" else [device]):
        flow = pretrained.load("mnist-flow", device=where)
        reward = spec.build_reward(7, pretrained.load("mnist-reward", device=where))
        for method in size["search_methods"]:
            g = torch.Generator(device=where).manual_seed(0)
            search.run(method, flow, reward, mode="linear-sde", budget=size["search_budget"], steps=10, runs=1,
                       shape=(1, 28, 28), generator=g, device=where)  # warm-up: kernels, autotuning
            sync(where)
            t0 = time.perf_counter()
            res = search.run(method, flow, reward, mode="linear-sde", budget=size["search_budget"], steps=10,
                             runs=size["search_runs"], shape=(1, 28, 28), generator=g, device=where)
            sync(where)
            rows.append(dict(device=where.type, method=method, runs=size["search_runs"], budget=size["search_budget"],
                             wall_s=time.perf_counter() - t0, reward_mean=res.rewards.double().mean().item()))
    return rows


def fit_steps(seconds: float, size: dict, device: torch.device, train: torch.Tensor, noises: torch.Tensor,
              validator: torch.nn.Module, args) -> dict:
    """The step count whose training and evaluations fit in ``seconds``: times ``size["probe_steps"]``
    training steps of a throwaway model of the same layout and batch (warm-up included, so the estimate
    errs long) and one evaluation, then rounds down to whole evaluation intervals (at least one)."""
    from toyflow.models.unet import UNet
    from toyflow.train import TrainConfig, train_flow

    torch.manual_seed(args.seed + 100)
    cfg = TrainConfig(steps=size["probe_steps"], batch_size=size["batch_size"], lr=args.lr, seed=args.seed + 100,
                      device=str(device), amp=not args.no_amp, checkpoint_every=0, progress=False,
                      t_sampling="logit-normal-mix", warmup=1)
    sync(device)
    t0 = time.perf_counter()
    probe = train_flow(UNet(**size["arch"]), train.to(device), "linear", cfg)
    sync(device)
    step_s = (time.perf_counter() - t0) / size["probe_steps"]
    t0 = time.perf_counter()
    confident_share(euler_samples(probe.model, noises, size["sample_steps"]), validator)
    sync(device)
    eval_s = time.perf_counter() - t0
    per_interval = size["eval_every"] * step_s + eval_s
    intervals = max(1, int(seconds // per_interval))
    steps = min(size["steps"], intervals * size["eval_every"])
    print(f"time budget {seconds:.0f} s: {step_s * 1e3:.1f} ms per step and {eval_s:.1f} s per evaluation "
          f"({size['probe_steps']} probe steps) -> {steps:,} steps", flush=True)
    return dict(seconds=seconds, probe_steps=size["probe_steps"], step_s=step_s, eval_s=eval_s, steps=steps)


def run(args) -> dict:
    from toyflow import metrics, pretrained
    from toyflow.data.mnist import load_mnist
    from toyflow.models.unet import UNet
    from toyflow.train import TrainConfig, train_flow

    size = dict(QUICK if args.quick else FULL)
    for key in ("steps", "batch_size", "eval_every", "eval_samples"):
        if getattr(args, key) is not None:
            size[key] = getattr(args, key)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 where it helps: the fp32 parts (EMA, sampling)
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = load_mnist(args.split, args.data_dir).images
    reference = load_mnist(args.reference_split, args.data_dir).images
    real = size["real"]
    if reference.shape[0] < 2 * real:
        raise ValueError(f"--reference-split {args.reference_split} has {reference.shape[0]} digits; the report needs "
                         f"{2 * real} (two disjoint sets for the real-vs-real floor)")
    seen = [name for name, split in CLASSIFIER_SPLITS.items() if split == args.reference_split]
    if args.reference_split == args.split:
        seen.append("the flow")
    validator = pretrained.load("mnist-reward", device=device)
    evaluator = pretrained.load("mnist-evaluator", device=device)
    real_ref, real_floor = reference[:real].to(device), reference[real:2 * real].to(device)
    real_validation_share, _ = confident_share(real_ref, validator)
    target = real_validation_share - args.target_gap / 100
    noises = torch.randn(size["eval_samples"], 1, 28, 28, generator=torch.Generator().manual_seed(args.seed + 1)).to(device)

    probe = None
    if args.time_budget is not None:  # size the run to the budget before it starts: the cosine schedule stays whole
        probe = fit_steps(args.time_budget, size, device, train, noises, validator, args)
        size["steps"] = probe["steps"]
    torch.manual_seed(args.seed)
    model = UNet(**size["arch"])
    cfg = TrainConfig(steps=size["steps"], batch_size=size["batch_size"], lr=args.lr, ema_decay=args.ema_decay,
                      seed=args.seed, device=str(device), amp=not args.no_amp, checkpoint_every=0,
                      progress=not args.quiet, t_sampling="logit-normal-mix")
    sync(device)
    t_start = time.perf_counter()
    curve = QualityCurve(every=size["eval_every"], noises=noises,
                         sample=lambda m, z: euler_samples(m, z, size["sample_steps"]),
                         validator=validator, target=target, best_path=out / "best", device=device, t_start=t_start)
    res = train_flow(model, train.to(device), "linear", cfg, checkpoint_path=out / "last",
                     extra_config={"dataset": f"mnist-{args.split}", "task": "mnist",
                                   "command": "python bench/gpu_train_mnist.py " + " ".join(sys.argv[1:])},
                     on_step=curve)
    sync(device)
    train_seconds = time.perf_counter() - t_start - curve.eval_seconds

    # the chosen checkpoint, judged once by the evaluator (which chose nothing)
    from toyflow.models import load_model

    best = load_model(out / "best", arch="unet", device=device).float().eval()
    x = euler_samples(best, torch.randn(real, 1, 28, 28, generator=torch.Generator().manual_seed(args.seed + 2)).to(device),
                      size["sample_steps"])
    share, cls = confident_share(x, evaluator)
    real_share, _ = confident_share(real_ref, evaluator)
    freq = (torch.bincount(cls, minlength=10).float() / cls.numel()).tolist()
    fid = metrics.classifier_fid(x, real_ref, evaluator)
    floor = metrics.classifier_fid(real_floor, real_ref, evaluator)
    report = dict(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        split=args.split, reference_split=args.reference_split, reference_seen_by=seen,
        parameters=sum(p.numel() for p in model.parameters()), steps=size["steps"], batch_size=size["batch_size"],
        amp=cfg.amp and device.type == "cuda", train_seconds=train_seconds, steps_per_second=size["steps"] / train_seconds,
        samples_per_second=size["steps"] * size["batch_size"] / train_seconds, eval_seconds=curve.eval_seconds,
        real_validation_share=real_validation_share, target=target, curve=curve.points, time_to_target=curve.time_to_target,
        chosen=curve.best, reported=dict(confident_share=share, real_confident_share=real_share, class_frequencies=freq,
                                         fid=fid, fid_floor=floor, samples=real),
        last_checkpoint=str(res.checkpoint), best_checkpoint=str(out / "best.safetensors"), time_budget=probe,
    )
    if not args.no_search:
        report["search"] = time_search(device, size, args.data_dir)
    return report


def markdown(r: dict) -> str:
    lines = [f"## MNIST flow training on {r['device']}", "",
             f"{r['parameters']:,} parameters, {r['steps']:,} steps of batch {r['batch_size']}, flow on `{r['split']}`, "
             f"bf16 autocast {'on' if r['amp'] else 'off'}: **{r['steps_per_second']:.2f} steps/s** "
             f"({r['samples_per_second']:,.0f} samples/s; training {r['train_seconds']:.0f} s, the evaluations' "
             f"{r['eval_seconds']:.0f} s excluded)."
             + (f" Steps set by a {r['time_budget']['seconds']:.0f} s time budget ({r['time_budget']['step_s'] * 1e3:.1f} ms "
                f"per probe step)." if r.get("time_budget") else ""), "",
             f"Target: validation confident share ≥ {r['target']:.3f} (real `{r['reference_split']}` digits: "
             f"{r['real_validation_share']:.3f}, minus the gap), every class ≥ {COVERAGE:.0%} of the samples. "
             + (f"**Met at step {r['time_to_target']['step']:,}, {r['time_to_target']['train_s']:.0f} s of training.**"
                if r["time_to_target"] else "**Not met** within the run."), "",
             "| step | training s | validation confident share | rarest class |", "|---|---|---|---|"]
    lines += [f"| {p['step']:,} | {p['train_s']:.0f} | {p['validation_share']:.3f} | {p['rarest_class']:.3f} |"
              for p in r["curve"]]
    q = r["reported"]
    lines += ["", f"Chosen by the validation classifier: step {r['chosen']['step']:,}. The evaluator on it "
              f"({q['samples']} samples): confident {q['confident_share']:.3f} (real digits {q['real_confident_share']:.3f}), "
              f"class frequencies {min(q['class_frequencies']):.3f}–{max(q['class_frequencies']):.3f}, "
              f"FID {q['fid']:.1f} (real-vs-real floor {q['fid_floor']:.1f})."]
    if r["reference_seen_by"]:
        lines += ["", f"Caveat: the reference split `{r['reference_split']}` was seen in training by "
                  f"{', '.join(r['reference_seen_by'])}; those figures are not held out."]
    if "search" in r:
        lines += ["", "| search (mnist-thick-7, linear SDE) | device | runs | budget | wall s |", "|---|---|---|---|---|"]
        lines += [f"| {s['method']} | {s['device']} | {s['runs']} | {s['budget']} | {s['wall_s']:.2f} |" for s in r["search"]]
        by = {(s["method"], s["device"]): s["wall_s"] for s in r["search"]}
        ratios = [f"{m}: {by[(m, 'cpu')] / by[(m, 'cuda')]:.1f}×" for m, d in by if d == "cuda" and (m, "cpu") in by]
        if ratios:
            lines += ["", "GPU speed-up over the CPU: " + ", ".join(ratios)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="MNIST IDX folder (default $TOYFLOW_DATA)")
    ap.add_argument("--split", default="train50k", help="the flow's training split (default train50k)")
    ap.add_argument("--reference-split", default="val5k", help="held-out real digits for the target, shares and FID "
                    "(default val5k)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smoke run with --quick)")
    ap.add_argument("--require-cuda", action="store_true", help="exit 1 instead of 0 when there is no CUDA device")
    ap.add_argument("--quick", action="store_true", help="a tiny UNet and a few steps: every code path in seconds")
    ap.add_argument("--steps", type=int, default=None, help=f"training steps (default {FULL['steps']:,})")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="seconds for training and evaluations: a timed probe sets the step count (at most --steps) "
                    "so the whole schedule fits, in whole --eval-every intervals (the lent GPU's 10-minute calls)")
    ap.add_argument("--batch-size", type=int, default=None, help=f"default {FULL['batch_size']}")
    ap.add_argument("--eval-every", type=int, default=None, help=f"steps between evaluations (default {FULL['eval_every']})")
    ap.add_argument("--eval-samples", type=int, default=None, help=f"samples per evaluation (default {FULL['eval_samples']})")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema-decay", type=float, default=0.9995)
    ap.add_argument("--target-gap", type=float, default=5.0, help="points below the real digits' share (default 5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-amp", action="store_true", help="fp32 training (TF32 matmuls) instead of bf16 autocast")
    ap.add_argument("--no-search", action="store_true", help="skip the search timing")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: PyTorch's choice; "
                    "set it on a shared machine, oversubscription slows small models many times)")
    ap.add_argument("--out-dir", default="runs/gpu-mnist", help="checkpoints: OUT/last (+ training state), OUT/best")
    ap.add_argument("--md", default=None, help="also write the report as Markdown here (the JSON goes to OUT/report.json)")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: gpu_train_mnist measured nothing (run it on a GPU machine, or --device cpu --quick "
              "for a smoke run)")
        return 1 if args.require_cuda else 0
    for key in ("steps", "batch_size", "eval_every", "eval_samples"):
        value = getattr(args, key)
        if value is not None and value < 1:
            ap.error(f"--{key.replace('_', '-')} must be >= 1, got {value}")
    if args.time_budget is not None and not args.time_budget > 0:
        ap.error(f"--time-budget must be a number of seconds > 0, got {args.time_budget}")
    if args.threads is not None:
        if args.threads < 1:
            ap.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    report = run(args)
    text = markdown(report)
    print(text)
    from toyflow.checkpoint import atomic_write_text

    atomic_write_text(Path(args.out_dir) / "report.json", json.dumps(report, indent=2) + "\n")
    if args.md:
        atomic_write_text(args.md, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
