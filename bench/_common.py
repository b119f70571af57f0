"""Helpers shared by the bench scripts (run as ``python bench/NAME.py``, so ``bench/`` is on sys.path)."""

from __future__ import annotations

import torch

__all__ = ["CallLogger"]


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
