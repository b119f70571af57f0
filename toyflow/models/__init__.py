"""Models: every velocity model has the signature ``model(x, t) -> velocity``.

Architectures are rebuilt from checkpoints through a fixed, read-only table (no registry that
code can mutate): each model class has a class attribute ``arch`` and a method ``config()``
returning its constructor keyword arguments.
"""

from __future__ import annotations

import importlib
import os
from types import MappingProxyType
from typing import Any, Mapping

import torch

from toyflow import checkpoint
from toyflow.models.gmm import GaussianMixtureFlow
from toyflow.models.flowmap import FlowMapOracle
from toyflow.models.mlp import VelocityMLP

__all__ = ["GaussianMixtureFlow", "FlowMapOracle", "VelocityMLP", "build", "save_model", "load_model", "ARCHITECTURES"]

# arch name -> (module, class name); imported lazily so 2D users never import image models.
ARCHITECTURES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "mlp": ("toyflow.models.mlp", "VelocityMLP"),
        "unet": ("toyflow.models.unet", "UNet"),
        "reward-cnn": ("toyflow.models.classifier", "RewardCNN"),
        "evaluator-cnn": ("toyflow.models.classifier", "EvaluatorCNN"),
    }
)


def build(arch: str, arch_config: Mapping[str, Any]) -> torch.nn.Module:
    """Construct an untrained model of architecture ``arch`` with ``arch_config`` kwargs."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    module_name, class_name = ARCHITECTURES[arch]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**dict(arch_config))


def save_model(
    path: str | os.PathLike, model: torch.nn.Module, *, weights_dtype: torch.dtype | None = None, **extra: Any
) -> None:
    """Save a model's weights and the config that rebuilds it (plus ``extra`` JSON fields).

    ``weights_dtype`` (e.g. ``torch.float16``) stores the floating-point tensors in that dtype
    (half the file size for shipped inference weights); :func:`load_model` casts them back to the
    model's own dtype. Recorded in the JSON as ``"weights_dtype"``.
    """
    state = model.state_dict()
    config = {"arch": type(model).arch, "arch_config": model.config(), **extra}
    if weights_dtype is not None:
        if not (isinstance(weights_dtype, torch.dtype) and weights_dtype.is_floating_point):
            raise TypeError(f"weights_dtype must be a floating torch.dtype, got {weights_dtype!r}")
        state = {k: v.to(weights_dtype) if v.is_floating_point() else v for k, v in state.items()}
        config["weights_dtype"] = str(weights_dtype).removeprefix("torch.")
    checkpoint.save(path, state, config)


def load_model(path: str | os.PathLike, *, arch: str | None = None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild a model from a checkpoint; ``arch`` (optional) asserts which architecture is expected."""
    tensors, config = checkpoint.load(path, device=device)
    if "arch" not in config:
        raise ValueError(f"checkpoint {path} has no 'arch' in its JSON config; it was not written by toyflow")
    if arch is not None and config["arch"] != arch:
        raise ValueError(
            f"checkpoint {path} holds a {config['arch']!r} model, not the expected {arch!r}; "
            "pass the checkpoint of the right model"
        )
    if not isinstance(config.get("arch_config", {}), Mapping):
        raise ValueError(f"checkpoint {path}: 'arch_config' in its JSON must be an object, got {config['arch_config']!r}")
    try:  # shapes first, on the meta device (no memory): a tampered config fails before a huge model is built
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in build(config["arch"], config.get("arch_config", {})).state_dict().items()}
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint {path}: its JSON does not describe a buildable model ({e})") from None
    except Exception:  # noqa: BLE001 - an architecture that cannot be built on the meta device: checked below
        shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    wrong = sorted(k for k in shapes.keys() | tensors.keys()
                   if k not in shapes or k not in tensors or shapes[k] != tuple(tensors[k].shape))
    if wrong:
        k = wrong[0]
        raise ValueError(
            f"checkpoint {path} does not match architecture {config['arch']!r} with config {config.get('arch_config')}: "
            f"{len(wrong)} tensors differ, e.g. {k!r}: file {tuple(tensors[k].shape) if k in tensors else 'missing'}, "
            f"config {shapes.get(k, 'missing')}; the JSON was edited or belongs to other weights"
        )
    model = build(config["arch"], config.get("arch_config", {}))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ValueError(
            f"checkpoint {path} does not match architecture {config['arch']!r} with config "
            f"{config.get('arch_config')}: {e}"
        ) from None
    return model.to(device).eval()
