"""Shipped weights (safetensors + JSON), made by toyflow's own training code; they load offline.

    from toyflow import pretrained
    model = pretrained.load("2d-8gaussians")     # a VelocityMLP, model(x, t) -> velocity
    pretrained.available()                       # names whose files ship with this install

Each JSON config records the command that trained the weights ("command") and, for weights made
in several phases, the earlier ones in order ("earlier_commands"). ``mnist-flow`` is a flow-matching
UNet fine-tuned by 20-step Euler distillation (``"objective"`` in its JSON; bench/RESULTS.md §3).
``mnist-flow-fewstep`` is a smaller UNet distilled from ``mnist-flow``'s own ODE trajectories
(``toyflow.fewstep``, ``bench/distill_fewstep_mnist.py``): its x0_hat is the teacher's flow map, a
sharp digit at every t, and it samples in a few steps (``fewstep.few_step_sample``).
``2d-<task>-x8-flowmap`` are MLPs distilled from the exact flow map of ``rewards.task(<task>, scale=8)``
(``models.FlowMapOracle``; ``python -m toyflow.distill``): x0_hat = x - t u is sharp, one Euler step samples.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import torch

from toyflow.models import load_model

__all__ = ["MODELS", "load", "path", "available", "info"]

# name -> architecture it must hold (checked at load)
MODELS: Mapping[str, str] = MappingProxyType(
    {
        "2d-8gaussians": "mlp",
        "2d-rare-mode": "mlp",
        "2d-counting": "mlp",
        "2d-aesthetic": "mlp",
        "2d-rare-mode-x8-flowmap": "mlp",
        "2d-counting-x8-flowmap": "mlp",
        "2d-aesthetic-x8-flowmap": "mlp",
        "mnist-flow": "unet",
        "mnist-flow-fewstep": "unet",
        "mnist-reward": "reward-cnn",
        "mnist-evaluator": "evaluator-cnn",
    }
)

_DIR = Path(__file__).resolve().parent


def path(name: str) -> Path:
    """The weights file of a shipped model (it may be missing from a partial install)."""
    if name not in MODELS:
        raise ValueError(f"unknown pretrained model {name!r}; shipped names: {', '.join(MODELS)}")
    return _DIR / f"{name}.safetensors"


def available() -> tuple[str, ...]:
    return tuple(n for n in MODELS if path(n).exists())


def info(name: str) -> dict:
    """The JSON config of a shipped model (architecture, training command, data, steps)."""
    import json

    return json.loads(path(name).with_suffix(".json").read_text())


def load(name: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a shipped model in eval mode, float32, with gradients switched off for its weights."""
    p = path(name)
    if not p.exists():
        raise FileNotFoundError(
            f"shipped weights {p.name} are missing from {_DIR}; reinstall toyflow, or train them with the "
            f"command recorded in the README (bench/RESULTS.md, 'Shipped weights')"
        )
    model = load_model(p, arch=MODELS[name], device=device).float()
    model.requires_grad_(False)
    return model
