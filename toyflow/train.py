"""Training: conditional flow matching for any interpolant, and digit classifiers.

Flow matching loss (t = 0 data, t = 1 noise), x_t = alpha_t x_0 + sigma_t x_1:

    L = E_{t, x_0, x_1} || model(x_t, t) - (d_alpha_t x_0 + d_sigma_t x_1) ||^2

A third loss, Euler distillation (:func:`train_euler_distillation`), fine-tunes a trained flow so that
N uniform Euler steps land where many steps of the original would (see its docstring for the cost).

One loop serves all losses: Adam, cosine learning-rate decay after a short warm-up, gradient
clipping, EMA weights, tqdm progress, seeded through ``torch.Generator``s, device chosen
automatically (cuda, mps, cpu) or given, bf16 autocast on CUDA, checkpoints (safetensors + JSON,
atomic) with exact resume, and data-parallel training under ``torchrun`` (DDP; gloo on CPU,
nccl on GPU): every rank draws its own batches, gradients are averaged, so all ranks hold the
same weights.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from toyflow import checkpoint
from toyflow.interpolants import Interpolant, get
from toyflow.models import load_model, save_model

__all__ = [
    "TrainConfig",
    "TrainResult",
    "pick_device",
    "warmup_cosine_lr",
    "flow_matching_loss",
    "CoupledPairs",
    "make_reflow_pairs",
    "train_flow",
    "command_history",
    "euler_window_target",
    "euler_distillation_loss",
    "train_euler_distillation",
    "train_classifier",
]

log = logging.getLogger(__name__)

DataSource = Union[Tensor, Callable[[int, torch.Generator], Tensor]]


@dataclass(frozen=True)
class CoupledPairs:
    """Training data with its noise fixed: row i of ``data`` (t = 0) is paired with row i of ``noise``
    (t = 1), e.g. a flow's own noise -> sample pairs for reflow (rectified flow), which straightens
    the paths so that few Euler steps track the ODE. Both (N, *shape), same N and shape.
    """

    data: Tensor
    noise: Tensor

    def __post_init__(self):
        if not (torch.is_tensor(self.data) and torch.is_tensor(self.noise)):
            raise TypeError("CoupledPairs needs two tensors: data (N, *shape) and noise (N, *shape)")
        if self.data.shape != self.noise.shape:
            raise ValueError(f"CoupledPairs: data {tuple(self.data.shape)} and noise {tuple(self.noise.shape)} "
                             "must have the same shape (row i of each is one pair)")
        if self.data.dim() < 2 or self.data.shape[0] == 0:
            raise ValueError(f"CoupledPairs needs a non-empty batch of pairs (N, *shape), got {tuple(self.data.shape)}")

    @classmethod
    def from_folder(cls, folder: Union[str, Path]) -> "CoupledPairs":
        """Read the shards ``pairs-NN`` (safetensors ``samples`` and ``noise`` + JSON) that
        :func:`make_reflow_pairs` writes, in name order; all must come from one flow, steps and seed."""
        folder = Path(folder)
        shards = sorted(folder.glob("pairs-*.json"))  # the JSON is written last: a listed shard is complete
        if not shards:
            raise FileNotFoundError(f"no pairs-*.safetensors shards in {folder}; make them with "
                                    "python bench/reflow_pairs.py --flow CHECKPOINT --out FOLDER")
        data, noise, origin = [], [], None
        for shard in shards:
            tensors, config = checkpoint.load(shard.with_suffix(""))
            if set(tensors) != {"samples", "noise"}:
                raise ValueError(f"{shard.with_suffix('')} holds {sorted(tensors)}, expected the tensors 'samples' and 'noise'")
            source = {k: config.get(k) for k in ("flow", "steps", "seed")}
            if origin is not None and source != origin:
                raise ValueError(f"{shard} was made by {source}, the shards before it by {origin}; "
                                 "keep the pairs of one flow, steps and seed in one folder")
            origin = source
            data.append(tensors["samples"])
            noise.append(tensors["noise"])
        return cls(data=torch.cat(data), noise=torch.cat(noise))


def make_reflow_pairs(
    flow: nn.Module,
    folder: Union[str, Path],
    *,
    generator_seed: int,
    shape: tuple[int, ...] = (1, 28, 28),
    steps: int = 100,
    shards: int = 10,
    shard_size: int = 1000,
    batch: int = 250,
    source: str = "",
    progress: bool = True,
) -> list[Path]:
    """Write a flow's own noise -> sample pairs (linear ODE, ``steps`` Euler steps) for reflow.

    Noises of ``shape`` (default one MNIST image) come from one generator seeded with
    ``generator_seed``, ``batch`` per model call. Shard k is ``folder/pairs-kk`` (safetensors ``noise``, ``samples`` of shape (shard_size, *shape)
    + JSON: source flow, steps, seed), written atomically by :func:`toyflow.checkpoint.save`.
    Finished shards are skipped on a rerun, their noises still drawn, so an interrupted run
    continues to exactly the pairs one uninterrupted run gives. Returns the shard paths.
    """
    from toyflow import dynamics

    if shard_size % batch != 0:
        raise ValueError(f"shard_size {shard_size} must be a multiple of batch {batch}")
    folder = Path(folder)
    g = torch.Generator().manual_seed(generator_seed)
    paths = []
    for k in tqdm(range(shards), desc="reflow pairs", disable=not progress):
        path = folder / f"pairs-{k:02d}"
        paths.append(path)
        noises = [torch.randn((batch,) + shape, generator=g) for _ in range(shard_size // batch)]
        if checkpoint.checkpoint_paths(path)[1].exists():  # finished by an earlier run
            continue
        with torch.no_grad():
            samples = [dynamics.sample(flow, z, "linear", steps=steps).x for z in noises]
        checkpoint.save(path, {"noise": torch.cat(noises), "samples": torch.cat(samples)},
                        {"kind": "reflow-pairs", "flow": source, "steps": steps, "seed": generator_seed,
                         "shard": k, "pairs": shard_size})
    return paths


T_SAMPLING = ("uniform", "logit-normal-mix")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by flow and classifier training."""

    steps: int = 2000
    batch_size: int = 256
    lr: float = 2e-3
    warmup: int = 100  # linear warm-up steps, then cosine decay to lr * lr_final_ratio
    lr_final_ratio: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    device: str = "auto"  # "auto" picks cuda, then mps, then cpu
    amp: bool = True  # bf16 autocast on CUDA
    amp_cpu: bool = False  # bf16 autocast on CPU too: ~1.6-1.8x faster where the CPU has AVX512-BF16/AMX (bench/RESULTS.md)
    t_min: float = 1e-3  # flow matching: t ~ U(t_min, 1), keeps VP's d_sigma finite
    t_sampling: str = "uniform"  # or "logit-normal-mix": half U(0, 1), half sigmoid(N(0, 1)) (weights mid-path)
    reinit: bool = True  # re-draw the initial weights from ``seed`` (False: fine-tune the given weights)
    checkpoint_every: int = 0  # 0: only at the end
    progress: bool = True
    # the fused AdamW kernel (CPU, CUDA): ~2x faster optimizer step, ~10 % per 2D step; not bit-identical to the
    # default AdamW, so the shipped weights' recorded commands reproduce them only with False
    fused_adamw: bool = False

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not 0 <= self.lr_final_ratio <= 1:
            raise ValueError(f"lr_final_ratio must be in [0, 1], got {self.lr_final_ratio}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.t_min < 1:
            raise ValueError(f"t_min must be in [0, 1), got {self.t_min}")
        if self.t_sampling not in T_SAMPLING:
            raise ValueError(f"unknown t_sampling {self.t_sampling!r}; choose one of {', '.join(T_SAMPLING)}")


@dataclass
class TrainResult:
    """``model`` holds the EMA weights (what you sample with); ``losses`` one value per step."""

    model: nn.Module
    losses: list[float]
    steps: int
    wall_time: float
    device: str
    checkpoint: Optional[Path] = None
    raw_model: Optional[nn.Module] = field(default=None, repr=False)


def pick_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu; any other string is used as given."""
    if device != "auto":
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"unknown device {device!r}; use cpu, cuda, cuda:N, mps or auto") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available; use device='cpu' or 'auto'")
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA devices are visible")
        if dev.type == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise ValueError(f"device {device!r} requested but MPS is not available; use device='cpu' or 'auto'")
        if dev.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"device {device!r} is not supported for training; use cpu, cuda, mps or auto")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def flow_matching_loss(
    model: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    schedule: Interpolant,
    generator: torch.Generator,
    t_min: float = 1e-3,
    t_sampling: str = "uniform",
    noise: Optional[Tensor] = None,
) -> Tensor:
    """Mean squared error between model(x_t, t) and the conditional velocity d_alpha x0 + d_sigma x1.

    x1 ~ N(0, I) drawn with ``generator``, or ``noise`` (same shape as x0) when the pairs are fixed
    (:class:`CoupledPairs`); the times are drawn the same way in both cases.

    t = t_min + (1 - t_min) u with u ~ U(0, 1) (``"uniform"``), or for ``"logit-normal-mix"`` u ~
    U(0, 1) or sigmoid(N(0, 1)) with probability 1/2 each: more weight mid-path, where a digit's
    shape is decided, while every t keeps density >= 1/2.
    """
    B = x0.shape[0]
    u = torch.rand(B, generator=generator, device=generator.device)
    if t_sampling == "logit-normal-mix":
        mid = torch.sigmoid(torch.randn(B, generator=generator, device=generator.device))
        pick = torch.rand(B, generator=generator, device=generator.device) < 0.5
        u = torch.where(pick, mid, u)
    elif t_sampling != "uniform":
        raise ValueError(f"unknown t_sampling {t_sampling!r}; choose one of {', '.join(T_SAMPLING)}")
    t = t_min + (1 - t_min) * u.to(x0.device, x0.dtype)
    if noise is None:
        x1 = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0.device, x0.dtype)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise {tuple(noise.shape)} must have the shape of x0 {tuple(x0.shape)}")
    else:
        x1 = noise.to(x0.device, x0.dtype)
    c = _coefficients(schedule, t)
    shape = (-1,) + (1,) * (x0.dim() - 1)
    xt = c.alpha.reshape(shape) * x0 + c.sigma.reshape(shape) * x1
    target = c.d_alpha.reshape(shape) * x0 + c.d_sigma.reshape(shape) * x1
    return F.mse_loss(model(xt, t).float(), target.float())


def _coefficients(schedule: Interpolant, t: Tensor):
    """schedule(t) for training times drawn in [t_min, 1] by construction: the range check of
    ``Interpolant.__call__`` (three reductions and host syncs per step) is skipped where the class
    does not override ``__call__``; the coefficients are the same."""
    if isinstance(schedule, Interpolant) and type(schedule).__call__ is Interpolant.__call__:
        return schedule.coefficients(t)
    return schedule(t)


# ---- distributed helpers ------------------------------------------------------------------------
def _dist_info() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun if needed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def warmup_cosine_lr(step: int, cfg) -> float:
    """The learning rate at ``step``: linear warm-up over ``cfg.warmup`` steps, then cosine decay from
    ``cfg.lr`` to ``cfg.lr * cfg.lr_final_ratio`` at ``cfg.steps`` (any config with those four fields:
    TrainConfig, distill.DistillConfig, fewstep.FewStepConfig)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    floor = cfg.lr * cfg.lr_final_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _state_path(path: Path) -> Path:
    """The training state beside the checkpoint ``path``: one file, ``path.state.safetensors``."""
    return checkpoint.state_path(path)


def _save_training_state(path: Path, model, ema, opt, generator, step, losses, cfg, extra) -> None:
    """A resumable training state at ``path.state.safetensors`` (one file: weights, EMA, optimizer,
    RNG, losses and step, replaced by one rename: the commit point), then the inference weights
    (EMA) at ``path`` for :func:`toyflow.models.load_model`. A crash before the state's rename
    leaves the previous state; after it, the new one; a resume rewrites the inference pair."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    opt_state = opt.state_dict()
    for i, st in opt_state["state"].items():
        for name, val in st.items():
            tensors[f"opt.{i}.{name}"] = val if torch.is_tensor(val) else torch.tensor(val)
    tensors["rng"] = generator.get_state()
    tensors["losses"] = torch.tensor(losses, dtype=torch.float64)
    checkpoint.save_state(_state_path(path), tensors, {"step": step, "train_config": asdict(cfg), **extra})
    legacy = _state_path(path).with_suffix(".json")  # the older two-file format's JSON, stale from here on
    if legacy.exists():
        legacy.unlink()
    save_model(path, ema, train_config=asdict(cfg), step=step, **extra)


def _load_training_state(path: Path, model, ema, opt, generator) -> tuple[int, list[float], dict]:
    """Restores the state in place; returns (step, losses, the saved JSON config)."""
    where = _state_path(path)
    tensors, config = checkpoint.load_state(where)
    step = config.get("step")
    needed = {"rng", "losses"}
    if not isinstance(step, int) or step < 0 or not needed <= tensors.keys() or tensors["losses"].numel() != step:
        raise checkpoint.CheckpointError(
            f"{where} is not a consistent training state (step {step!r}, "
            f"{tensors['losses'].numel() if 'losses' in tensors else 'no'} losses); train without --resume to start over"
        )
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise ValueError(f"cannot resume from {where}: it holds another architecture ({first}); resume with the "
                         "model options it was trained with, or train without --resume") from None
    opt_state = opt.state_dict()
    for i in opt_state["state"].keys() | {int(k.split(".")[1]) for k in tensors if k.startswith("opt.")}:
        prefix = f"opt.{i}."
        opt_state["state"][i] = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    opt.load_state_dict(opt_state)
    generator.set_state(tensors["rng"])
    return step, tensors["losses"].tolist(), config


# ---- the loop -----------------------------------------------------------------------------------
def _adamw(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW. By default torch's multi-tensor (foreach) implementation: a few kernel calls for all
    parameters instead of a dozen per parameter, and the same arithmetic as the per-parameter loop, bit for
    bit (the recorded commands of the shipped weights still reproduce them exactly; tested). With
    ``cfg.fused_adamw`` (CPU, CUDA) the fused kernel: faster still on small models, but its rounding differs
    in the last bits (2D MLP weights ~1e-6 apart after 4,000 steps)."""
    kw = dict(lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.fused_adamw:
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"fused_adamw=True needs a CPU or CUDA device, got {device}; leave fused_adamw=False")
        return torch.optim.AdamW(model.parameters(), fused=True, **kw)
    if device.type in ("cpu", "cuda"):
        return torch.optim.AdamW(model.parameters(), foreach=True, **kw)
    return torch.optim.AdamW(model.parameters(), **kw)


def _clip_grad_norm(params: list, max_norm: float, device: torch.device) -> None:
    """``torch.nn.utils.clip_grad_norm_(params, max_norm)``, bit for bit, in a handful of kernel
    calls (its Python-side grouping costs more than the 2D MLP's gradients): the total norm of the per-tensor
    norms, the factor min(1, max_norm / (norm + 1e-6)), the gradients scaled by it; on CPU the
    scaling is skipped where the factor is exactly 1 (multiplying by 1 changes nothing)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    if device.type not in ("cpu", "cuda") or len({(g.dtype, g.device) for g in grads}) > 1:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    if device.type == "cpu" and float(coef) == 1.0:
        return
    torch._foreach_mul_(grads, coef)


def _fit(
    model: nn.Module,
    batch_loss: Callable[[nn.Module, torch.Generator, torch.device], Tensor],
    cfg: TrainConfig,
    *,
    checkpoint_path: Optional[Union[str, Path]] = None,
    resume: bool = False,
    extra_config: Optional[dict] = None,
    desc: str = "train",
    on_step: Optional[Callable[[int, nn.Module], None]] = None,
) -> TrainResult:
    """The loop; with a checkpoint path, rank 0 holds the output's lock (a second writer is refused)
    from before the first step to after the last save, and first removes temp files crashes left."""
    rank, _ = _dist_info()
    kw = dict(checkpoint_path=checkpoint_path, resume=resume, extra_config=extra_config, desc=desc, on_step=on_step)
    if checkpoint_path is None or rank != 0:
        return _fit_body(model, batch_loss, cfg, **kw)
    path = Path(checkpoint_path)
    with checkpoint.OutputLock(path, what="checkpoint", flag="--out",
                               command=str((extra_config or {}).get("command", ""))):
        for target in (*checkpoint.checkpoint_paths(path), _state_path(path)):
            checkpoint.clean_stale_temps(target, all_writers=True)
        return _fit_body(model, batch_loss, cfg, **kw)


def _fit_body(
    model: nn.Module,
    batch_loss: Callable[[nn.Module, torch.Generator, torch.device], Tensor],
    cfg: TrainConfig,
    *,
    checkpoint_path: Optional[Union[str, Path]] = None,
    resume: bool = False,
    extra_config: Optional[dict] = None,
    desc: str = "train",
    on_step: Optional[Callable[[int, nn.Module], None]] = None,
) -> TrainResult:
    rank, world = _dist_info()
    device = pick_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if cfg.reinit:  # the same seed gives the same initial weights, on every rank
        torch.manual_seed(cfg.seed)
        for m in model.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    model = model.to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    train_model: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = _adamw(model, cfg, device)
    generator = torch.Generator(device="cpu").manual_seed(cfg.seed * 1000 + rank)  # rank's own batches
    extra = dict(extra_config or {})
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    start, losses = 0, []
    if resume:
        if path is None or not _state_path(path).exists():
            raise FileNotFoundError(f"--resume (resume=True) but no training state found at {_state_path(path) if path else None}; "
                                    "train without --resume first")
        start, losses, saved = _load_training_state(path, model, ema, opt, generator)
        if start > cfg.steps:
            raise ValueError(f"cannot resume {_state_path(path)} with steps={cfg.steps} (--steps): it is already at step "
                             f"{start}; pass --steps {start} or more to continue it, or another --out to start over")
        log.info("resumed from %s at step %d", path, start)
        # a continued run (e.g. more steps) keeps every command that made these weights, in order;
        # resuming an interrupted run with its own command adds nothing
        earlier = list(saved.get("earlier_commands", []))
        if "command" in extra and "command" in saved and saved["command"] != extra["command"]:
            earlier.append(f"{saved['command']}  (to step {start})")
        if earlier:
            extra["earlier_commands"] = earlier
    use_amp = (cfg.amp and device.type == "cuda") or (cfg.amp_cpu and device.type == "cpu")
    params = list(model.parameters())
    ema_params, ema_buffers, buffers = list(ema.parameters()), list(ema.buffers()), list(model.buffers())
    t0 = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), desc=desc, disable=not cfg.progress or rank != 0, initial=start, total=cfg.steps)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = warmup_cosine_lr(step, cfg)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16) if use_amp else contextlib.nullcontext():
            loss = batch_loss(train_model, generator, device)
        value = loss.item()  # the one host sync of a step (the loss is logged anyway)
        if not math.isfinite(value):
            raise FloatingPointError(f"training loss became {value} at step {step}; lower the learning rate (lr={cfg.lr})")
        for p in params:  # = opt.zero_grad(set_to_none=True), without its profiler hooks
            p.grad = None
        loss.backward()
        if cfg.grad_clip > 0:
            _clip_grad_norm(params, cfg.grad_clip, device)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - decay)  # = pe.lerp_(p, 1 - decay) for each pair
            for be, b in zip(ema_buffers, buffers):
                be.copy_(b)
        losses.append(value)
        if step % 20 == 0 and not bar.disable:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}", refresh=False)
        if path is not None and rank == 0 and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
            _save_training_state(path, model, ema, opt, generator, step + 1, losses, cfg, extra)
        if on_step is not None and rank == 0:
            on_step(step + 1, ema)
    wall = time.perf_counter() - t0
    if path is not None and rank == 0:
        _save_training_state(path, model, ema, opt, generator, cfg.steps, losses, cfg, extra)
    return TrainResult(
        model=ema, losses=losses, steps=cfg.steps, wall_time=wall, device=str(device),
        checkpoint=checkpoint.checkpoint_paths(path)[0] if path is not None else None, raw_model=model,
    )


def _draw(data: DataSource, n: int, generator: torch.Generator) -> Tensor:
    if callable(data):
        return data(n, generator)
    idx = torch.randint(0, data.shape[0], (n,), generator=generator)
    return data[idx]


def train_flow(
    model: nn.Module,
    data: Union[DataSource, CoupledPairs],
    schedule: Union[str, Interpolant] = "linear",
    config: TrainConfig = TrainConfig(),
    *,
    checkpoint_path: Optional[Union[str, Path]] = None,
    resume: bool = False,
    extra_config: Optional[dict] = None,
    on_step: Optional[Callable[[int, nn.Module], None]] = None,
) -> TrainResult:
    """Conditional flow matching. ``data``: a tensor (N, *shape) of training points, a sampler
    ``data(n, generator) -> (n, *shape)`` drawing fresh points (the 2D datasets), or
    :class:`CoupledPairs` (data with fixed noise partners: reflow).

    ``on_step(steps_done, ema_model)``, if given, is called after every step (after any checkpoint
    save), e.g. to evaluate the EMA weights every k steps; it must leave ``ema_model`` unchanged.
    Its time counts in ``TrainResult.wall_time``."""
    schedule = get(schedule)
    if torch.is_tensor(data) and data.shape[0] == 0:
        raise ValueError("training data is empty")
    extra = {"schedule": schedule.name, **(extra_config or {})}

    def batch_loss(m, g, device):
        if isinstance(data, CoupledPairs):
            idx = torch.randint(0, data.data.shape[0], (config.batch_size,), generator=g)
            x0, x1 = data.data[idx].to(device), data.noise[idx].to(device)
            return flow_matching_loss(m, x0, schedule, g, config.t_min, config.t_sampling, noise=x1)
        x0 = _draw(data, config.batch_size, g).to(device)
        return flow_matching_loss(m, x0, schedule, g, config.t_min, config.t_sampling)

    return _fit(model, batch_loss, config, checkpoint_path=checkpoint_path, resume=resume, extra_config=extra,
                desc="flow matching", on_step=on_step)


def command_history(config: dict) -> list[str]:
    """Every command that made a checkpoint's weights, in order, from its JSON ``config``: its
    ``earlier_commands``, then its ``command`` with the step it reached. A run that starts from these
    weights (``--init-from``, a distillation teacher) records this list as its ``earlier_commands``."""
    history = list(config.get("earlier_commands", []))
    if "command" in config:
        history.append(f"{config['command']}  (to step {config.get('step')})")
    return history


# ---- Euler distillation ---------------------------------------------------------------------------
def euler_window_target(teacher: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: Tensor, h: float, substeps: int) -> Tensor:
    """The teacher's average velocity over the Euler window [t - h, t]: (x - X_{t-h}) / h, where X is
    the teacher's ODE from (x, t) integrated down to t - h with ``substeps`` Euler steps (no gradient).
    x: (B, *shape), t: (B,) with t - h >= 0."""
    if not (h > 0 and isinstance(substeps, int) and substeps >= 1):
        raise ValueError(f"need a window h > 0 and substeps >= 1, got h={h!r}, substeps={substeps!r}")
    if t.shape != x.shape[:1]:
        raise ValueError(f"t must have shape (B,) = ({x.shape[0]},), got {tuple(t.shape)}")
    if float(t.min()) - h < -1e-6 or float(t.max()) > 1 + 1e-6:
        raise ValueError(f"the window [t - h, t] must lie in [0, 1]: t in [{float(t.min()):.4g}, {float(t.max()):.4g}], h={h}")
    dt = h / substeps
    y = x
    with torch.no_grad():
        for k in range(substeps):
            y = y - dt * teacher(y, t - k * dt).float()
    return (x - y) / h


def euler_distillation_loss(
    student: Callable[[Tensor, Tensor], Tensor],
    teacher: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    schedule: Interpolant,
    generator: torch.Generator,
    euler_steps: int = 20,
    substeps: int = 5,
) -> Tensor:
    """Mean squared error between student(x_t, t) and :func:`euler_window_target` of the teacher, h = 1 / euler_steps.

    x_t = alpha_t x0 + sigma_t x1, x1 ~ N(0, I) drawn with ``generator``; half of the times are the
    grid points 1, 1 - h, ..., h of the ``euler_steps``-step uniform sampler, half t ~ U(h, 1).
    """
    B, h = x0.shape[0], 1.0 / euler_steps
    x1 = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0.device, x0.dtype)
    on_grid = torch.randint(1, euler_steps + 1, (B,), generator=generator, device=generator.device).float() * h
    anywhere = h + (1 - h) * torch.rand(B, generator=generator, device=generator.device)
    t = torch.where(torch.rand(B, generator=generator, device=generator.device) < 0.5, on_grid, anywhere)
    t = t.to(x0.device, x0.dtype)
    c = schedule(t)
    shape = (-1,) + (1,) * (x0.dim() - 1)
    xt = c.alpha.reshape(shape) * x0 + c.sigma.reshape(shape) * x1
    target = euler_window_target(teacher, xt, t, h, substeps)
    return F.mse_loss(student(xt, t).float(), target.float())


def train_euler_distillation(
    student: nn.Module,
    teacher: nn.Module,
    data: DataSource,
    schedule: Union[str, Interpolant] = "linear",
    config: TrainConfig = TrainConfig(reinit=False),
    *,
    euler_steps: int = 20,
    substeps: int = 5,
    checkpoint_path: Optional[Union[str, Path]] = None,
    resume: bool = False,
    extra_config: Optional[dict] = None,
) -> TrainResult:
    """Fine-tune ``student`` (usually a copy of ``teacher``) so that ``euler_steps`` uniform Euler steps
    track the teacher's ODE: each student step is trained to land where ``substeps`` teacher steps do.

    Not flow matching: the student learns the teacher's velocity *averaged over a step* of length
    h = 1 / euler_steps, which differs from the instantaneous velocity by O(h). Samplers with that
    many steps gain (bench/RESULTS.md §3: the shipped MNIST flow); the score that the ODE -> SDE and
    linear -> VP conversions derive from the velocity is off by O(h) too, so check the SDE modes'
    samples when you use it. ``config.reinit`` must be False (the student starts from trained weights);
    the times are those of :func:`euler_distillation_loss`, so ``config.t_sampling`` must stay
    "uniform" and ``config.t_min`` does not apply. The teacher is moved to the training device and put
    in eval mode; it runs without gradients (under bf16 autocast when ``config`` enables it). One
    training step costs ``substeps`` teacher forward passes on top of the student's.
    """
    schedule = get(schedule)
    if not (isinstance(euler_steps, int) and euler_steps >= 1 and isinstance(substeps, int) and substeps >= 1):
        raise ValueError(f"euler_steps and substeps must be positive integers, got {euler_steps!r} and {substeps!r}")
    if config.reinit:
        raise ValueError("Euler distillation fine-tunes trained weights; pass TrainConfig(reinit=False, ...)")
    if config.t_sampling != "uniform":
        raise ValueError(f"Euler distillation draws its own times (half on the {euler_steps}-step grid, half "
                         f"U(h, 1)); t_sampling={config.t_sampling!r} would be ignored, leave it 'uniform'")
    if torch.is_tensor(data) and data.shape[0] == 0:
        raise ValueError("training data is empty")
    device = pick_device(config.device)
    teacher = teacher.to(device).eval()
    extra = {"schedule": schedule.name, "objective": f"euler-distillation (euler_steps={euler_steps}, substeps={substeps})",
             **(extra_config or {})}

    def batch_loss(m, g, device):
        x0 = _draw(data, config.batch_size, g).to(device)
        return euler_distillation_loss(m, teacher, x0, schedule, g, euler_steps, substeps)

    return _fit(student, batch_loss, config, checkpoint_path=checkpoint_path, resume=resume, extra_config=extra,
                desc="euler distillation")


def train_classifier(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    config: TrainConfig = TrainConfig(lr=1e-3, ema_decay=0.99),
    *,
    augment: Optional[Callable[[Tensor, torch.Generator], Tensor]] = None,
    checkpoint_path: Optional[Union[str, Path]] = None,
    resume: bool = False,
    extra_config: Optional[dict] = None,
) -> TrainResult:
    """Cross-entropy training of a classifier on (images (N, ...), labels (N,)); ``augment(x, g)`` optional."""
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")

    def batch_loss(m, g, device):
        idx = torch.randint(0, images.shape[0], (config.batch_size,), generator=g)
        x = images[idx]
        if augment is not None:
            x = augment(x, g)
        return F.cross_entropy(m(x.to(device)).float(), labels[idx].to(device))

    return _fit(model, batch_loss, config, checkpoint_path=checkpoint_path, resume=resume, extra_config=extra_config, desc="classifier")


def load_flow(path: Union[str, Path], device: str = "cpu") -> nn.Module:
    """Load trained flow weights (EMA) from a checkpoint written by :func:`train_flow`."""
    return load_model(path, device=device)
