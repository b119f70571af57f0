"""Helpers shared by the bench scripts (run as ``python bench/NAME.py``, so ``bench/`` is on sys.path)."""

from __future__ import annotations

import torch

__all__ = ["CallLogger", "ReplayModel"]


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
