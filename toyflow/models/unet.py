"""A small, cheap U-Net velocity model for MNIST: model(x, t) with x: (B, 1, 28, 28), t: (B,).

Layout (default ``channels=(32, 64, 192)``: 2,045,697 parameters; the shipped ``mnist-flow`` adds
``extra_blocks=(1, 2)`` and ``mid_attention``: 2,692,481)::

    28x28 (32 ch)  conv_in ───────────────────────────── + ─ ResBlock ─ conv_out
    14x14 (64 ch)    └ down ─ ResBlock ─────────────── + ─ ResBlock ┘ up
     7x7 (192 ch)              └ down ─ ResBlock x mid_blocks ┘ up

Full resolution is thin (one residual block, on the way up); width sits at 14x14 and 7x7.
Skips are added (not concatenated) to keep the 28x28 convolutions cheap. Every residual block
is GroupNorm -> SiLU -> conv, with the time embedding applied as a per-channel scale and shift.

``extra_blocks=(k28, k14)`` adds residual blocks at 28x28 and 14x14 on both paths, ``mid_attention``
a self-attention block after the first 7x7 block. Both start as the identity (zero-initialised
last layer), so :meth:`UNet.load_smaller` can grow a trained model without changing its output.
"""

from __future__ import annotations

from typing import Mapping

from torch import Tensor, nn

from toyflow.models.mlp import SinusoidalTimeEmbedding

__all__ = ["UNet", "ResBlock", "SelfAttention"]


def _groups(channels: int, max_groups: int) -> int:
    """Largest group count <= max_groups that divides ``channels``."""
    g = min(max_groups, channels)
    while channels % g:
        g -= 1
    return g


class ResBlock(nn.Module):
    """h = conv(SiLU(GN(x))); h = GN(h)(1 + scale) + shift; out = x + conv(SiLU(h)). x: (B, C, H, W), emb: (B, E)."""

    def __init__(self, channels: int, emb_dim: int, max_groups: int = 8):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(channels, max_groups), channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * channels)
        self.norm2 = nn.GroupNorm(_groups(channels, max_groups), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        # each block starts as the identity (what growing a trained model needs; training from
        # scratch with TrainConfig(reinit=True) re-draws every layer with its default init)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return x + self.conv2(nn.functional.silu(h))


class SelfAttention(nn.Module):
    """x + proj(attention(GN(x))) over the H*W positions, ``heads`` heads. x: (B, C, H, W)."""

    def __init__(self, channels: int, heads: int = 4, max_groups: int = 8):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention channels {channels} must be divisible by heads {heads}")
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels, max_groups), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)  # starts as the identity
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).transpose(-1, -2).unbind(1)
        h = nn.functional.scaled_dot_product_attention(q, k, v)  # (B, heads, H*W, C/heads)
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class UNet(nn.Module):
    """Velocity model for MNIST: model(x, t) -> velocity, x: (B, 1, 28, 28), t: (B,) in [0, 1].

    ``channels``: widths at 28x28, 14x14, 7x7; ``mid_blocks``: residual blocks at 7x7;
    ``time_dim``: sinusoidal features; ``emb_dim``: width of the time-embedding MLP;
    ``extra_blocks``: (k28, k14) more residual blocks at 28x28 and 14x14 on both paths; ``mid_attention``:
    self-attention at 7x7. The defaults give the layout drawn in the module docstring.
    """

    arch = "unet"
    image_shape = (1, 28, 28)

    def __init__(
        self,
        channels: tuple[int, int, int] = (32, 64, 192),
        mid_blocks: int = 2,
        time_dim: int = 64,
        emb_dim: int = 256,
        max_groups: int = 8,
        extra_blocks: tuple[int, int] = (0, 0),
        mid_attention: bool = False,
    ):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) != 3 or min(channels) < 1:
            raise ValueError(f"channels must be three positive widths (28x28, 14x14, 7x7), got {channels}")
        if mid_blocks < 1:
            raise ValueError(f"mid_blocks must be >= 1, got {mid_blocks}")
        extra_blocks = tuple(int(k) for k in extra_blocks)
        if len(extra_blocks) != 2 or min(extra_blocks) < 0:
            raise ValueError(f"extra_blocks must be two counts >= 0 (at 28x28, 14x14), got {extra_blocks}")
        self.channels, self.mid_blocks = channels, int(mid_blocks)
        self.extra_blocks, self.mid_attention = extra_blocks, bool(mid_attention)
        self.time_dim, self.emb_dim, self.max_groups = int(time_dim), int(emb_dim), int(max_groups)
        c0, c1, c2 = channels

        self.time_embed = nn.Sequential(
            SinusoidalTimeEmbedding(time_dim),
            nn.Linear(time_dim, emb_dim),
            nn.SiLU(),
            nn.Linear(emb_dim, emb_dim),
            nn.SiLU(),
        )
        self.conv_in = nn.Conv2d(1, c0, 3, padding=1)
        self.down1 = nn.Conv2d(c0, c1, 3, stride=2, padding=1)  # 28 -> 14
        self.block1_down = ResBlock(c1, emb_dim, max_groups)
        self.down2 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)  # 14 -> 7
        self.mid = nn.ModuleList(ResBlock(c2, emb_dim, max_groups) for _ in range(mid_blocks))
        self.attention = SelfAttention(c2, max_groups=max_groups) if mid_attention else None
        k0, k1 = extra_blocks
        self.extra_down0 = nn.ModuleList(ResBlock(c0, emb_dim, max_groups) for _ in range(k0))
        self.extra_down1 = nn.ModuleList(ResBlock(c1, emb_dim, max_groups) for _ in range(k1))
        self.extra_up1 = nn.ModuleList(ResBlock(c1, emb_dim, max_groups) for _ in range(k1))
        self.extra_up0 = nn.ModuleList(ResBlock(c0, emb_dim, max_groups) for _ in range(k0))
        self.up2 = nn.ConvTranspose2d(c2, c1, 2, stride=2)  # 7 -> 14
        self.block1_up = ResBlock(c1, emb_dim, max_groups)
        self.up1 = nn.ConvTranspose2d(c1, c0, 2, stride=2)  # 14 -> 28
        self.block0_up = ResBlock(c0, emb_dim, max_groups)
        self.norm_out = nn.GroupNorm(_groups(c0, max_groups), c0)
        self.conv_out = nn.Conv2d(c0, 1, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # the untrained model predicts zero velocity
        nn.init.zeros_(self.conv_out.bias)

    def config(self) -> dict:
        return {
            "channels": list(self.channels),
            "mid_blocks": self.mid_blocks,
            "time_dim": self.time_dim,
            "emb_dim": self.emb_dim,
            "max_groups": self.max_groups,
            "extra_blocks": list(self.extra_blocks),
            "mid_attention": self.mid_attention,
        }

    def load_smaller(self, state: Mapping[str, Tensor], config: Mapping) -> list[str]:
        """Load the weights of a trained UNet with the same widths and fewer blocks (``state``,
        ``config``: its state dict and ``config()``). The blocks it lacks keep their identity
        initialisation, so the grown model computes what the smaller one did. Returns the names
        of the parameters that were not loaded (the new ones)."""
        mine = self.config()
        for key in ("channels", "mid_blocks", "time_dim", "emb_dim", "max_groups"):
            theirs = config.get(key, mine[key])
            if (list(theirs) if key == "channels" else theirs) != mine[key]:
                raise ValueError(f"cannot grow from a UNet with {key}={theirs}; this one has {key}={mine[key]} "
                                 "(only extra_blocks and mid_attention may differ)")
        more_blocks = any(a > b for a, b in zip(config.get("extra_blocks", (0, 0)), self.extra_blocks))
        if more_blocks or (config.get("mid_attention", False) and not self.mid_attention):
            raise ValueError(f"the checkpoint's UNet ({dict(config)}) is larger than this one ({mine}); nothing to grow")
        own = self.state_dict()
        unknown = [k for k in state if k not in own or own[k].shape != state[k].shape]
        if unknown:
            raise ValueError(f"checkpoint tensors do not fit this UNet: {unknown[:5]}")
        self.load_state_dict(dict(state), strict=False)
        return [k for k in own if k not in state]

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"UNet expects x of shape (B, 1, 28, 28), got {tuple(x.shape)}; "
                "reshape flat digits with x.view(-1, 1, 28, 28)"
            )
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}")
        emb = self.time_embed(t.to(x.dtype))  # (B, emb_dim)
        h0 = self.conv_in(x)  # (B, c0, 28, 28)
        for block in self.extra_down0:
            h0 = block(h0, emb)
        h1 = self.block1_down(self.down1(h0), emb)  # (B, c1, 14, 14)
        for block in self.extra_down1:
            h1 = block(h1, emb)
        h = self.down2(h1)  # (B, c2, 7, 7)
        for i, block in enumerate(self.mid):
            h = block(h, emb)
            if i == 0 and self.attention is not None:
                h = self.attention(h)
        h = self.block1_up(self.up2(h) + h1, emb)  # (B, c1, 14, 14)
        for block in self.extra_up1:
            h = block(h, emb)
        h = self.block0_up(self.up1(h) + h0, emb)  # (B, c0, 28, 28)
        for block in self.extra_up0:
            h = block(h, emb)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))
