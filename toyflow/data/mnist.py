"""MNIST digits from IDX files (gzip or plain), offline first, with an optional verified download.

Images come back as float32 ``(N, 1, 28, 28)`` scaled to ``[-1, 1]`` (``x = pixel / 127.5 - 1``),
labels as int64 ``(N,)``.

Where the files are looked for (first hit wins): the ``data_dir`` argument, else the
``TOYFLOW_DATA`` environment variable, else ``~/.cache/toyflow/mnist``. Inside that folder the
files may sit directly or under ``MNIST/raw/`` (the torchvision layout), as ``name.gz`` or
``name``.

Splits (:data:`SPLITS`):

- ``train``: the official training split (60,000 digits); ``test``: the official test split
  (t10k, 10,000 digits). Both download from the public mirrors (MD5-checked).
- ``train5k``: 5,000 digits of the official training split, 500 per class, sorted by class (the
  held-out evaluator's training digits). Which 5,000 they are is pinned by the shipped list of
  per-image digests ``toyflow/data/mnist_train5k.json`` (:func:`train5k_manifest`); the draw
  itself (its indices or seed) was not recorded when the subset was made, so the digests are the
  definition. :func:`rebuild_train5k` finds the 5,000 digits in the full training split by
  content and writes the two IDX files again; :func:`verify_train5k` checks a copy digit by digit.
  ``load_mnist("train5k", download=True)`` downloads the training split and rebuilds the subset.
- ``val5k``: a held-out part of the training split for validation and evaluation, disjoint from
  train5k and from the official test split: for each class, the 500 digits outside train5k with the
  smallest image digest (:func:`image_digest`), sorted by class. No random stream is involved, so
  any copy of the training split gives the same 5,000 digits.
- ``train50k``: the rest of the training split (60,000 minus train5k minus val5k, in the
  training split's order): what the flow model and the reward classifier train on by default.

``val5k`` and ``train50k`` are computed from the full training split (``train``) and the train5k
digests; nothing beyond the two official training files is needed.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
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
    "SPLITS",
    "image_digest",
    "train5k_manifest",
    "verify_train5k",
    "rebuild_train5k",
    "Train5kReport",
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

# splits made from the official training split (and the train5k digests), not files of their own
DERIVED_SPLITS: tuple[str, ...] = ("val5k", "train50k")
#: every split load_mnist knows
SPLITS: tuple[str, ...] = tuple(SPLIT_FILES) + DERIVED_SPLITS
#: digits per class in train5k and in val5k
PER_CLASS = 500
#: the shipped per-image digests of train5k (see train5k_manifest)
TRAIN5K_MANIFEST = Path(__file__).with_name("mnist_train5k.json")
DIGEST_CHARS = 16  # hex characters of sha256 kept per image: 64 bits, no collision among MNIST's 70,000

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


def _load_files(split: str, root: Path, download: bool) -> tuple[np.ndarray, np.ndarray, Path]:
    """The uint8 images (N, 28, 28) and labels (N,) of a split stored as files, and their folder."""
    names = SPLIT_FILES[split]
    found = [_find(n, root) for n in names]
    if any(p is None for p in found) and download:
        if split == "train5k":
            rebuild_train5k(root, download=True)
        else:
            download_mnist(root, tuple(f"{n}.gz" for n, p in zip(names, found) if p is None))
        found = [_find(n, root) for n in names]
    missing = [n for n, p in zip(names, found) if p is None]
    if missing:
        searched = ", ".join(str(d) for d in _candidate_dirs(root))
        expected = ", ".join(f"{n}.gz (or {n})" for n in missing)
        how = ("or use download=True (CLI: --download; needs internet: it fetches the official training split and "
               "rebuilds train5k from it, checked against the shipped digests), or rebuild it from a local copy "
               "of the training split with toyflow data train5k" if split == "train5k" else
               "or use download=True (CLI: --download; needs internet)")
        raise FileNotFoundError(
            f"MNIST split {split!r}: missing {expected}; searched {searched}. "
            f"Pass data_dir= (CLI: --data-dir) pointing at a folder with the files, set {DATA_ENV_VAR}, {how}."
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
    return images, labels, images_path.parent


def load_mnist(split: str, data_dir: str | os.PathLike | None = None, *, download: bool = False) -> MNISTData:
    """Load an MNIST split (one of :data:`SPLITS`: "train", "test", "train5k", "val5k", "train50k";
    see the module docstring) as :class:`MNISTData`.

    With ``download=True`` missing official files are fetched first; a missing train5k is rebuilt
    from the downloaded training split and checked against the shipped digests. "val5k" and
    "train50k" are cut from the training split (``train``), which they need.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown MNIST split {split!r}; choose one of {', '.join(SPLITS)}")
    root = resolve_data_dir(data_dir)
    if split in DERIVED_SPLITS:
        images, labels, source = _load_files("train", root, download)
        val, rest = _held_out_indices(images, labels)
        keep = val if split == "val5k" else rest
        images, labels = images[keep], labels[keep]
    else:
        images, labels, source = _load_files(split, root, download)
    logger.debug("loaded MNIST %s: %d digits from %s", split, labels.shape[0], source)
    x = torch.from_numpy(images).to(torch.float32).div_(127.5).sub_(1.0).unsqueeze(1)
    y = torch.from_numpy(labels).to(torch.int64)
    return MNISTData(images=x, labels=y, split=split, source=source)


# --------------------------------------------------------------------------------------------
# train5k: the shipped digests, verifying a copy, rebuilding it from the training split
# --------------------------------------------------------------------------------------------
def image_digest(image: np.ndarray) -> str:
    """The digest of one digit: sha256 of its 784 pixel bytes (uint8, row-major, as stored in the
    IDX file), first 16 hex characters."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.shape != (28, 28):
        raise ValueError(f"image_digest expects one uint8 digit of shape (28, 28), got {image.shape}")
    return hashlib.sha256(image.tobytes()).hexdigest()[:DIGEST_CHARS]


def _digests(images: np.ndarray) -> list[str]:
    return [image_digest(im) for im in images]


def _idx_payload(array: np.ndarray) -> bytes:
    """An uint8 array as IDX bytes (magic, big-endian dims, payload)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = IMAGE_MAGIC if array.ndim == 3 else LABEL_MAGIC
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def make_train5k_manifest(images: np.ndarray, labels: np.ndarray) -> dict:
    """The manifest of a train5k copy (uint8 images (N, 28, 28), labels (N,), sorted by class): the
    digests of its digits per class in file order, and the sha256 of the two uncompressed IDX files.
    This is what ``toyflow/data/mnist_train5k.json`` holds (written once from the shipped files)."""
    labels = np.asarray(labels)
    if labels.size > 1 and (np.diff(labels.astype(np.int64)) < 0).any():
        raise ValueError("train5k is sorted by class; these labels are not")
    return {
        "about": "train5k: 5,000 digits of the official MNIST training split (train-images-idx3-ubyte, "
                 "train-labels-idx1-ubyte), 500 per class, sorted by class, each class in the order below. "
                 "How the 5,000 were drawn (indices or seed) was not recorded when the subset was made; these "
                 "digests define it. Rebuild or check a copy with toyflow data train5k "
                 "(toyflow.data.mnist.rebuild_train5k / verify_train5k).",
        "digest": f"sha256 of the image's 784 pixel bytes (uint8, row-major, as in the IDX file), "
                  f"first {DIGEST_CHARS} hex characters",
        "count": int(labels.size),
        "images_idx_sha256": hashlib.sha256(_idx_payload(images)).hexdigest(),
        "labels_idx_sha256": hashlib.sha256(_idx_payload(labels)).hexdigest(),
        "digits": {str(c): [image_digest(im) for im in images[labels == c]] for c in range(10)},
    }


@functools.lru_cache(maxsize=4)
def _read_manifest(path: str) -> dict:
    try:
        manifest = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"the train5k digests {path} are missing; reinstall toyflow (they ship with it)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"the train5k digests {path} are not valid JSON ({e}); reinstall toyflow") from None
    return manifest


def train5k_manifest(path: str | os.PathLike | None = None) -> dict:
    """The shipped train5k manifest (``toyflow/data/mnist_train5k.json``): ``digits`` maps each class
    "0".."9" to the digests (:func:`image_digest`) of its 500 digits in file order; also the sha256
    of the uncompressed IDX files and how the digests are made."""
    return _read_manifest(str(path or TRAIN5K_MANIFEST))


@dataclass(frozen=True)
class Train5kReport:
    """What :func:`verify_train5k` or :func:`rebuild_train5k` found: ``ok``; ``problems``, one line
    each; ``paths`` of the train5k files; for a rebuild, ``indices`` of the 5,000 digits in the
    official training split (in train5k order)."""

    ok: bool
    problems: tuple[str, ...]
    paths: tuple[Path, ...]
    indices: tuple[int, ...] = ()


def _compare(images: np.ndarray, labels: np.ndarray, manifest: dict) -> list[str]:
    """Differences between a train5k copy and the manifest, one line each (empty: identical)."""
    problems = []
    expected = manifest["digits"]
    order = [c for c in range(10) for _ in expected[str(c)]]
    if labels.shape[0] != len(order):
        problems.append(f"{labels.shape[0]} digits, the manifest lists {len(order)}")
    elif not np.array_equal(labels, np.array(order, dtype=labels.dtype)):
        problems.append("the labels are not the manifest's: 500 per class, sorted by class")
    for c in range(10):
        got = [image_digest(im) for im in images[labels == c]]
        want = expected[str(c)]
        if got == want:
            continue
        unknown = sorted(set(got) - set(want))
        if unknown:
            problems.append(f"class {c}: {len(unknown)} digit(s) not in train5k, e.g. digest {unknown[0]}")
        elif sorted(got) == sorted(want):
            problems.append(f"class {c}: the right digits in another order")
        else:
            problems.append(f"class {c}: {len(set(want) - set(got))} digit(s) of train5k missing")
    if not problems:
        if hashlib.sha256(_idx_payload(images)).hexdigest() != manifest["images_idx_sha256"]:
            problems.append("the images match digit by digit but the IDX file's sha256 differs")
    return problems


def verify_train5k(data_dir: str | os.PathLike | None = None, *, manifest: dict | None = None) -> Train5kReport:
    """Check the train5k files in ``data_dir`` digit by digit against the shipped digests.

    Returns a :class:`Train5kReport` (``ok`` False with one line per problem: a digit that is not in
    train5k, a missing digit, another order). Missing files raise ``FileNotFoundError``."""
    manifest = manifest or train5k_manifest()
    images, labels, source = _load_files("train5k", resolve_data_dir(data_dir), download=False)
    problems = _compare(images, labels, manifest)
    paths = tuple(_find(n, source) for n in SPLIT_FILES["train5k"])
    return Train5kReport(ok=not problems, problems=tuple(problems), paths=paths)


def _train5k_indices(images: np.ndarray, labels: np.ndarray, manifest: dict) -> np.ndarray:
    """Indices into the training split of the manifest's digits, in train5k order (first match of
    each digest within its class); raises if some cannot be found."""
    where: dict[tuple[int, str], int] = {}
    for i, (im, lab) in enumerate(zip(images, labels)):
        where.setdefault((int(lab), image_digest(im)), i)
    out, missing = [], []
    for c in range(10):
        for d in manifest["digits"][str(c)]:
            i = where.get((c, d))
            (missing if i is None else out).append(d if i is None else i)
    if missing:
        raise ValueError(
            f"{len(missing)} of the {sum(len(v) for v in manifest['digits'].values())} train5k digits are not in "
            f"this training split (e.g. digest {missing[0]}); it is not the official MNIST training split "
            "(train-images-idx3-ubyte, 60,000 digits): download it again (--download)"
        )
    return np.array(out, dtype=np.int64)


def rebuild_train5k(
    data_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    download: bool = False,
    manifest: dict | None = None,
) -> Train5kReport:
    """Rebuild the train5k files from the official training split and check them.

    Reads ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` from ``data_dir`` (``download=True``
    fetches them, MD5-checked), finds each digit of the shipped digests by content, writes
    ``train5k-images-idx3-ubyte.gz`` and ``train5k-labels-idx1-ubyte.gz`` into ``out_dir`` (default:
    ``data_dir``; atomically, gzip without a time stamp) and verifies what it wrote. The report's
    ``indices`` say where in the training split each train5k digit sits."""
    manifest = manifest or train5k_manifest()
    root = resolve_data_dir(data_dir)
    images, labels, _ = _load_files("train", root, download)
    idx = _train5k_indices(images, labels, manifest)
    out = Path(out_dir).expanduser() if out_dir is not None else root
    paths = []
    for name, array in zip(SPLIT_FILES["train5k"], (images[idx], labels[idx])):
        target = out / f"{name}.gz"
        atomic_write_bytes(target, gzip.compress(_idx_payload(array), mtime=0))
        paths.append(target)
    check = verify_train5k(out, manifest=manifest)
    if not check.ok:  # cannot happen unless the disk changed what was written
        raise ValueError(f"train5k rebuilt into {out} does not verify: {'; '.join(check.problems)}")
    logger.info("rebuilt train5k (%d digits) into %s", idx.size, out)
    return Train5kReport(ok=True, problems=(), paths=tuple(paths), indices=tuple(int(i) for i in idx))


def _held_out_indices(images: np.ndarray, labels: np.ndarray, manifest: dict | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(val5k, train50k) indices into the training split: val5k = per class the PER_CLASS digits
    outside train5k with the smallest digest (sorted by class, then digest); train50k = every digit
    in neither, in the training split's order. A digit whose pixels equal a train5k digit's is
    left out of both, so that neither shares an image with train5k."""
    manifest = manifest or train5k_manifest()
    digests = _digests(images)
    in5k = {d for ds in manifest["digits"].values() for d in ds}
    free = [i for i, d in enumerate(digests) if d not in in5k]
    if len(free) == len(digests):
        raise ValueError("none of the train5k digits is in this training split; it is not the official MNIST "
                         "training split: download it again (--download)")
    val = []
    for c in range(10):
        cls = sorted((digests[i], i) for i in free if labels[i] == c)
        if len(cls) < PER_CLASS:
            raise ValueError(f"class {c} has {len(cls)} digits outside train5k, fewer than the {PER_CLASS} of "
                             "val5k; this is not the official MNIST training split: download it again (--download)")
        val += [i for _, i in cls[:PER_CLASS]]
    taken = set(val)
    rest = np.array([i for i in free if i not in taken], dtype=np.int64)
    return np.array(val, dtype=np.int64), rest
