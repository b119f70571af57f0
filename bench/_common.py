"""Helpers shared by the bench scripts (run as ``python bench/NAME.py``, so ``bench/`` is on sys.path)."""

from __future__ import annotations

import contextlib
import time
from collections import Counter

import torch

__all__ = ["CallLogger", "ReplayModel", "HOST_READS", "count_host_reads", "sync", "CONFIDENT", "COVERAGE",
           "confident_share", "QualityCurve"]

# the torch.Tensor methods that hand a value to Python or a host array: each is a device sync on a GPU
HOST_READS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy")


@contextlib.contextmanager
def count_host_reads(phase: list | None = None):
    """Count calls of the :data:`HOST_READS` methods while the block runs; yields a Counter keyed by
    ``(phase[0], method name)`` (``phase`` a one-element list the caller may switch mid-run; default
    ``["all"]``). ``sum(counter.values())`` is the number of host reads."""
    counter: Counter = Counter()
    phase = phase if phase is not None else ["all"]
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def wrap(name, fn):
        def counted(self, *args, **kwargs):
            counter[(phase[0], name)] += 1
            return fn(self, *args, **kwargs)

        return counted

    try:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, wrap(name, fn))
        yield counter
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


class CallLogger(torch.nn.Module):
    """Wraps a velocity model and records the batch size of every call: ``len(sizes)`` calls,
    ``sum(sizes)`` rows evaluated; ``seconds`` adds up their wall time (timed where they are made)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.sizes: list[int] = []
        self.seconds = 0.0

    def forward(self, x, t):
        self.sizes.append(x.shape[0])
        t0 = time.perf_counter()
        u = self.model(x, t)
        self.seconds += time.perf_counter() - t0
        return u


class ReplayModel(torch.nn.Module):
    """Wraps a velocity model: the first search through it records every output, later ones get
    those outputs back in order without running the model (``rewind()`` before each). A search
    with fixed generators then takes exactly the same path, so its wall time is the engine's own
    work alone: the bookkeeping between model calls, without the model."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.outputs: list = []
        self.replaying = False
        self.next = 0

    def rewind(self) -> None:
        self.replaying, self.next = True, 0

    def forward(self, x, t):
        if not self.replaying:
            u = self.model(x, t)
            self.outputs.append(u.detach())
            return u
        u = self.outputs[self.next]
        if u.shape != x.shape:
            raise RuntimeError("the replayed search took another path than the recorded one (same generator seed?)")
        self.next += 1
        return u


def sync(device) -> None:
    """Wait for a CUDA device's queue (timings); nothing on the CPU."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# ---- MNIST quality during training: bench/gpu_train_mnist.py, bench/distill_fewstep_mnist.py ------
CONFIDENT = 0.9  # the project's confident-share threshold (max softmax probability)
COVERAGE = 0.05  # every digit class at least this frequent among the samples (a collapsed flow can be "confident")


def confident_share(images: torch.Tensor, classifier: torch.nn.Module) -> tuple[float, torch.Tensor]:
    """(share with max softmax >= 0.9, argmax classes (B,)) of images (B, 1, 28, 28) in [-1, 1]."""
    with torch.no_grad():
        conf, cls = torch.softmax(classifier(images.clamp(-1, 1)).float(), 1).max(1)
    return (conf >= CONFIDENT).sum().item() / conf.numel(), cls  # a count over n: exact in float64


class QualityCurve:
    """The ``on_step`` hook of train_flow (and fewstep.distill_few_step): every ``every`` steps, samples
    ``sample(ema, noises)`` from the EMA weights on fixed noises, the validation classifier's confident
    share and rarest class, and the best weights so far (saved to ``best_path``). ``target`` (None: none)
    is the share that, with every class covered, counts as reaching the quality target. Its own time is
    kept apart, so training time excludes evaluation. ``validator_name`` is recorded with the best weights."""

    def __init__(self, *, every, noises, sample, validator, target, best_path, device, t_start,
                 validator_name: str = "mnist-reward"):
        self.every, self.noises, self.sample, self.validator_name = every, noises, sample, validator_name
        self.validator, self.target, self.best_path, self.device = validator, target, best_path, device
        self.t_start, self.eval_seconds = t_start, 0.0
        self.points: list[dict] = []  # one per evaluation: step, train_s, validation_share, eval_s
        self.best: dict | None = None
        self.time_to_target: dict | None = None

    def __call__(self, step: int, ema: torch.nn.Module) -> None:
        if step % self.every:
            return
        from toyflow.models import save_model  # here: the bench helpers above need no toyflow import

        sync(self.device)
        t0 = time.perf_counter()
        train_s = t0 - self.t_start - self.eval_seconds
        share, cls = confident_share(self.sample(ema, self.noises), self.validator)
        rarest = torch.bincount(cls, minlength=10).min().item() / cls.numel()
        point = dict(step=step, train_s=round(train_s, 2), validation_share=share, rarest_class=rarest)
        rank = (rarest >= COVERAGE, share)
        if self.best is None or rank > (self.best["rarest_class"] >= COVERAGE, self.best["validation_share"]):
            self.best = point
            save_model(self.best_path, ema, step=step, chosen_by=self.validator_name, validation_share=share,
                       rarest_class=rarest)
        if self.time_to_target is None and self.target is not None and share >= self.target and rarest >= COVERAGE:
            self.time_to_target = point
        sync(self.device)
        point["eval_s"] = round(time.perf_counter() - t0, 2)
        self.eval_seconds += point["eval_s"]
        self.points.append(point)
        print(f"step {step}: validation confident share {share:.3f}"
              + (f" (target {self.target:.3f})" if self.target is not None else "") + ", rarest class "
              f"{rarest:.3f} (need {COVERAGE}), {train_s:.0f} s of training", flush=True)
