"""MNIST digits from IDX files (gzip or plain), offline first, with an optional verified download.

Images come back as float32 ``(N, 1, 28, 28)`` scaled to ``[-1, 1]`` (``x = pixel / 127.5 - 1``),
labels as int64 ``(N,)``.

Where the files are looked for (first hit wins): the ``data_dir`` argument, else the
``TOYFLOW_DATA`` environment variable, else ``~/.cache/toyflow/mnist``. Inside that folder the
files may sit directly or under ``MNIST/raw/`` (the torchvision layout), as ``name.gz`` or
``name``.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np
import torch

from toyflow.checkpoint import atomic_write_bytes

__all__ = [
    "MNISTData",
    "load_mnist",
    "read_idx",
    "download_mnist",
    "resolve_data_dir",
    "fetch_url",
    "SPLIT_FILES",
    "MIRRORS",
    "MD5",
    "DATA_ENV_VAR",
]

logger = logging.getLogger(__name__)

DATA_ENV_VAR = "TOYFLOW_DATA"
IMAGE_MAGIC = 0x00000803  # uint8, 3 dims
LABEL_MAGIC = 0x00000801  # uint8, 1 dim

# split -> (images file, labels file), names without the ".gz" suffix
SPLIT_FILES: Mapping[str, tuple[str, str]] = MappingProxyType({
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    "train5k": ("train5k-images-idx3-ubyte", "train5k-labels-idx1-ubyte"),
})

# the four downloadable files (gzip) and their well-known MD5 checksums
MD5: Mapping[str, str] = MappingProxyType({
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcc592d2822",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
})

MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)


@dataclass(frozen=True)
class MNISTData:
    """images: float32 (N, 1, 28, 28) in [-1, 1]; labels: int64 (N,); source: folder the files came from."""

    images: torch.Tensor
    labels: torch.Tensor
    split: str
    source: Path

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _corrupt(path: Path, reason: str) -> ValueError:
    return ValueError(
        f"{path} is not a valid MNIST IDX file ({reason}); delete it and download it again "
        "(load_mnist(..., download=True) or from an MNIST mirror)"
    )


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise _corrupt(path, f"bad gzip data: {e}") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an MNIST IDX file (``.gz`` or plain) strictly -> uint8 array (N, 28, 28) or (N,).

    Checks the magic number (0x00000803 images, 0x00000801 labels), the dims and that the
    payload length matches the header exactly; anything else raises ``ValueError``.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise _corrupt(path, f"only {len(data)} bytes, shorter than the 4-byte magic number")
    magic = int.from_bytes(data[:4], "big")
    if magic not in (IMAGE_MAGIC, LABEL_MAGIC):
        raise _corrupt(
            path,
            f"magic number 0x{magic:08x}, expected 0x{IMAGE_MAGIC:08x} (images) or 0x{LABEL_MAGIC:08x} (labels)",
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _corrupt(path, f"truncated header: {len(data)} bytes, the {ndim}-dim header needs {header}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and dims[1:] != (28, 28):
        raise _corrupt(path, f"image size {dims[1]}x{dims[2]}, expected 28x28")
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "trailing bytes"
        raise _corrupt(path, f"{what}: {len(data)} bytes, header dims {dims} need exactly {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder to use: ``data_dir``, else ``$TOYFLOW_DATA``, else ``~/.cache/toyflow/mnist``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "toyflow" / "mnist"


def _candidate_dirs(root: Path) -> list[Path]:
    return [root, root / "MNIST" / "raw"]


def _find(name: str, root: Path) -> Path | None:
    """First existing ``name.gz`` or ``name`` in ``root`` or ``root/MNIST/raw``."""
    for folder in _candidate_dirs(root):
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                return candidate
    return None


def fetch_url(url: str, timeout: float = 60.0) -> bytes:
    """Download ``url`` and return its bytes (the one network call of this module)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def download_mnist(
    data_dir: str | os.PathLike | None = None,
    files: tuple[str, ...] | None = None,
    *,
    fetch: Callable[[str], bytes] | None = None,
) -> list[Path]:
    """Fetch the standard MNIST ``.gz`` files into ``data_dir``, checking MD5; skip ones present.

    ``files``: names from :data:`MD5` (default: all four). ``fetch(url) -> bytes`` defaults to
    :func:`fetch_url`. Each file is written atomically (temporary file, then rename). Mirrors are
    tried in order; returns the paths of the files now present.
    """
    fetch = fetch_url if fetch is None else fetch
    root = resolve_data_dir(data_dir)
    names = tuple(MD5) if files is None else files
    unknown = [n for n in names if n not in MD5]
    if unknown:
        raise ValueError(f"cannot download {unknown}: only the standard files {sorted(MD5)} are downloadable")
    paths = []
    for name in names:
        target = root / name
        if target.is_file() and hashlib.md5(target.read_bytes()).hexdigest() == MD5[name]:
            paths.append(target)
            continue
        failures: list[str] = []
        bad_checksum = False
        for mirror in MIRRORS:
            url = mirror + name
            logger.info("downloading %s", url)
            try:
                payload = fetch(url)
            except Exception as e:  # network errors of any kind: try the next mirror
                failures.append(f"{url}: {type(e).__name__}: {e}")
                continue
            digest = hashlib.md5(payload).hexdigest()
            if digest != MD5[name]:
                bad_checksum = True
                failures.append(f"{url}: MD5 checksum mismatch (got {digest}, expected {MD5[name]})")
                continue
            atomic_write_bytes(target, payload)
            paths.append(target)
            break
        else:
            message = (
                f"could not download {name} into {root}:\n  " + "\n  ".join(failures) + "\n"
                f"Without a network, copy the MNIST files into {root} (or pass data_dir=/--data-dir, "
                f"or set {DATA_ENV_VAR})."
            )
            if bad_checksum:
                raise ValueError(message)
            raise ConnectionError(message)
    return paths


def load_mnist(split: str, data_dir: str | os.PathLike | None = None, *, download: bool = False) -> MNISTData:
    """Load an MNIST split ("train", "test" or "train5k") as :class:`MNISTData`.

    With ``download=True`` missing standard files of the split are fetched first (train5k is a
    local subset and cannot be downloaded).
    """
    if split not in SPLIT_FILES:
        raise ValueError(f"unknown MNIST split {split!r}; choose one of {', '.join(SPLIT_FILES)}")
    root = resolve_data_dir(data_dir)
    names = SPLIT_FILES[split]
    found = [_find(n, root) for n in names]
    if any(p is None for p in found) and download:
        if split == "train5k":
            raise FileNotFoundError(
                f"split 'train5k' is a local 5,000-digit subset and cannot be downloaded; "
                f"put its files in {root} or use split='train' with download=True"
            )
        download_mnist(root, tuple(f"{n}.gz" for n, p in zip(names, found) if p is None))
        found = [_find(n, root) for n in names]
    missing = [n for n, p in zip(names, found) if p is None]
    if missing:
        searched = ", ".join(str(d) for d in _candidate_dirs(root))
        expected = ", ".join(f"{n}.gz (or {n})" for n in missing)
        raise FileNotFoundError(
            f"MNIST split {split!r}: missing {expected}; searched {searched}. "
            f"Pass data_dir= (CLI: --data-dir) pointing at a folder with the files, set {DATA_ENV_VAR}, "
            "or use download=True (needs internet; 'train' and 'test' only)."
        )
    images_path, labels_path = found
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise _corrupt(images_path, f"expected an image file (3 dims), found {images.ndim} dims")
    if labels.ndim != 1:
        raise _corrupt(labels_path, f"expected a label file (1 dim), found {labels.ndim} dims")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"MNIST split {split!r}: {images.shape[0]} images in {images_path} but {labels.shape[0]} labels "
            f"in {labels_path}; the files belong to different splits or one is damaged: delete them and "
            "download them again"
        )
    if labels.size and labels.max() > 9:
        raise _corrupt(labels_path, f"label {int(labels.max())} outside 0..9")
    logger.debug("loaded MNIST %s: %d digits from %s", split, labels.shape[0], images_path.parent)
    x = torch.from_numpy(images).to(torch.float32).div_(127.5).sub_(1.0).unsqueeze(1)
    y = torch.from_numpy(labels).to(torch.int64)
    return MNISTData(images=x, labels=y, split=split, source=images_path.parent)
