"""Checkpoints: safetensors weights + a small JSON config, written atomically (never pickle).

A checkpoint ``name`` is two files, ``name.safetensors`` and ``name.json``. The JSON holds
``{"arch": ..., "arch_config": {...}, ...}`` so :func:`toyflow.models.build` can rebuild the
module, plus anything else the writer wants to keep (training step, optimizer settings, ...).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file

__all__ = ["save", "load", "atomic_write_bytes", "atomic_write_text", "checkpoint_paths"]


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights path, config path) for a checkpoint given with or without its suffix."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def _umask_mode() -> int:
    """0o666 less the process umask: what a plain open() would give (mkstemp gives 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> Path:
    """Save ``tensors`` (name -> tensor) and ``config`` (JSON-serialisable) atomically.

    Returns the weights path. The config is written last, so a reader that finds a config
    always finds complete weights beside it.
    """
    weights_path, config_path = checkpoint_paths(path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{weights_path.name}.", suffix=".tmp", dir=weights_path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, weights_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    atomic_write_text(config_path, json.dumps(dict(config), indent=2, sort_keys=True) + "\n")
    return weights_path


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (tensors, config) of a checkpoint; a clear error if either file is missing."""
    weights_path, config_path = checkpoint_paths(path)
    missing = [str(p) for p in (weights_path, config_path) if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"checkpoint {Path(path)} is incomplete: missing {', '.join(missing)}; a checkpoint is a "
            "'.safetensors' file plus a '.json' config with the same name"
        )
    config = json.loads(config_path.read_text())
    tensors = load_file(str(weights_path), device=str(device))
    return tensors, config
