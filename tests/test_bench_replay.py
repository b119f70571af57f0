"""bench/_common.ReplayModel: a search through the replayed outputs takes exactly the recorded path
(the "engine alone" column of bench/bench_search_overhead.py times the engine without the model)."""

from __future__ import annotations

import re

import pytest
import torch

from toyflow import search
from toyflow.models import VelocityMLP


@pytest.fixture
def common(bench_on_path):
    import _common

    return _common


def _quadratic(x0):
    return -((x0 - 1.0) ** 2).sum(-1)


@pytest.mark.parametrize("method", ["rbf", "svdd", "smc"])
def test_replayed_search_is_the_recorded_one(common, method):
    torch.manual_seed(0)
    mlp = VelocityMLP(hidden=16, depth=2).eval()
    replay = common.ReplayModel(mlp)
    kw = dict(mode="vp-sde", budget=60, steps=5, runs=8, shape=(2,))
    first = search.run(method, replay, _quadratic, generator=torch.Generator().manual_seed(3), **kw)
    calls = len(replay.outputs)
    replay.rewind()
    again = search.run(method, replay, _quadratic, generator=torch.Generator().manual_seed(3), **kw)
    assert replay.next == calls  # every recorded output used, no model call made
    assert torch.equal(first.samples, again.samples) and torch.equal(first.rewards, again.rewards)
    assert torch.equal(first.nfe_per_step, again.nfe_per_step)


def test_replay_on_another_path_is_an_error(common):
    mlp = VelocityMLP(hidden=16, depth=2).eval()
    replay = common.ReplayModel(mlp)
    search.run("bon", replay, _quadratic, mode="linear-ode", budget=4, steps=3, runs=2, shape=(2,),
               generator=torch.Generator().manual_seed(0))
    replay.rewind()
    with pytest.raises(RuntimeError, match="another path"):
        search.run("bon", replay, _quadratic, mode="linear-ode", budget=8, steps=3, runs=2, shape=(2,),
                   generator=torch.Generator().manual_seed(0))


def test_overhead_bench_options(bench_on_path):
    """--allocator steady is applied (glibc) and named in the header, --no-one-per-call drops RBF's
    one-draw-per-call row, both searches spend the whole budget, the per-NFE line is printed, and
    --floor times RBF's tensor work alone (longer than its bare model calls, which it contains)."""
    import platform
    import subprocess
    import sys
    from pathlib import Path

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("the steady allocator is glibc's mallopt")
    script = Path(__file__).resolve().parents[1] / "bench" / "bench_search_overhead.py"
    out = subprocess.run(
        [sys.executable, str(script), "--runs", "8", "--budget", "60", "--steps", "5", "--repeats", "2",
         "--methods", "svdd,rbf", "--no-one-per-call", "--allocator", "steady", "--floor"],
        capture_output=True, text=True, check=True, cwd=script.parent, timeout=300,
    ).stdout.splitlines()
    assert "allocator: steady" in out[0]
    rows = {line.split()[0]: line.split() for line in out[3:5]}
    assert set(rows) == {"svdd", "rbf"} and not any("1 / call" in line for line in out)
    assert float(rows["svdd"][2]) == 60.0 and float(rows["rbf"][2]) == 60.0  # NFE per run: the whole budget
    per_nfe = next(line for line in out if line.startswith("search wall time per NFE"))
    assert float(per_nfe.rsplit(" ", 1)[1]) > 0
    # --floor: RBF's tensor work alone holds the same model calls plus the tick's tensor operations,
    # so it takes longer than the bare calls; the model's calls timed inside the search are reported
    floor = next(line for line in out if line.startswith("rbf tensor floor"))
    floor_ms, own_ms, inside_ms = (float(v) for v in re.findall(r"([\d.]+) ms", floor))
    assert floor_ms > own_ms > 0 and inside_ms > 0
    refused = subprocess.run([sys.executable, str(script), "--methods", "svdd", "--floor"],
                             capture_output=True, text=True, cwd=script.parent, timeout=60)
    assert refused.returncode == 2 and "add rbf to --methods" in refused.stderr
