"""Flow-map distillation: a small 2D velocity MLP whose x0_hat is the mixture's exact ODE flow map.

The trained-model counterpart of :class:`toyflow.models.FlowMapOracle` (what a timestep-distilled
model such as FLUX.1-schnell is to its teacher): a :class:`toyflow.models.VelocityMLP` on the
Linear path trained so that

    x - t * mlp(x, t) ~ Phi(x, t)        for x = x_t = (1 - t) x0 + t x1,  x0 ~ p_0, x1 ~ N(0, I), t in (0, 1],

Phi the exact flow map from t down to 0. One Euler step from t = 1 (x0 = z - mlp(z, 1)) is then a
one-step sampler, and every x0_hat the search methods read is sharp. Targets come from the oracle,
computed once for a pool of (x_t, t) pairs (the oracle costs ~300 mixture evaluations a call,
the network one forward pass).

    python -m toyflow.distill --task rare-mode --scale 8 --out runs/2d-rare-mode-x8-flowmap

writes ``OUT.safetensors`` + ``OUT.json`` in the format of the shipped 2D MLPs (``toyflow.models.save_model``);
the JSON records the command, ``"objective": "flow-map distillation"``, the task and the scale.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from toyflow.models import FlowMapOracle, GaussianMixtureFlow, VelocityMLP, save_model
from toyflow.train import warmup_cosine_lr

__all__ = [
    "DistillConfig",
    "FlowMapPairs",
    "flow_map_pairs",
    "flow_map_loss",
    "train_flow_map_mlp",
    "flow_map_error",
    "main",
]


@dataclass(frozen=True)
class DistillConfig:
    """Settings of :func:`train_flow_map_mlp` (recorded in the checkpoint's JSON as ``train_config``)."""

    steps: int = 50000
    batch_size: int = 256
    lr: float = 2e-3
    lr_final_ratio: float = 0.02  # cosine decay to lr * lr_final_ratio after a linear warm-up
    warmup: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    pool_size: int = 65536  # (x_t, t, target) pairs computed once with the oracle (train error = held-out)
    t_one_share: float = 0.25  # share of the pool at t = 1 exactly (the one-step sampler's input)
    t_power: float = 2.0  # the rest: t = 1 - u^p, u ~ U[0, 1): density p^-1 (1 - t)^(1/p - 1) >= 1/p, more near t = 1
    oracle_steps: int = 48  # FlowMapOracle steps for the targets
    hidden: int = 128
    depth: int = 3
    time_dim: int = 32

    def __post_init__(self):
        for name in ("steps", "batch_size", "pool_size", "oracle_steps", "hidden", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.t_one_share <= 1:
            raise ValueError(f"t_one_share must be in [0, 1], got {self.t_one_share}")
        if not self.t_power >= 1:
            raise ValueError(f"t_power must be >= 1, got {self.t_power}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


@dataclass(frozen=True)
class FlowMapPairs:
    """A pool of training pairs: x (N, D) = x_t, t (N,), u (N, D) the oracle velocity (x - Phi(x, t)) / t."""

    x: Tensor
    t: Tensor
    u: Tensor

    @property
    def x0(self) -> Tensor:
        """The targets' x0: Phi(x, t) = x - t u."""
        return self.x - self.t[:, None] * self.u


def data_spread(gmm: GaussianMixtureFlow) -> float:
    """L = sqrt(trace Cov(x0)) of the mixture: its RMS distance from its mean (the data's length scale)."""
    w, mu = gmm.weights.to(torch.float64), gmm.means.to(torch.float64)
    spread = (w * (mu - w @ mu).square().sum(1)).sum()
    if gmm.isotropic:
        within = (w * gmm.stds.to(torch.float64) ** 2).sum() * gmm.dim
    else:
        within = (w * torch.diagonal(gmm.covariances.to(torch.float64), dim1=-2, dim2=-1).sum(-1)).sum()
    return float((spread + within).sqrt())


def flow_map_pairs(
    gmm: GaussianMixtureFlow,
    n: int,
    generator: torch.Generator,
    *,
    t_one_share: float = 0.25,
    t_power: float = 1.0,
    oracle: Optional[FlowMapOracle] = None,
    chunk: int = 4096,
    progress: bool = False,
) -> FlowMapPairs:
    """n pairs: x_t = (1 - t) x0 + t x1 (x0 ~ gmm, x1 ~ N(0, I)), t = 1 with probability ``t_one_share``,
    else t = 1 - u^p, u ~ U[0, 1), p = ``t_power`` (1: t ~ U(0, 1]; 2: more weight at high noise, where the
    flow map is hardest to fit, every t keeping density >= 1/p); targets u = (x_t - Phi(x_t, t)) / t from the oracle (float64, then float32)."""
    oracle = oracle if oracle is not None else FlowMapOracle(gmm)
    x0 = gmm.sample(n, generator, dtype=torch.float64).reshape(n, -1)
    x1 = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    if not (t_power >= 1 and 0 <= t_one_share <= 1):
        raise ValueError(f"need t_power >= 1 and t_one_share in [0, 1], got {t_power}, {t_one_share}")
    t = 1 - torch.rand(n, generator=generator, dtype=torch.float64) ** t_power  # (0, 1]
    t = torch.where(torch.rand(n, generator=generator, dtype=torch.float64) < t_one_share, torch.ones_like(t), t)
    x = (1 - t)[:, None] * x0 + t[:, None] * x1
    us = []
    with torch.no_grad():
        for i in tqdm(range(0, n, chunk), desc="flow-map targets", disable=not progress):
            us.append(oracle(x[i : i + chunk].reshape((-1,) + gmm.shape), t[i : i + chunk]).reshape(-1, x.shape[1]))
    return FlowMapPairs(x.float(), t.float(), torch.cat(us).float())


def flow_map_loss(model, x: Tensor, t: Tensor, u_target: Tensor, length_scale: float = 1.0,
                  eps: float = 0.01) -> Tensor:
    """Mean pseudo-Huber norm of the velocity error: sqrt(||model(x, t) - u*||^2 / L^2 + eps^2) - eps,
    u* = (x - Phi(x, t)) / t the oracle's velocity, L the data's spread (:func:`data_spread`).

    Why this loss:
    - velocity space, not x0 space: the x0 error is t times the velocity error, so an x0 loss
      vanishes as t -> 0 and leaves the small-t velocity (which multi-step samplers use)
      untrained, while u* is O(L + 1) at every t (the mixture's velocity as t -> 0, z - Phi(z, 1)
      at t = 1): this loss weighs all times alike and, at large t, is the x0 error itself;
    - divided by L: a relative error, the same size for a task at scale 1 and at scale 8, so the
      learning rate and the gradient clipping mean the same thing for both;
    - the norm, not its square (quadratic only below eps): at high noise the flow map is nearly
      discontinuous across the boundaries between modes; under a squared loss the few rows a small
      network cannot fit there dominate the gradient and blur the rest, while the norm (a median-like
      fit) keeps the map sharp. Measured on rare-mode x8 (same budget): mean |x0_hat - Phi| / std
      0.18 -> 0.13 at t = 1 and 0.047 -> 0.018 at t = 0.5.
    """
    sq = (model(x, t) - u_target).square().sum(1) / length_scale**2
    return ((sq + eps * eps).sqrt() - eps).mean()


def _init_weights(model: torch.nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn from ``generator``."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                bound = 1 / math.sqrt(m.in_features)
                m.weight.uniform_(-bound, bound, generator=generator)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=generator)


def train_flow_map_mlp(
    gmm: GaussianMixtureFlow,
    config: DistillConfig = DistillConfig(),
    *,
    pairs: Optional[FlowMapPairs] = None,
    progress: bool = False,
    **overrides,
) -> VelocityMLP:
    """Train a :class:`VelocityMLP` with x - t mlp(x, t) ~ Phi(x, t) (see :func:`flow_map_loss`).

    ``train_flow_map_mlp(gmm, steps=..., batch_size=..., lr=..., seed=...)``: keyword overrides of
    :class:`DistillConfig`. ``pairs`` reuses a pool from :func:`flow_map_pairs` (else one of
    ``pool_size`` is drawn from ``seed``). Adam, warm-up then cosine decay, gradient clipping; returns
    the EMA weights (eval mode, float32). All randomness comes from generators seeded by ``seed``.
    """
    if not isinstance(gmm, GaussianMixtureFlow) or len(gmm.shape) != 1:
        raise ValueError("train_flow_map_mlp needs a GaussianMixtureFlow over flat vectors (shape (D,))")
    cfg = DistillConfig(**{**asdict(config), **overrides})
    g = torch.Generator().manual_seed(cfg.seed)
    if pairs is None:
        oracle = FlowMapOracle(gmm, cfg.oracle_steps)
        pairs = flow_map_pairs(gmm, cfg.pool_size, g, t_one_share=cfg.t_one_share, t_power=cfg.t_power, oracle=oracle,
                               progress=progress)
    L = data_spread(gmm)
    model = VelocityMLP(dim=gmm.dim, hidden=cfg.hidden, depth=cfg.depth, time_dim=cfg.time_dim)
    _init_weights(model, g)
    ema = VelocityMLP(**model.config())
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    n = pairs.x.shape[0]
    bar = tqdm(range(cfg.steps), desc="flow-map distillation", disable=not progress)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = warmup_cosine_lr(step, cfg)
        idx = torch.randint(0, n, (cfg.batch_size,), generator=g)
        loss = flow_map_loss(model, pairs.x[idx], pairs.t[idx], pairs.u[idx], L)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower the learning rate (lr={cfg.lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), model.parameters()):
                pe.lerp_(p, 1 - decay)
        if progress and step % 200 == 0:
            bar.set_postfix(loss=f"{loss.item():.2e}")
    return ema.eval()


def flow_map_error(model, gmm: GaussianMixtureFlow, t: float, n: int, generator: torch.Generator,
                   oracle: Optional[FlowMapOracle] = None) -> Tensor:
    """|x0_hat - Phi(x_t, t)| per row (n,) on fresh exact draws of x_t, x0_hat = x - t model(x, t)."""
    oracle = oracle if oracle is not None else FlowMapOracle(gmm)
    x = gmm.sample_marginal(n, t, generator=generator, dtype=torch.float64)
    tt = torch.full((n,), float(t))
    with torch.no_grad():
        x0_hat = x.float() - tt[:, None] * model(x.float(), tt)
        return (x0_hat.double() - oracle.flow_map(x, float(t))).norm(dim=1)


# ---- command line -------------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    from toyflow import rewards

    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m toyflow.distill", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True, choices=rewards.TASKS, help="the toy task (rewards.task)")
    p.add_argument("--scale", type=float, default=8.0, help="data scale c of rewards.task(name, scale=c) (default 8)")
    p.add_argument("--out", required=True, help="checkpoint path without suffix (writes OUT.safetensors, OUT.json)")
    d = DistillConfig()
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--pool-size", type=int, default=d.pool_size)
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--depth", type=int, default=d.depth)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = DistillConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        pool_size=args.pool_size, hidden=args.hidden, depth=args.depth)
    gmm, _ = rewards.task(args.task, scale=args.scale)
    t0 = time.perf_counter()
    model = train_flow_map_mlp(gmm, cfg, progress=not args.quiet)
    wall = time.perf_counter() - t0
    g = torch.Generator().manual_seed(10_000 + args.seed)  # held out: not the training pool's stream
    std = float(gmm.stds.min()) if gmm.isotropic else float(torch.linalg.eigvalsh(gmm.covariances).min().sqrt())
    errors = {f"{t:g}": round(float(flow_map_error(model, gmm, t, 2048, g).mean()) / std, 4) for t in (0.2, 0.5, 0.8, 1.0)}
    label = args.task if args.scale == 1 else f"{args.task}-x{args.scale:g}"
    save_model(
        args.out, model,
        command=" ".join(["python -m toyflow.distill"] + argv),
        objective="flow-map distillation",
        task=args.task, scale=args.scale, dataset=label, schedule="linear", step=cfg.steps,
        distilled_from=f"toyflow.models.FlowMapOracle(rewards.task({args.task!r}, scale={args.scale:g})[0], "
                       f"steps={cfg.oracle_steps})",
        train_config=asdict(cfg),
        heldout_x0_error_over_std=errors, train_seconds=round(wall, 1),
    )
    print(f"trained in {wall:.0f} s; held-out mean |x0_hat - Phi| / std at t = {errors}")
    print(f"checkpoint: {Path(args.out)}.safetensors / .json")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
