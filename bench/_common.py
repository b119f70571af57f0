"""Helpers shared by the bench scripts (run as ``python bench/NAME.py``, so ``bench/`` is on sys.path)."""

from __future__ import annotations

import contextlib
from collections import Counter

import torch

__all__ = ["CallLogger", "ReplayModel", "HOST_READS", "count_host_reads"]

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
    ``sum(sizes)`` rows evaluated."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.sizes: list[int] = []

    def forward(self, x, t):
        self.sizes.append(x.shape[0])
        return self.model(x, t)


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
