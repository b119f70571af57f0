"""Checkpoints: safetensors weights + a small JSON config, written atomically (never pickle).

A checkpoint ``name`` is two files, ``name.safetensors`` and ``name.json``. The JSON holds
``{"arch": ..., "arch_config": {...}, ...}`` so :func:`toyflow.models.build` can rebuild the
module, plus anything else the writer wants to keep (training step, optimizer settings, ...), and
``weights_sha256``, the hash of the weights file it was written with: :func:`load` refuses a pair
whose weights come from another save (a crash between the two renames), naming both files.
Checkpoints without the hash (older files) load as before.

A training state (:func:`save_state`, :func:`load_state`) is one file, ``name.state.safetensors``:
every tensor plus the JSON metadata (step, settings) in the safetensors header, and the sha256
of the tensor data, checked on load. It is replaced by a single rename, so a crash leaves the
previous state or the new one, never a mix.

Every file is written to a temporary file in the target's folder, fsync'ed, renamed over the
target (``os.replace``) and the folder fsync'ed. Temporary files are named
``.TARGET.HOST.PID.RANDOM.tmp``; those of processes that died are removed by the next save of the
same target, and :class:`OutputLock` (held by a training) removes every one of its targets.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import socket
import struct
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

__all__ = [
    "save", "load", "atomic_write_bytes", "atomic_write_text", "checkpoint_paths", "read_header",
    "save_state", "load_state", "state_path", "CheckpointError", "OutputLock", "OutputLocked",
    "check_writable", "clean_stale_temps",
]

STATE_FORMAT = "toyflow-train-state/2"
_MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
_SHA_PLACEHOLDER = "0" * 64


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: the message names the file, the problem and the fix."""


class OutputLocked(RuntimeError):
    """Another live process is writing the same output."""


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights path, config path) for a checkpoint given with or without its suffix."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def state_path(path: str | os.PathLike) -> Path:
    """The training-state file of the checkpoint ``path``: ``path.state.safetensors``."""
    base = checkpoint_paths(path)[0].with_suffix("")
    return base.with_name(base.name + ".state.safetensors")


# ---- atomic writes --------------------------------------------------------------------------------
def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened."""
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder
    finally:
        os.close(fd)


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, rename over ``path``, fsync the folder.

    A crash at any point leaves ``path`` as it was or complete with ``data``. An OSError names ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_name(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as e:
        if e.filename is None or str(e.filename).endswith(".tmp"):
            e.filename = str(path)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


_TEMP_RE = re.compile(r"^\.(?P<target>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")
_OLD_TEMP_RE = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")  # tempfile.mkstemp names (toyflow < 0.2)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_stale_temps(target: str | os.PathLike, *, all_writers: bool = False) -> int:
    """Remove the temporary files a crashed save of ``target`` left behind; returns how many.

    By default only those of dead processes on this host; ``all_writers=True`` (for a caller that
    holds the :class:`OutputLock` of ``target``) also those of live ones and of older toyflow versions.
    """
    target = Path(target)
    try:
        names = os.listdir(target.parent if str(target.parent) else ".")
    except OSError:
        return 0
    removed = 0
    for name in names:
        if not name.startswith(f".{target.name}.") or not name.endswith(".tmp"):
            continue
        m = _TEMP_RE.match(name)
        if m and m["target"] == target.name:
            stale = all_writers or (m["host"] == _HOST and not _pid_alive(int(m["pid"])))
        else:
            old = _OLD_TEMP_RE.match(name)
            stale = all_writers and old is not None and old["target"] == target.name
        if stale:
            try:
                os.unlink(target.with_name(name))
                removed += 1
            except OSError:
                pass
    return removed


# ---- reading --------------------------------------------------------------------------------------
def _read_bytes(path: Path) -> bytes:
    """The whole file, read (not memory-mapped: a replaced file's disk space is freed at once)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a folder, not a checkpoint file") from None


def _check_header(head: bytes, size: int, path: Path) -> dict:
    """The safetensors JSON header from ``head`` (the file's first bytes, at least 8 + header length
    if the file has them) of a file of ``size`` bytes, checked; a clear error naming ``path`` otherwise."""
    n = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else 0
    plausible = len(head) >= 9 and n <= min(_MAX_HEADER, size - 8) and head[8:9] == b"{"
    if not plausible and (head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05")):
        raise CheckpointError(
            f"{path} is a pickle / torch.save file, which toyflow never loads (unpickling can run code); "
            "convert it with safetensors.torch.save_file(state_dict, path) in a trusted session, or retrain"
        )
    if size < 8:
        raise CheckpointError(f"{path} is truncated ({size} bytes): not a safetensors file; write it again")
    (n,) = struct.unpack("<Q", head[:8])
    if n > _MAX_HEADER or 8 + n > size:
        what = "truncated" if n <= _MAX_HEADER else "not a safetensors file (corrupt header)"
        raise CheckpointError(f"{path} is {what}: its header claims {n} bytes of {size}; write it again "
                              "(re-export, retrain or reinstall)")
    try:
        header = json.loads(head[8:8 + n])
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, UnicodeDecodeError, TypeError, KeyError, IndexError):
        raise CheckpointError(f"{path} is not a safetensors file (its header is not valid); write it again") from None
    if 8 + n + end != size:
        raise CheckpointError(f"{path} is truncated or padded: {size} bytes where its header describes "
                              f"{8 + n + end}; write it again (a save was cut short)")
    return header


def _parse_header(data: bytes, path: Path) -> dict:
    return _check_header(data, len(data), path)


def read_header(path: str | os.PathLike) -> dict:
    """The header of a safetensors file without reading its tensors: {name: {"dtype", "shape",
    "data_offsets"}, "__metadata__": {...}}. A clear :class:`CheckpointError` for anything else."""
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) == 8:
            (n,) = struct.unpack("<Q", head)
            if n <= min(_MAX_HEADER, size):
                head += f.read(n)
    return _check_header(head, size, path)


def _tensors_from(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    try:
        return _st_load(data)
    except (SafetensorError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path} cannot be read as safetensors ({e}); write it again") from None


def _read_json(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); restore it or write the checkpoint again") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} holds a JSON {type(config).__name__}, not the config object of a checkpoint")
    return config


# ---- inference checkpoints (weights + JSON) -------------------------------------------------------
def save(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> Path:
    """Save ``tensors`` (name -> tensor) and ``config`` (JSON-serialisable) atomically.

    Returns the weights path. The weights are written first, the config last; the config records
    the weights' sha256, so a reader never takes weights of one save with the config of another.
    """
    weights_path, config_path = checkpoint_paths(path)
    data = _st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    config = {k: v for k, v in dict(config).items() if k != "weights_sha256"}
    config["weights_sha256"] = hashlib.sha256(data).hexdigest()
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"  # a config that is not JSON fails before any write
    for target in (weights_path, config_path):
        clean_stale_temps(target)
    atomic_write_bytes(weights_path, data)
    atomic_write_text(config_path, text)
    return weights_path


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (tensors, config) of a checkpoint; a clear error naming the file if anything is wrong."""
    weights_path, config_path = checkpoint_paths(path)
    missing = [str(p) for p in (weights_path, config_path) if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"checkpoint {Path(path)} is incomplete: missing {', '.join(missing)}; a checkpoint is a "
            "'.safetensors' file plus a '.json' config with the same name"
        )
    config = _read_json(config_path)
    data = _read_bytes(weights_path)
    _parse_header(data, weights_path)
    want = config.get("weights_sha256")
    if want is not None and hashlib.sha256(data).hexdigest() != want:
        raise CheckpointError(
            f"{weights_path} is not the weights file {config_path} was written with (its sha256 differs): a save "
            "was interrupted between the two files, or one was replaced; for a training, run the same command "
            "with --resume to rewrite both, otherwise save or export the checkpoint again"
        )
    tensors = _tensors_from(data, weights_path)
    del data
    if torch.device(device) != torch.device("cpu"):
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, config


# ---- training states (one file) -------------------------------------------------------------------
def save_state(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Write a training state, ``tensors`` and the JSON ``meta``, as one safetensors file (one rename).

    The file's metadata holds ``meta`` and the sha256 of the tensor bytes, which :func:`load_state`
    checks. ``path`` is the checkpoint path (the state goes to :func:`state_path`) or the state file.
    """
    target = Path(path) if str(path).endswith(".state.safetensors") else state_path(path)
    meta_text = json.dumps({**dict(meta), "format": STATE_FORMAT}, sort_keys=True)
    data = bytearray(_st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                              metadata={"toyflow": meta_text, "data_sha256": _SHA_PLACEHOLDER}))
    (n,) = struct.unpack("<Q", data[:8])
    mark = f'"data_sha256":"{_SHA_PLACEHOLDER}"'.encode()
    at = data.find(mark, 8, 8 + n)
    if at < 0 or data.find(mark, at + 1, 8 + n) >= 0:
        raise RuntimeError("cannot place the checksum in the safetensors header")  # not reached: serde writes compact JSON
    digest = hashlib.sha256(memoryview(data)[8 + n:]).hexdigest().encode()
    start = at + len(b'"data_sha256":"')
    data[start:start + 64] = digest
    clean_stale_temps(target)
    atomic_write_bytes(target, bytes(data))
    return target


def load_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of a training state written by :func:`save_state`, verified; read into memory
    (not memory-mapped). A state of the older two-file format (``.state.safetensors`` + ``.state.json``)
    still loads."""
    target = Path(path) if str(path).endswith(".state.safetensors") else state_path(path)
    if not target.exists():
        raise FileNotFoundError(f"no training state at {target}; train without --resume first")
    data = _read_bytes(target)
    header = _parse_header(data, target)
    meta = header.get("__metadata__") or {}
    if "toyflow" not in meta:  # the older format: the JSON beside it
        legacy = target.with_suffix(".json")
        if not legacy.exists():
            raise CheckpointError(f"{target} holds no training metadata and {legacy} is missing: not a toyflow "
                                  "training state; train without --resume to start over")
        tensors = _tensors_from(data, target)
        return tensors, _read_json(legacy)
    (n,) = struct.unpack("<Q", data[:8])
    if hashlib.sha256(memoryview(data)[8 + n:]).hexdigest() != meta.get("data_sha256"):
        raise CheckpointError(f"{target} is corrupt (the checksum of its tensors differs from the one saved); "
                              "train without --resume to start over, or restore the file from a backup")
    try:
        info = json.loads(meta["toyflow"])
    except ValueError:
        raise CheckpointError(f"{target} has unreadable training metadata; train without --resume to start over") from None
    tensors = _tensors_from(data, target)
    return tensors, info


# ---- outputs: writable, locked --------------------------------------------------------------------
def check_writable(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Raise a clear ValueError unless a file can be written at ``path`` (its folder is created).

    Meant for command-line outputs, before any compute: tries a temporary file in the folder.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file path (e.g. {path / 'out'})")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), folder)
        raise ValueError(f"{flag} {path}: {blocker} is a file, not a folder; choose another {flag}") from None
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot create the folder {folder} ({e.strerror}); choose another {flag}") from None
    probe = _temp_name(path)
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot write in {folder} ({e.strerror}); choose a writable {flag}") from None
    return path


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


class OutputLock:
    """Exclusive right to write the output ``path`` (a checkpoint path without suffix, or a file).

    ``with OutputLock(path, flag="--out"):`` creates ``path.lock`` holding this process's id; a second
    writer gets :class:`OutputLocked` naming the holder. The lock is an ``flock`` on that file, so
    the kernel releases it when its holder dies, however it dies: a stale lock file of a dead
    process is taken over. Where ``flock`` is missing (Windows) the file is created exclusively and
    a lock of a dead process on this host is removed. Not reentrant.
    """

    def __init__(self, path: str | os.PathLike, flag: str = "--out", command: str = "", what: str = "output"):
        self.target, self.flag, self.command, self.what = Path(path), flag, command, what
        self.path = _lock_path(self.target)
        self.fd: Optional[int] = None

    def _holder(self, text: str) -> str:
        try:
            info = json.loads(text)
            return f"process {info.get('pid')} on {info.get('host')}, since {info.get('since')}"
        except (ValueError, AttributeError):
            return "another process"

    def _refuse(self, holder: str):
        raise OutputLocked(
            f"{self.what} {self.target} is being written by {holder} (lock {self.path}); wait for it to finish, "
            f"or choose another {self.flag}"
        )

    def _stamp(self, fd: int) -> None:
        info = {"pid": os.getpid(), "host": _HOST, "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": self.command}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info).encode())

    def acquire(self) -> "OutputLock":
        if self.fd is not None:
            raise RuntimeError(f"{self.path} is already held by this OutputLock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self._acquire_exclusive()
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                text = os.pread(fd, 4096, 0).decode("utf-8", "replace") if hasattr(os, "pread") else ""
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    self._refuse(self._holder(text))
                raise
            try:  # the holder before us may have removed the file after we opened it: lock the current one
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self._stamp(fd)
            self.fd = fd
            return self
        raise OutputLocked(f"could not lock {self.path}: it keeps being replaced; is another process looping on it?")

    def _acquire_exclusive(self) -> "OutputLock":  # pragma: no cover - Windows
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                try:
                    text = self.path.read_text()
                    info = json.loads(text)
                except (OSError, ValueError):
                    text, info = "", {}
                if info.get("host") == _HOST and isinstance(info.get("pid"), int) and not _pid_alive(info["pid"]):
                    try:
                        os.unlink(self.path)
                    except OSError:
                        pass
                    continue
                self._refuse(self._holder(text))
            self._stamp(fd)
            self.fd = fd
            return self
        self._refuse("another process")

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
