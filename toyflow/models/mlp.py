"""A small velocity MLP for 2D (or any flat) data, with a sinusoidal time embedding."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["SinusoidalTimeEmbedding", "VelocityMLP"]


class SinusoidalTimeEmbedding(nn.Module):
    """t: (B,) in [0, 1] -> (B, dim) features [sin(w_i t), cos(w_i t)], frequencies 1..max_freq (geometric)."""

    def __init__(self, dim: int = 32, max_freq: float = 1000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"time embedding dim must be even, got {dim}")
        freqs = torch.exp(torch.linspace(0.0, math.log(max_freq), dim // 2))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        arg = t[:, None].to(self.freqs.dtype) * self.freqs[None, :]  # (B, dim/2)
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


class VelocityMLP(nn.Module):
    """model(x, t) -> velocity, x: (B, dim), t: (B,)."""

    arch = "mlp"

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, time_dim: int = 32):
        super().__init__()
        self.dim, self.hidden, self.depth, self.time_dim = dim, hidden, depth, time_dim
        self.time_embed = SinusoidalTimeEmbedding(time_dim)
        layers: list[nn.Module] = [nn.Linear(dim + time_dim, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)

    def config(self) -> dict:
        return {"dim": self.dim, "hidden": self.hidden, "depth": self.depth, "time_dim": self.time_dim}

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"VelocityMLP expects x of shape (B, {self.dim}), got {tuple(x.shape)}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}")
        h = torch.cat([x, self.time_embed(t).to(x.dtype)], dim=-1)
        return self.net(h)
