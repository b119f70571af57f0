"""Crash safety of checkpoints and training states (issue 15): fault injection at every file
operation of a save, exact resume afterwards, the output lock, stale temp files, reading states
into memory, corrupt / torn / tampered / pickled files.

A "crash" is a process death at the k-th file operation (os.open, os.write, os.fsync, os.replace,
...): that operation raises (a write first writes half its bytes), and so does every later one, so
no cleanup handler touches the disk any more (closing files still works: the kernel does it).
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from toyflow import checkpoint
from toyflow.checkpoint import CheckpointError, OutputLock, OutputLocked
from toyflow.models import VelocityMLP, load_model, save_model
from toyflow.train import TrainConfig, train_flow

OPS = ("open", "write", "fsync", "replace", "rename", "close", "unlink", "remove", "mkdir", "chmod", "ftruncate",
       "link", "symlink", "truncate")


class Crash(BaseException):
    pass


class Faults:
    """Counts file operations while ``armed``; at number ``at`` the process dies (see the module doc)."""

    def __init__(self, monkeypatch, at=None):
        self.at, self.count, self.dead, self.armed, self.ops = at, 0, False, False, []
        for name in OPS:
            if hasattr(os, name):
                monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))

    def _wrap(self, name, fn):
        def op(*a, **k):
            if not self.armed:
                return fn(*a, **k)
            if self.dead:
                if name == "close":
                    fn(*a, **k)
                raise Crash(name)
            i, self.count = self.count, self.count + 1
            self.ops.append(name)
            if i == self.at:
                self.dead = True
                if name == "write" and len(a[1]) > 1:
                    fn(a[0], bytes(memoryview(a[1])[: len(a[1]) // 2]))
                elif name == "close":
                    fn(*a, **k)
                raise Crash(f"{name} #{i}")
            return fn(*a, **k)

        return op


def _armed(faults, fn, *a, **k):
    faults.armed = True
    try:
        return fn(*a, **k)
    finally:
        faults.armed = False


def _temps(folder):
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


# ---- checkpoint.save / save_state at every crash position -------------------------------------------
def test_checkpoint_save_crash_at_every_operation_leaves_old_or_new(tmp_path, monkeypatch):
    old = {"w": torch.zeros(4), "b": torch.ones(2)}
    new = {"w": torch.arange(4.0), "b": torch.full((2,), 7.0)}
    counter = Faults(monkeypatch)
    _armed(counter, checkpoint.save, tmp_path / "count", new, {"v": 2})
    n = len(counter.ops)
    assert n >= 12 and {"write", "fsync", "replace"} <= set(counter.ops)
    monkeypatch.undo()
    outcomes = set()
    for k in range(n):
        path = tmp_path / f"k{k}" / "c"
        checkpoint.save(path, old, {"v": 1})
        faults = Faults(monkeypatch, at=k)
        with pytest.raises(Crash):
            _armed(faults, checkpoint.save, path, new, {"v": 2})
        monkeypatch.undo()
        try:
            tensors, config = checkpoint.load(path)
        except CheckpointError as e:  # new weights beside the old JSON: refused, naming both files
            assert "c.safetensors" in str(e) and "c.json" in str(e) and "--resume" in str(e)
            outcomes.add("refused")
            continue
        want = old if config["v"] == 1 else new
        assert tensors.keys() == want.keys() and all(torch.equal(tensors[n_], want[n_]) for n_ in want), k
        outcomes.add(config["v"])
    assert outcomes == {1, 2, "refused"}
    # the crashed writers are dead: the next save of each target removes their temp files
    assert _temps(tmp_path)
    monkeypatch.setattr(checkpoint, "_pid_alive", lambda pid: False)
    for k in range(n):
        checkpoint.save(tmp_path / f"k{k}" / "c", new, {"v": 3})
    assert not _temps(tmp_path)


def test_save_state_crash_at_every_operation_leaves_old_or_new(tmp_path, monkeypatch):
    old, new = {"x": torch.zeros(3)}, {"x": torch.arange(3.0), "y": torch.ones(1)}
    counter = Faults(monkeypatch)
    _armed(counter, checkpoint.save_state, tmp_path / "count", new, {"step": 2})
    monkeypatch.undo()
    seen = set()
    for k in range(len(counter.ops)):
        path = tmp_path / f"k{k}" / "run"
        checkpoint.save_state(path, old, {"step": 1})
        faults = Faults(monkeypatch, at=k)
        with pytest.raises(Crash):
            _armed(faults, checkpoint.save_state, path, new, {"step": 2})
        monkeypatch.undo()
        tensors, meta = checkpoint.load_state(path)  # one file: always one whole state, never refused
        want = old if meta["step"] == 1 else new
        assert tensors.keys() == want.keys() and all(torch.equal(tensors[n], want[n]) for n in want)
        seen.add(meta["step"])
    assert seen == {1, 2}
    assert [p.name for p in (tmp_path / "k0").iterdir() if not p.name.startswith(".")] == ["run.state.safetensors"]


# ---- training: crash at every operation of a save, then --resume ------------------------------------
CFG = TrainConfig(steps=6, batch_size=16, warmup=1, checkpoint_every=2, progress=False, device="cpu")


def _data(n, g):
    return torch.randn(n, 2, generator=g) * 0.5 + 1.0


def _train(path, cfg=CFG, resume=False, data=_data):
    return train_flow(VelocityMLP(hidden=8, depth=1, time_dim=4), data, "linear", cfg, checkpoint_path=path,
                      resume=resume, extra_config={"command": "test"})


def _state(path):
    return checkpoint.load_state(path)[0]


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _crash_in_save(monkeypatch, faults, path, save_index):
    import toyflow.train as T

    real, calls = T._save_training_state, {"n": 0}

    def save(*a, **k):
        calls["n"] += 1
        if calls["n"] == save_index:
            return _armed(faults, real, *a, **k)
        return real(*a, **k)

    monkeypatch.setattr(T, "_save_training_state", save)
    try:
        _train(path)
    finally:
        monkeypatch.setattr(T, "_save_training_state", real)


@pytest.mark.parametrize("save_index", [2, 4], ids=["periodic-save-at-step-4", "final-save-at-step-6"])
def test_training_crash_at_every_file_operation_then_resume_is_bit_identical(tmp_path, monkeypatch, save_index):
    """saves: step 2, 4, 6 (periodic), 6 (final). Crash at every file operation of one of them."""
    ref = _train(tmp_path / "ref" / "run")
    ref_state = _state(tmp_path / "ref" / "run")
    counter = Faults(monkeypatch)
    _crash_in_save(monkeypatch, counter, tmp_path / "count" / "run", save_index)
    n = len(counter.ops)
    assert n >= 20 and counter.ops.count("replace") == 3  # state, weights, JSON
    monkeypatch.undo()
    steps_seen = set()
    for k in range(n):
        out = tmp_path / f"k{k}" / "run"
        faults = Faults(monkeypatch, at=k)
        with pytest.raises(Crash):
            _crash_in_save(monkeypatch, faults, out, save_index)
        monkeypatch.undo()
        # the state is the previous save's or the new one's, whole
        _, meta = checkpoint.load_state(out)
        steps_seen.add(meta["step"])
        assert meta["step"] in ((2 * save_index - 2, 2 * save_index) if save_index < 4 else (6,))
        res = _train(out, resume=True)
        assert res.losses == ref.losses, k
        assert _equal(res.model.state_dict(), ref.model.state_dict()), k
        assert _equal(res.raw_model.state_dict(), ref.raw_model.state_dict()), k
        assert _equal(_state(out), ref_state), k  # optimizer moments, RNG, losses, step: all of it
        assert _equal(load_model(out).state_dict(), ref.model.state_dict()), k
        assert json.loads(out.with_suffix(".json").read_text())["step"] == 6
        assert not _temps(out.parent) and not out.with_name("run.lock").exists(), (k, _temps(out.parent))
    if save_index == 2:
        assert steps_seen == {2, 4}


def test_second_writer_refused_while_a_training_runs(tmp_path):
    seen = {}

    def data(n, g):
        if "err" not in seen:
            with pytest.raises(OutputLocked) as e:
                _train(tmp_path / "run")
            seen["err"] = str(e.value)
        return _data(n, g)

    _train(tmp_path / "run", data=data)
    assert f"{tmp_path / 'run'} is being written by process {os.getpid()}" in seen["err"]
    assert "choose another --out" in seen["err"]
    assert not (tmp_path / "run.lock").exists()
    _train(tmp_path / "run", resume=True, cfg=TrainConfig(**{**CFG.__dict__, "steps": 8}))  # free again


def test_lock_held_by_another_process_then_stale_after_it_dies(tmp_path):
    lock = tmp_path / "out.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "os.write(fd, b'{\"pid\": %d, \"host\": \"h\"}' % os.getpid()); fcntl.flock(fd, fcntl.LOCK_EX); "
         "print('locked', flush=True); sys.stdin.read()", str(lock)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLocked, match=f"process {holder.pid} on h"):
            OutputLock(tmp_path / "out").acquire()
    finally:
        holder.kill()
        holder.wait()
    assert lock.exists()  # a stale lock file of a dead process: taken over
    with OutputLock(tmp_path / "out") as held:
        assert json.loads(lock.read_text())["pid"] == os.getpid() and held.fd is not None
    assert not lock.exists()


def test_resume_with_fewer_steps_is_refused_and_writes_nothing(tmp_path):
    _train(tmp_path / "run")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match=r"already at step 6; pass --steps 6 or more"):
        _train(tmp_path / "run", cfg=TrainConfig(**{**CFG.__dict__, "steps": 3}), resume=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_training_state_is_one_file_read_into_memory(tmp_path):
    _train(tmp_path / "run", cfg=TrainConfig(**{**CFG.__dict__, "steps": 2}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json", "run.safetensors", "run.state.safetensors"]
    header = checkpoint.read_header(tmp_path / "run.state.safetensors")
    meta = json.loads(header["__metadata__"]["toyflow"])
    assert meta["step"] == 2 and meta["format"] == checkpoint.STATE_FORMAT and meta["command"] == "test"
    assert {"rng", "losses", "model.net.0.weight", "ema.net.0.weight", "opt.0.exp_avg"} <= header.keys()
    maps = {}

    def data(n, g):
        if os.path.exists("/proc/self/maps"):
            maps["text"] = open("/proc/self/maps").read()
        return _data(n, g)

    _train(tmp_path / "run", cfg=TrainConfig(**{**CFG.__dict__, "steps": 4}), resume=True, data=data)
    assert "run.state.safetensors" not in maps.get("text", "")  # the replaced file's space is freed at once


def test_legacy_two_file_state_still_resumes(tmp_path):
    four, six = (TrainConfig(**{**CFG.__dict__, "steps": s, "checkpoint_every": 0}) for s in (4, 6))
    _train(tmp_path / "direct", cfg=four)
    direct = _train(tmp_path / "direct", cfg=six, resume=True)
    # the same step-4 state in the older format: legacy.state.safetensors + legacy.state.json (the step)
    _train(tmp_path / "legacy", cfg=four)
    tensors, meta = checkpoint.load_state(tmp_path / "legacy")
    (tmp_path / "legacy.state.safetensors").unlink()
    checkpoint.save(tmp_path / "legacy.state", tensors, {k: v for k, v in meta.items() if k != "format"})
    assert "toyflow" not in checkpoint.read_header(tmp_path / "legacy.state.safetensors").get("__metadata__", {})
    resumed = _train(tmp_path / "legacy", cfg=six, resume=True)
    assert resumed.losses == direct.losses and _equal(resumed.model.state_dict(), direct.model.state_dict())
    assert not (tmp_path / "legacy.state.json").exists()  # the stale JSON goes with the first new save


def test_corrupt_truncated_pickled_and_torn_files_are_named(tmp_path):
    _train(tmp_path / "run", cfg=TrainConfig(**{**CFG.__dict__, "steps": 2}))
    state = tmp_path / "run.state.safetensors"
    data = bytearray(state.read_bytes())
    data[-3] ^= 0xFF  # one flipped bit in the tensors
    state.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"run\.state\.safetensors is corrupt"):
        _train(tmp_path / "run", cfg=TrainConfig(**{**CFG.__dict__, "steps": 4}), resume=True)
    state.write_bytes(bytes(data[:-10]))
    with pytest.raises(CheckpointError, match=r"run\.state\.safetensors is truncated"):
        checkpoint.load_state(tmp_path / "run")
    weights = tmp_path / "run.safetensors"
    torch.save({"w": torch.ones(2)}, weights)
    with pytest.raises(CheckpointError, match=r"run\.safetensors is a pickle"):
        load_model(tmp_path / "run")
    weights.write_bytes(b"\x00" * 3)
    with pytest.raises(CheckpointError, match=r"run\.safetensors is truncated"):
        load_model(tmp_path / "run")
    (tmp_path / "run.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"run\.json holds a JSON list"):
        load_model(tmp_path / "run")


def test_tampered_config_fails_on_the_meta_device_before_building(tmp_path, monkeypatch):
    import toyflow.models as M

    save_model(tmp_path / "m", VelocityMLP(hidden=8, depth=3))
    cfg = json.loads((tmp_path / "m.json").read_text())
    cfg["arch_config"]["hidden"] = 20000  # 3.3 GB of float32 if built
    (tmp_path / "m.json").write_text(json.dumps(cfg))
    devices = []
    real = M.build
    monkeypatch.setattr(M, "build", lambda *a: devices.append(torch.get_default_device().type) or real(*a))
    with pytest.raises(ValueError, match=r"does not match architecture 'mlp'.*'net.0.bias': file \(8,\), config \(20000,\)"):
        load_model(tmp_path / "m")
    assert devices == ["meta"]


def test_shipped_weights_load_as_before():
    from toyflow import pretrained

    import hashlib

    for name in pretrained.available():
        config = pretrained.info(name)
        if "weights_sha256" in config:  # saved by the current code: the pair is checked on load
            assert config["weights_sha256"] == hashlib.sha256(pretrained.path(name).read_bytes()).hexdigest()
        # files made before the hash load unchecked, as before
        model = pretrained.load(name)
        assert type(model).arch == pretrained.MODELS[name]


def test_save_keeps_its_signature_and_records_the_hash(tmp_path):
    import hashlib

    m = VelocityMLP(hidden=8, depth=1)
    assert checkpoint.save(tmp_path / "a", m.state_dict(), {"arch": "mlp", "arch_config": m.config()}) == tmp_path / "a.safetensors"
    save_model(tmp_path / "b", m, step=3, note="x")
    cfg = json.loads((tmp_path / "b.json").read_text())
    assert cfg["weights_sha256"] == hashlib.sha256((tmp_path / "b.safetensors").read_bytes()).hexdigest()
    assert cfg["step"] == 3 and _equal(load_model(tmp_path / "b").state_dict(), m.state_dict())
    with pytest.raises(TypeError):  # a config that is not JSON fails before anything is written
        checkpoint.save(tmp_path / "c", m.state_dict(), {"bad": object()})
    assert not list(tmp_path.glob("c*")) and not _temps(tmp_path)


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    _train(tmp_path / "run", cfg=TrainConfig(**{**CFG.__dict__, "steps": 2}))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as e:
        _train(tmp_path / "run", cfg=TrainConfig(**{**CFG.__dict__, "steps": 4}), resume=True)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "run.state.safetensors")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp file, no lock, nothing changed


def test_check_writable(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"file is a file, not a folder; choose another --out"):
        checkpoint.check_writable(tmp_path / "file" / "sub" / "x.csv")
    with pytest.raises(ValueError, match="is a folder"):
        checkpoint.check_writable(tmp_path, "--plot")
    assert checkpoint.check_writable(tmp_path / "new" / "x.csv") == tmp_path / "new" / "x.csv"
    assert (tmp_path / "new").is_dir() and not list((tmp_path / "new").iterdir())
