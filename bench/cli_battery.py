"""Adversarial battery of the ``toyflow`` command and the checkpoint / training-state code.

    python bench/cli_battery.py              # every case, then a summary table
    python bench/cli_battery.py -k resume    # only the cases whose name contains "resume"
    python bench/cli_battery.py -v           # also each case's detail (the error line, what differed)

Each case is run in this process (``toyflow.cli.main(argv)``, or the Python API) in its own temporary
folder and classified as

- good: an error path exits non-zero (or raises a clear exception) with one line naming the problem
  (and, where a case asks, before any compute); a valid call does the right thing;
- unclear: refused, but with no clear single line, a message that misses the point, or after the compute;
- silent wrong: exit 0 / no exception, with a wrong or useless result;
- crash: a traceback (an exception escaping ``main``), or an unexpected exception type from the API.

The same cases run as tests (tests/test_cli_errors.py), so none comes back.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

GOOD, UNCLEAR, SILENT, CRASH = "good", "unclear", "silent wrong", "crash"
OUTCOMES = (GOOD, UNCLEAR, SILENT, CRASH)


# ---- running the command in-process -------------------------------------------------------------
@dataclass
class Call:
    rc: int
    out: str
    err: str
    exc: BaseException | None  # an exception that escaped main(): a traceback for the user
    computed: list  # which of the compute entry points ran


COMPUTE = (("toyflow.train", "_fit"), ("toyflow.search", "run"), ("toyflow.dynamics", "sample"),
           ("toyflow.models", "load_model"))


@contextlib.contextmanager
def watch_compute(seen: list):
    import importlib

    saved = []
    for mod_name, attr in COMPUTE:
        mod = importlib.import_module(mod_name)
        fn = getattr(mod, attr)

        def wrapper(*a, __fn=fn, __name=f"{mod_name}.{attr}", **k):
            seen.append(__name)
            return __fn(*a, **k)

        saved.append((mod, attr, fn))
        setattr(mod, attr, wrapper)
    try:
        yield
    finally:
        for mod, attr, fn in saved:
            setattr(mod, attr, fn)


def cli(argv) -> Call:
    from toyflow import cli as toyflow_cli

    out, err, seen = io.StringIO(), io.StringIO(), []
    rc, exc = 0, None
    logging.root.handlers.clear()  # main() installs a handler on the current (redirected) stderr
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), watch_compute(seen):
        try:
            rc = int(toyflow_cli.main([str(a) for a in argv]) or 0)
        except SystemExit as e:  # what the interpreter would do with it
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
                rc = 1
            else:
                rc = int(e.code or 0)
        except BaseException as e:  # noqa: BLE001 - a traceback for the user
            exc, rc = e, 1
    return Call(rc, out.getvalue(), err.getvalue(), exc, seen)


def error_lines(call: Call) -> list[str]:
    return [ln for ln in call.err.splitlines() if "error" in ln.lower()]


def judge_error(call: Call, *patterns: str, before_compute: bool = False) -> tuple[str, str]:
    """An error path: non-zero exit, one error line matching every pattern, no traceback."""
    if call.exc is not None:
        return CRASH, f"{type(call.exc).__name__}: {str(call.exc).splitlines()[0] if str(call.exc) else ''}"
    if call.rc == 0:
        return SILENT, "exit 0"
    lines = error_lines(call)
    line = lines[-1] if lines else (call.err.strip().splitlines() or [""])[-1]
    if "Traceback" in call.err or len(lines) != 1:
        return UNCLEAR, f"rc {call.rc}, {len(lines)} error lines: {line[:160]}"
    missing = [p for p in patterns if not re.search(p, line, re.I)]
    if missing:
        return UNCLEAR, f"rc {call.rc}, line misses {missing}: {line[:200]}"
    if before_compute and call.computed:
        return UNCLEAR, f"refused only after the compute ({', '.join(sorted(set(call.computed)))}): {line[:160]}"
    return GOOD, line[:200]


def judge_ok(call: Call, check: Callable[[], str | None]) -> tuple[str, str]:
    """A valid call: exit 0 and ``check()`` returns None (else what is wrong)."""
    if call.exc is not None:
        return CRASH, f"{type(call.exc).__name__}: {call.exc}"
    if call.rc != 0:
        return UNCLEAR, f"refused a valid call: rc {call.rc}: {call.err.strip()[-200:]}"
    problem = check()
    return (SILENT, problem) if problem else (GOOD, "ok")


def judge_api(fn: Callable, *patterns: str, types=(ValueError, FloatingPointError, TypeError),
              check: Callable | None = None) -> tuple[str, str]:
    """A Python call that must raise a clear error (or, with ``check``, may instead return a correct result)."""
    try:
        result = fn()
    except types as e:
        missing = [p for p in patterns if not re.search(p, str(e), re.I)]
        if missing:
            return UNCLEAR, f"{type(e).__name__} misses {missing}: {str(e)[:200]}"
        return GOOD, f"{type(e).__name__}: {str(e)[:200]}"
    except Exception as e:  # noqa: BLE001
        return CRASH, f"{type(e).__name__}: {str(e)[:200]}"
    if check is not None:
        problem = check(result)
        return (SILENT, problem) if problem else (GOOD, "returned a correct result")
    return SILENT, f"returned {str(result)[:120]!r} without an error"


# ---- fault injection: a process death at the k-th file operation --------------------------------
class Crash(BaseException):
    """The process died here (kill -9): nothing after it runs, except the kernel closing files."""


class FaultInjector:
    """Counts the file operations made while armed; at operation ``crash_at`` the process 'dies':
    that operation raises (a write first writes half its bytes; a close still closes, as the kernel
    would) and so does every later one, so no cleanup handler can touch the disk any more."""

    OPS = ("open", "write", "fsync", "replace", "rename", "close", "unlink", "remove", "mkdir", "chmod",
           "ftruncate", "link", "symlink", "truncate")

    def __init__(self, crash_at: int | None = None):
        self.crash_at, self.count, self.dead, self.armed, self.ops = crash_at, 0, False, False, []
        self._saved = {}

    def _wrap(self, name, fn):
        def op(*a, **k):
            if not self.armed:
                return fn(*a, **k)
            if self.dead:
                if name == "close":
                    fn(*a, **k)
                raise Crash(f"dead before {name}")
            i = self.count
            self.count += 1
            self.ops.append(name)
            if self.crash_at is not None and i == self.crash_at:
                self.dead = True
                if name == "write" and len(a) > 1 and len(a[1]) > 1:
                    fn(a[0], bytes(memoryview(a[1])[: len(a[1]) // 2]))
                elif name == "close":
                    fn(*a, **k)
                raise Crash(f"killed at file operation {i} ({name})")
            return fn(*a, **k)

        return op

    def __enter__(self):
        for name in self.OPS:
            if hasattr(os, name):
                self._saved[name] = getattr(os, name)
                setattr(os, name, self._wrap(name, self._saved[name]))
        return self

    def __exit__(self, *exc):
        for name, fn in self._saved.items():
            setattr(os, name, fn)
        return False


def _tiny_cfg(**kw):
    from toyflow.train import TrainConfig

    base = dict(steps=6, batch_size=16, warmup=1, checkpoint_every=2, progress=False, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def _data(n, g):
    return torch.randn(n, 2, generator=g) * 0.5 + 1.0


def _tiny_model():
    from toyflow.models import VelocityMLP

    return VelocityMLP(hidden=8, depth=1, time_dim=4)


def _train(path, cfg=None, resume=False, data=_data):
    from toyflow.train import train_flow

    return train_flow(_tiny_model(), data, "linear", cfg or _tiny_cfg(), checkpoint_path=path, resume=resume,
                      extra_config={"command": "battery"})


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


_FAULT_CACHE: dict = {}


def fault_sweep(save_index: int = 2) -> dict:
    """Crash at every file operation of the ``save_index``-th training-state save (step 4 of 6), then
    resume; compare with one uninterrupted run. Cached: three cases read it."""
    if save_index in _FAULT_CACHE:
        return _FAULT_CACHE[save_index]
    import toyflow.train as T
    from toyflow.models import load_model

    tmp = Path(tempfile.mkdtemp(prefix="battery-fault-"))
    snapshots = []  # EMA weights at each save of the reference run
    real_save = T._save_training_state

    def snap(path, model, ema, *a, **k):
        snapshots.append({k2: v.clone() for k2, v in ema.state_dict().items()})
        return real_save(path, model, ema, *a, **k)

    T._save_training_state = snap
    try:
        ref = _train(tmp / "ref" / "run")
    finally:
        T._save_training_state = real_save
    ref_ema, ref_raw = ref.model.state_dict(), ref.raw_model.state_dict()
    prev_ema, new_ema = snapshots[save_index - 2], snapshots[save_index - 1]

    def run_with(injector, out):
        calls = {"n": 0}

        def save(*a, **k):
            calls["n"] += 1
            if calls["n"] == save_index:
                injector.armed = True
                try:
                    return real_save(*a, **k)
                finally:
                    injector.armed = False
            return real_save(*a, **k)

        T._save_training_state = save
        try:
            with injector:
                return _train(out)
        finally:
            T._save_training_state = real_save

    counter = FaultInjector(None)
    run_with(counter, tmp / "count" / "run")
    results = {"ops": counter.ops, "mismatch": [], "resume_errors": [], "torn_pairs": [], "tmp_left": [],
               "tmp_after_crash": 0}
    for k in range(len(counter.ops)):
        out = tmp / f"k{k}" / "run"
        try:
            run_with(FaultInjector(k), out)
            results["resume_errors"].append((k, "no crash happened"))
            continue
        except Crash:
            pass
        if list(out.parent.glob(".*tmp")):
            results["tmp_after_crash"] += 1
        # right after the crash: the inference checkpoint is the previous one, the new one, or refused
        try:
            m = load_model(out)
            step = json.loads(out.with_name("run.json").read_text()).get("step")
            got = m.state_dict()
            if not ((_same_state(got, prev_ema) and step == 2 * (save_index - 1))
                    or (_same_state(got, new_ema) and step == 2 * save_index)):
                results["torn_pairs"].append((k, counter.ops[k], f"weights of another save than its JSON (step {step})"))
        except ValueError:
            pass  # refused with a clear error: fine (a torn pair detected)
        except Exception as e:  # noqa: BLE001
            results["torn_pairs"].append((k, counter.ops[k], f"{type(e).__name__}: {e}"))
        try:
            res = _train(out, resume=True)
        except Exception as e:  # noqa: BLE001
            results["resume_errors"].append((k, counter.ops[k], f"{type(e).__name__}: {str(e)[:120]}"))
            continue
        same = (res.losses == ref.losses and _same_state(res.model.state_dict(), ref_ema)
                and _same_state(res.raw_model.state_dict(), ref_raw))
        try:
            same = same and _same_state(load_model(out).state_dict(), ref_ema)
        except Exception:  # noqa: BLE001
            same = False
        if not same:
            results["mismatch"].append((k, counter.ops[k]))
        left = [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")]
        if left:
            results["tmp_left"].append((k, left))
    _FAULT_CACHE[save_index] = results
    return results


# ---- the cases ------------------------------------------------------------------------------------
CASES: dict[str, Callable[[Path], tuple[str, str]]] = {}


def case(fn):
    CASES[fn.__name__.removeprefix("case_")] = fn
    return fn


TRAIN = ["train", "2d", "--steps", "4", "--hidden", "8", "--depth", "1", "--batch-size", "16", "--quiet"]


def _train_cli(tmp, *extra, out="m"):
    return cli(TRAIN + ["--out", tmp / out] + list(extra))


@case
def case_train_ok(tmp):
    from toyflow.models import load_model

    call = _train_cli(tmp)
    return judge_ok(call, lambda: None if load_model(tmp / "m").hidden == 8 else "wrong model saved")


@case
def case_train_device_bogus(tmp):
    return judge_error(_train_cli(tmp, "--device", "foo"), "device", before_compute=True)


@case
def case_train_hidden_negative(tmp):
    return judge_error(_train_cli(tmp, "--hidden", "-1"), "hidden")


@case
def case_train_hidden_zero(tmp):
    return judge_error(_train_cli(tmp, "--hidden", "0"), "hidden")


@case
def case_train_depth_zero(tmp):
    return judge_error(_train_cli(tmp, "--depth", "0"), "depth")


@case
def case_train_checkpoint_every_negative(tmp):
    return judge_error(_train_cli(tmp, "--checkpoint-every", "-2"), "checkpoint")


@case
def case_train_lr_huge(tmp):
    return judge_error(cli(["train", "2d", "--steps", "60", "--quiet", "--lr", "1e6", "--out", tmp / "m"]),
                       r"\blr\b|learning rate")


@case
def case_train_lr_negative(tmp):
    return judge_error(_train_cli(tmp, "--lr", "-1"), r"\blr\b|learning rate")


@case
def case_train_lr_nan(tmp):
    return judge_error(_train_cli(tmp, "--lr", "nan"), r"\blr\b|learning rate")


@case
def case_train_steps_zero(tmp):
    return judge_error(_train_cli(tmp, "--steps", "0"), "steps")


@case
def case_train_batch_zero(tmp):
    return judge_error(_train_cli(tmp, "--batch-size", "0"), "batch")


@case
def case_train_ema_out_of_range(tmp):
    return judge_error(_train_cli(tmp, "--ema-decay", "1.5"), "ema")


@case
def case_train_dataset_bogus(tmp):
    return judge_error(_train_cli(tmp, "--dataset", "donuts"), "dataset")


@case
def case_train_schedule_bogus(tmp):
    return judge_error(_train_cli(tmp, "--schedule", "bogus"), "schedule|interpolant", before_compute=True)


@case
def case_train_out_unwritable(tmp):
    (tmp / "file").write_text("x")
    return judge_error(cli(TRAIN + ["--out", tmp / "file" / "sub" / "m"]), "out|file", before_compute=True)


@case
def case_train_disk_full(tmp):
    real = os.fsync

    def full(fd):
        raise OSError(28, "No space left on device")

    os.fsync = full
    try:
        call = _train_cli(tmp)
    finally:
        os.fsync = real
    return judge_error(call, "space", r"\bm\b|m\.")


@case
def case_train_ctrl_c(tmp):
    import toyflow.train as T

    real = T._fit

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    T._fit = interrupted
    try:
        call = _train_cli(tmp)
    finally:
        T._fit = real
    if call.exc is not None:
        return CRASH, f"{type(call.exc).__name__} escaped main"
    if call.rc == 0:
        return SILENT, "exit 0"
    lines = [ln for ln in call.err.splitlines() if ln.strip()]
    return (GOOD, lines[-1]) if len(lines) == 1 and "interrupt" in lines[0].lower() else (UNCLEAR, call.err[-200:])


@case
def case_train_resume_missing(tmp):
    return judge_error(_train_cli(tmp, "--resume"), "resume")


@case
def case_train_resume_fewer_steps(tmp):
    if _train_cli(tmp, "--steps", "6").rc != 0:
        return CRASH, "the first training failed"
    call = _train_cli(tmp, "--steps", "3", "--resume")
    verdict = judge_error(call, "steps")
    if verdict[0] == SILENT:
        step = json.loads((tmp / "m.json").read_text()).get("step")
        return SILENT, f"exit 0; the checkpoint now says step {step} and holds the step-6 weights"
    return verdict


@case
def case_train_resume_other_architecture(tmp):
    if _train_cli(tmp).rc != 0:
        return CRASH, "the first training failed"
    return judge_error(_train_cli(tmp, "--hidden", "16", "--resume", "--steps", "6"), "architecture|hidden|shape")


@case
def case_train_resume_after_interrupt_is_exact(tmp):
    import toyflow.train as T
    from toyflow.models import load_model

    full = _train_cli(tmp, "--steps", "6", "--checkpoint-every", "2", out="full")
    if full.rc != 0:
        return CRASH, "the uninterrupted training failed"
    real, n = T._save_training_state, {"k": 0}

    def save_then_die(*a, **k):
        real(*a, **k)
        n["k"] += 1
        if n["k"] == 2:
            raise KeyboardInterrupt  # killed right after the step-4 checkpoint

    T._save_training_state = save_then_die
    try:
        _train_cli(tmp, "--steps", "6", "--checkpoint-every", "2", out="cut")
    finally:
        T._save_training_state = real
    call = _train_cli(tmp, "--steps", "6", "--checkpoint-every", "2", "--resume", out="cut")
    return judge_ok(call, lambda: None if _same_state(load_model(tmp / "full").state_dict(),
                                                      load_model(tmp / "cut").state_dict()) else "weights differ")


@case
def case_crash_at_every_save_operation_then_resume(tmp):
    r = fault_sweep()
    if r["resume_errors"]:
        return CRASH, f"{len(r['resume_errors'])}/{len(r['ops'])} positions: resume failed, e.g. {r['resume_errors'][0]}"
    if r["mismatch"]:
        return SILENT, (f"{len(r['mismatch'])}/{len(r['ops'])} crash positions resume to other weights than the "
                        f"uninterrupted run, e.g. after {r['mismatch'][0]}")
    return GOOD, f"all {len(r['ops'])} crash positions resume bit-identically"


@case
def case_crash_leaves_previous_or_new_checkpoint(tmp):
    r = fault_sweep()
    if r["torn_pairs"]:
        return SILENT, f"{len(r['torn_pairs'])}/{len(r['ops'])} crash positions leave a mix, e.g. {r['torn_pairs'][0]}"
    return GOOD, f"all {len(r['ops'])} crash positions: previous or new checkpoint (or a clear refusal)"


@case
def case_stale_temp_files_cleaned(tmp):
    r = fault_sweep()
    if r["tmp_left"]:
        return SILENT, (f"{len(r['tmp_left'])}/{len(r['ops'])} crash positions leave temp files after the resume, "
                        f"e.g. {r['tmp_left'][0]}")
    return GOOD, f"{r['tmp_after_crash']} crashes left temp files; the resume removed them all"


@case
def case_second_writer_refused(tmp):
    seen = {}

    def data(n, g):
        seen["n"] = seen.get("n", 0) + 1
        if seen["n"] == 2:  # while the first training runs: a second one to the same --out
            seen["call"] = _train_cli(tmp, out="run")
        return _data(n, g)

    try:
        _train(tmp / "run", data=data)
    except Exception as e:  # noqa: BLE001
        return CRASH, f"the first writer failed: {type(e).__name__}: {e}"
    return judge_error(seen["call"], "another|lock|already|in use", r"run")


@case
def case_stale_lock_of_dead_process(tmp):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    (tmp / "m.lock").write_text(json.dumps({"pid": p.pid, "host": os.uname().nodename}))
    return judge_ok(_train_cli(tmp), lambda: None)


@case
def case_resume_does_not_keep_state_mapped(tmp):
    if not Path("/proc/self/maps").exists():
        return GOOD, "no /proc/self/maps here (not Linux): not checked"
    _train(tmp / "run", _tiny_cfg(steps=2, checkpoint_every=0))
    seen = {}

    def data(n, g):
        maps = Path("/proc/self/maps").read_text()
        seen["mapped"] = str(tmp / "run.state") in maps
        return _data(n, g)

    _train(tmp / "run", _tiny_cfg(steps=4, checkpoint_every=0), resume=True, data=data)
    return (SILENT, "the old state file stays mapped: a resume needs twice its disk") if seen["mapped"] else (GOOD, "not mapped")


def _small_checkpoint(tmp, name="ck", **kw):
    from toyflow.models import VelocityMLP, save_model

    torch.manual_seed(0)
    save_model(tmp / name, VelocityMLP(hidden=kw.pop("hidden", 8), depth=kw.pop("depth", 1)), **kw)
    return tmp / name


SAMPLE = ["sample", "--n", "50", "--steps", "3"]


@case
def case_sample_ok(tmp):
    call = cli(SAMPLE + ["--pretrained", "2d-8gaussians", "--out", tmp / "s.png"])
    return judge_ok(call, lambda: None if (tmp / "s.png").read_bytes()[:4] == b"\x89PNG" else "no PNG")


@case
def case_sample_pretrained_classifier(tmp):
    return judge_error(cli(SAMPLE + ["--pretrained", "mnist-reward", "--out", tmp / "s.png"]), "flow")


@case
def case_sample_pretrained_unknown(tmp):
    return judge_error(cli(SAMPLE + ["--pretrained", "nope", "--out", tmp / "s.png"]), "nope")


@case
def case_sample_both_sources(tmp):
    ck = _small_checkpoint(tmp)
    return judge_error(cli(SAMPLE + ["--pretrained", "2d-8gaussians", "--checkpoint", ck, "--out", tmp / "s.png"]),
                       "exactly one|one of")


@case
def case_sample_n_negative(tmp):
    return judge_error(cli(["sample", "--pretrained", "2d-8gaussians", "--n", "-1", "--out", tmp / "s.png"]), r"--n\b|\bn\b")


@case
def case_sample_n_zero(tmp):
    return judge_error(cli(["sample", "--pretrained", "2d-8gaussians", "--n", "0", "--out", tmp / "s.png"]), r"--n\b|\bn\b")


@case
def case_sample_steps_zero(tmp):
    return judge_error(cli(["sample", "--pretrained", "2d-8gaussians", "--steps", "0", "--out", tmp / "s.png"]), "steps")


@case
def case_sample_out_unwritable(tmp):
    (tmp / "file").write_text("x")
    return judge_error(cli(SAMPLE + ["--pretrained", "2d-8gaussians", "--out", tmp / "file" / "s.png"]), "out|file",
                       before_compute=True)


@case
def case_sample_out_unknown_format(tmp):
    return judge_error(cli(SAMPLE + ["--pretrained", "2d-8gaussians", "--out", tmp / "s.xyz"]), "xyz|format",
                       before_compute=True)


@case
def case_checkpoint_missing(tmp):
    return judge_error(cli(SAMPLE + ["--checkpoint", tmp / "nothing", "--out", tmp / "s.png"]), "nothing")


@case
def case_checkpoint_truncated(tmp):
    ck = _small_checkpoint(tmp)
    w = ck.with_suffix(".safetensors")
    w.write_bytes(w.read_bytes()[:-100])
    return judge_error(cli(SAMPLE + ["--checkpoint", ck, "--out", tmp / "s.png"]), r"ck\.safetensors")


@case
def case_checkpoint_garbage(tmp):
    ck = _small_checkpoint(tmp)
    ck.with_suffix(".safetensors").write_bytes(os.urandom(4000))
    return judge_error(cli(SAMPLE + ["--checkpoint", ck, "--out", tmp / "s.png"]), r"ck\.safetensors")


@case
def case_checkpoint_pickled(tmp):
    from toyflow.models import VelocityMLP

    ck = _small_checkpoint(tmp)
    torch.save(VelocityMLP(hidden=8, depth=1).state_dict(), ck.with_suffix(".safetensors"))
    return judge_error(cli(SAMPLE + ["--checkpoint", ck, "--out", tmp / "s.png"]), "pickle", r"ck\.safetensors")


@case
def case_checkpoint_json_corrupt(tmp):
    ck = _small_checkpoint(tmp)
    ck.with_suffix(".json").write_text('{"arch": "mlp", ')
    return judge_error(cli(SAMPLE + ["--checkpoint", ck, "--out", tmp / "s.png"]), r"ck\.json")


@case
def case_checkpoint_tampered_size(tmp):
    import toyflow.models as M

    ck = _small_checkpoint(tmp, depth=2)
    cfg = json.loads(ck.with_suffix(".json").read_text())
    cfg["arch_config"]["hidden"] = 3000  # 9 M parameters; 20000 builds a 3.3 GB model
    ck.with_suffix(".json").write_text(json.dumps(cfg))
    real, built = M.build, []

    def build(arch, arch_config):
        if torch.get_default_device().type != "meta" and dict(arch_config).get("hidden") == 3000:
            built.append(arch_config)
        return real(arch, arch_config)

    M.build = build
    try:
        call = cli(SAMPLE + ["--checkpoint", ck, "--out", tmp / "s.png"])
    finally:
        M.build = real
    verdict = judge_error(call, r"/ck\b")
    if verdict[0] == GOOD and built:
        return UNCLEAR, "refused only after building the full-size model"
    return verdict


@case
def case_checkpoint_torn_pair(tmp):
    """Weights of one save beside the JSON of another (what a crash between the two renames left)."""
    from toyflow.models import VelocityMLP, save_model

    torch.manual_seed(1)
    save_model(tmp / "a", VelocityMLP(hidden=8, depth=1), step=100)
    torch.manual_seed(2)
    save_model(tmp / "b", VelocityMLP(hidden=8, depth=1), step=200)
    (tmp / "b.json").replace(tmp / "a.json")  # a.safetensors (step 100) with the JSON of step 200
    return judge_error(cli(SAMPLE + ["--checkpoint", tmp / "a", "--out", tmp / "s.png"]), r"a\.")


BENCH = ["bench", "search", "--task", "rare-mode", "--methods", "bon", "--modes", "linear-ode", "--budgets", "20",
         "--steps", "4", "--runs", "4"]


def _bench(tmp, *extra, out="r.csv"):
    return cli(BENCH + ["--out", tmp / out] + list(extra))


def _rows(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@case
def case_bench_ok(tmp):
    call = _bench(tmp)
    return judge_ok(call, lambda: None if [r["status"] for r in _rows(tmp / "r.csv")] == ["ok"] else "rows not ok")


@case
def case_bench_runs_zero(tmp):
    return judge_error(_bench(tmp, "--runs", "0"), "runs", before_compute=True)


@case
def case_bench_runs_one(tmp):
    return judge_error(_bench(tmp, "--runs", "1"), "runs", before_compute=True)


@case
def case_bench_steps_zero(tmp):
    return judge_error(_bench(tmp, "--steps", "0"), "steps", before_compute=True)


@case
def case_bench_budget_negative(tmp):
    return judge_error(_bench(tmp, "--budgets", "-5"), "budget", before_compute=True)


@case
def case_bench_time_grid_bogus(tmp):
    return judge_error(_bench(tmp, "--time-grid", "bogus"), "time.grid", before_compute=True)


@case
def case_bench_every_cell_skipped(tmp):
    return judge_error(_bench(tmp, "--budgets", "2"), "budget")


@case
def case_bench_method_bogus(tmp):
    return judge_error(_bench(tmp, "--methods", "bogus"), "bogus", before_compute=True)


@case
def case_bench_mode_bogus(tmp):
    return judge_error(_bench(tmp, "--modes", "bogus"), "bogus", before_compute=True)


@case
def case_bench_task_bogus(tmp):
    return judge_error(_bench(tmp, "--task", "bogus"), "bogus", before_compute=True)


@case
def case_bench_model_bogus(tmp):
    return judge_error(_bench(tmp, "--models", "bogus"), "bogus", before_compute=True)


@case
def case_bench_shard_bad(tmp):
    return judge_error(_bench(tmp, "--shard", "3/2"), "shard", before_compute=True)


@case
def case_bench_option_typo(tmp):
    args = ["bench", "search", "--methods", "smc", "--modes", "vp-sde", "--budgets", "20", "--steps", "4", "--runs", "4"]
    return judge_error(cli(args + ["--out", tmp / "r.csv", "--option", "smc.lamda=1"]),
                       "lamda", before_compute=True)


@case
def case_bench_out_unwritable(tmp):
    (tmp / "file").write_text("x")
    return judge_error(_bench(tmp, out="file/r.csv"), "out|file", before_compute=True)


@case
def case_bench_plot_unwritable(tmp):
    (tmp / "file").write_text("x")
    return judge_error(_bench(tmp, "--plot", tmp / "file" / "p.png"), "plot|file", before_compute=True)


def _two_shards(tmp):
    args = ["bench", "search", "--task", "rare-mode", "--methods", "bon", "smc", "--modes", "linear-ode", "vp-sde",
            "--budgets", "20", "--steps", "4", "--runs", "4"]  # 2 methods x 2 modes = 4 cells
    for i in range(2):
        if cli(args + ["--shard", f"{i}/2", "--out", tmp / f"s{i}.csv"]).rc != 0:
            raise RuntimeError("a shard failed")
    return [tmp / "s0.csv", tmp / "s1.csv"]


@case
def case_merge_ok(tmp):
    shards = _two_shards(tmp)
    call = cli(["bench", "merge", tmp / "m.csv"] + shards)
    want = [(r["method"], r["mode"]) for r in _rows(tmp / "m.csv")] if (tmp / "m.csv").exists() else []
    return judge_ok(call, lambda: None if want == [("bon", "linear-ode"), ("bon", "vp-sde"), ("smc", "linear-ode"),
                                                   ("smc", "vp-sde")] else f"grid order lost: {want}")


@case
def case_merge_out_of_order(tmp):
    shards = _two_shards(tmp)
    return judge_error(cli(["bench", "merge", tmp / "m.csv"] + shards[::-1]), "order")


@case
def case_merge_foreign_csv(tmp):
    (tmp / "a.csv").write_text("x,y\n1,2\n3,4\n")
    return judge_error(cli(["bench", "merge", tmp / "m.csv", tmp / "a.csv"]), r"a\.csv")


@case
def case_merge_empty_rows(tmp):
    from toyflow.benchmark import COLUMNS

    (tmp / "a.csv").write_text(",".join(COLUMNS) + "\n" + "," * (len(COLUMNS) - 1) + "\n")
    return judge_error(cli(["bench", "merge", tmp / "m.csv", tmp / "a.csv"]), r"a\.csv")


@case
def case_merge_missing_shard(tmp):
    return judge_error(cli(["bench", "merge", tmp / "m.csv", tmp / "gone.csv"]), r"gone\.csv")


@case
def case_export_ok(tmp):
    from toyflow.models import load_model

    ck = _small_checkpoint(tmp, step=3)
    call = cli(["export", ck, tmp / "half"])
    return judge_ok(call, lambda: None if load_model(tmp / "half").hidden == 8 else "wrong model")


@case
def case_export_out_unwritable(tmp):
    ck = _small_checkpoint(tmp)
    (tmp / "file").write_text("x")
    return judge_error(cli(["export", ck, tmp / "file" / "half"]), "file|out", before_compute=True)


@case
def case_export_corrupt(tmp):
    ck = _small_checkpoint(tmp)
    ck.with_suffix(".safetensors").write_bytes(b"\x00" * 16)
    return judge_error(cli(["export", ck, tmp / "half"]), r"ck\.safetensors")


@case
def case_export_missing(tmp):
    return judge_error(cli(["export", tmp / "nothing", tmp / "half"]), "nothing")


@case
def case_shipped_weights_load(tmp):
    from toyflow import pretrained

    try:
        names = [n for n in pretrained.available() if not pretrained.load(n).training]
    except Exception as e:  # noqa: BLE001
        return CRASH, f"{type(e).__name__}: {e}"
    return (GOOD, f"{len(names)} shipped models load") if len(names) == len(pretrained.MODELS) else (SILENT, str(names))


# ---- the Python API -------------------------------------------------------------------------------
def _sde(diffusion):
    from toyflow import dynamics
    from toyflow.models import GaussianMixtureFlow

    gmm = GaussianMixtureFlow(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), 0.2)
    x1 = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ode = dynamics.sample(gmm, x1, "linear", steps=5).x
    sde = dynamics.sample(gmm, x1, "linear", steps=5, sde=True, diffusion=diffusion,
                          generator=torch.Generator().manual_seed(1)).x
    return ode, sde


@case
def case_api_diffusion_negative(tmp):
    return judge_api(lambda: _sde(lambda t: -torch.ones_like(t)), "diffusion|g\\b|g\\(t\\)")


@case
def case_api_diffusion_nan(tmp):
    return judge_api(lambda: _sde(lambda t: torch.full_like(t, float("nan"))), "diffusion|g\\b|g\\(t\\)")


@case
def case_api_velocity_from_x0_at_t0(tmp):
    from toyflow import dynamics

    x = torch.randn(4, 2)
    return judge_api(lambda: dynamics.velocity_from_x0(x, x + 1, 0.0, "linear"), r"sigma|t\s*=\s*0|t > 0")


@case
def case_api_converted_velocity_at_r0(tmp):
    from toyflow import interpolants
    from toyflow.models import GaussianMixtureFlow

    gmm = GaussianMixtureFlow(torch.tensor([[1.0, 0.0]]), 0.2)
    v = interpolants.convert(gmm, "linear", "vp")
    return judge_api(lambda: v(torch.randn(4, 2, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)),
                     r"r\s*=\s*0|r > 0|sigma")


@case
def case_api_x0_from_velocity_shapes(tmp):
    from toyflow import dynamics

    return judge_api(lambda: dynamics.x0_from_velocity(torch.randn(8, 2), torch.randn(8, 1), 0.5, "linear"), "shape")


def _smc(reward, lam):
    from toyflow import search
    from toyflow.models import GaussianMixtureFlow

    gmm = GaussianMixtureFlow(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), 0.2)
    return search.run("smc", gmm, reward, mode="vp-sde", budget=40, steps=4, runs=3, shape=(2,),
                      generator=torch.Generator().manual_seed(0), lam=lam, record=True)


def _finite_result(res):
    """Samples, rewards and the weights' ESS (recorded) must all be finite: NaN weights resample garbage."""
    ess = res.history.ess if res.history is not None else None
    bad = [n for n, v in (("samples", res.samples), ("rewards", res.rewards), ("ess", ess))
           if v is not None and not bool(torch.isfinite(v).all())]
    return f"non-finite {bad} (NaN log-weights)" if bad else None


@case
def case_api_smc_huge_rewards(tmp):
    return judge_api(lambda: _smc(lambda x: torch.where(x[:, 0] > 0, 3e38, -3e38).to(x.dtype), 1.0), "lam|reward|overflow",
                     check=_finite_result)


@case
def case_api_smc_tiny_lambda(tmp):
    return judge_api(lambda: _smc(lambda x: x[:, 0], 1e-44), "lam|overflow", check=_finite_result)


@case
def case_api_minimum_budget_negative_steps(tmp):
    from toyflow import search

    return judge_api(lambda: search.minimum_budget("bon", steps=-4), "steps")


# ---- driver -----------------------------------------------------------------------------------------
def run_cases(names=None, verbose=False, stream=sys.stdout) -> dict[str, tuple[str, str, float]]:
    torch.set_num_threads(1)
    results = {}
    for name, fn in CASES.items():
        if names and not any(n in name for n in names):
            continue
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"battery-{name}-") as d:
            cwd = os.getcwd()
            os.chdir(d)
            try:
                outcome, detail = fn(Path(d))
            except Exception as e:  # noqa: BLE001 - the case itself broke
                outcome, detail = CRASH, f"case raised {type(e).__name__}: {e}"
            finally:
                os.chdir(cwd)
        results[name] = (outcome, detail, time.perf_counter() - t0)
        if verbose:
            print(f"{outcome:>12}  {name:<48} {detail}", file=stream, flush=True)
    return results


def summary(results) -> str:
    counts = {o: sum(1 for r in results.values() if r[0] == o) for o in OUTCOMES}
    width = max(len(n) for n in results) if results else 10
    lines = [f"{'case':<{width}}  outcome", "-" * (width + 14)]
    lines += [f"{name:<{width}}  {r[0]}" for name, r in results.items()]
    lines += ["-" * (width + 14), f"{len(results)} cases: " + ", ".join(f"{counts[o]} {o}" for o in OUTCOMES),
              f"time {sum(r[2] for r in results.values()):.1f} s"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", nargs="*", default=None, help="only cases whose name contains one of these")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each case's detail as it finishes")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    results = run_cases(args.k, verbose=args.verbose)
    print(summary(results))
    if args.json:
        Path(args.json).write_text(json.dumps({n: {"outcome": o, "detail": d} for n, (o, d, _) in results.items()}, indent=1))
    return 0 if all(r[0] == GOOD for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
