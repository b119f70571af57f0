"""Light image augmentation for classifier training."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["random_shift"]


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator, *, fill: float = -1.0) -> Tensor:
    """Shift each image by its own integer offset (dy, dx) in [-max_shift, max_shift], filling with ``fill``.

    x: (B, C, H, W) -> (B, C, H, W). ``fill`` defaults to -1, the background of [-1, 1] images.
    Offsets are drawn with ``generator`` (on its own device) and moved to ``x``'s device.
    """
    if x.dim() != 4:
        raise ValueError(f"random_shift expects images of shape (B, C, H, W), got {tuple(x.shape)}")
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    if max_shift == 0:
        return x.clone()
    b, _, h, w = x.shape
    m = int(max_shift)
    offsets = torch.randint(0, 2 * m + 1, (2, b), generator=generator, device=generator.device).to(x.device)
    padded = torch.nn.functional.pad(x, (m, m, m, m), value=fill)  # (B, C, H+2m, W+2m)
    rows = offsets[0][:, None] + torch.arange(h, device=x.device)[None, :]  # (B, H)
    cols = offsets[1][:, None] + torch.arange(w, device=x.device)[None, :]  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()
