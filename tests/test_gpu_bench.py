"""The prepared GPU benchmark (bench/gpu_bench.py) and the CUDA paths of training and search.

Without CUDA: the script says so and exits 0 (1 with --require-cuda), and runs on the CPU with
``--device cpu --quick`` (every section's code path; the peer sections only where torchcfm and
torchdiffeq are installed). The CUDA tests skip cleanly where there is no GPU.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def gpu_bench(bench_on_path):
    import gpu_bench

    return gpu_bench


def test_without_cuda_the_script_says_so_and_exits_0():
    """The script itself, in a process that sees no GPU: status 0 and the reason, no table."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(BENCH / "gpu_bench.py")], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "no CUDA device: gpu_bench measured nothing" in r.stdout
    assert "|" not in r.stdout  # nothing was timed


def test_without_cuda_require_cuda_fails(gpu_bench, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_bench.main(["--require-cuda"]) == 1
    assert gpu_bench.main([]) == 0
    assert capsys.readouterr().out.count("no CUDA device") == 2


def test_unknown_section_is_refused_by_name(gpu_bench, capsys):
    with pytest.raises(SystemExit) as e:
        gpu_bench.main(["--only", "train,warp"])
    assert e.value.code == 2 and "unknown section 'warp'" in capsys.readouterr().err


def _rows(path):
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("| ") and not ln.startswith("| work")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def _ratios(row):
    best, median = row[4].split(" / ")
    return float(best.rstrip("x")), float(median.rstrip("x"))


def test_quick_on_cpu_runs_the_sections_without_peers(gpu_bench, tmp_path):
    """mnist and sde need no peer library: their rows are in the table with finite positive ratios, and
    the SDE baseline draws the same paths as toyflow (its note gives the largest difference)."""
    out = tmp_path / "cpu.md"
    assert gpu_bench.main(["--quick", "--device", "cpu", "--only", "mnist,sde", "--out", str(out)]) == 0
    rows = _rows(out)
    assert [r[0].split(", UNet")[0] for r in rows] == ["MNIST training, samples/s, batch 8",
                                                       "SDE sampling, 5000 particles, 10 steps"]
    for r in rows:
        assert all(math.isfinite(v) and v > 0 for v in _ratios(r)), r
    assert float(rows[1][6].split("to ")[1]) < 1e-3  # same noise, same coefficients: the same paths
    assert out.read_text().startswith("gpu_bench on CPU")


def test_quick_on_cpu_runs_the_peer_sections(gpu_bench, tmp_path):
    pytest.importorskip("torchcfm")
    pytest.importorskip("torchdiffeq")
    out = tmp_path / "cpu.md"
    assert gpu_bench.main(["--quick", "--device", "cpu", "--only", "train,ode", "--out", str(out)]) == 0
    rows = _rows(out)
    works = [r[0] for r in rows]
    assert sum(w.startswith("2D training per step, batch 1024") for w in works) == 4
    assert works.count("ODE sampling, 5000 particles, 10 Euler steps") == 2
    for r in rows:
        assert all(math.isfinite(v) and v > 0 for v in _ratios(r)), r
    ode_vs_torchdiffeq = next(r for r in rows if r[1] == "torchdiffeq.odeint (euler)")
    assert float(ode_vs_torchdiffeq[6].split("to ")[1]) < 1e-5  # the same Euler steps on the same grid


@needs_cuda
def test_train_flow_on_cuda_resumes_bit_identically(tmp_path):
    """The CUDA loop (multi-tensor AdamW, clipping and EMA, bf16 autocast): a run killed after its step-20
    checkpoint and resumed equals one uninterrupted run."""
    from toyflow.data import toy2d
    from toyflow.models import VelocityMLP
    from toyflow.train import TrainConfig, train_flow

    calls = {"n": 0}

    def data(n, g):
        return toy2d.sample("8gaussians", n, generator=g)

    def data_then_crash(n, g):
        calls["n"] += 1
        if calls["n"] > 25:
            raise KeyboardInterrupt
        return data(n, g)

    cfg = TrainConfig(steps=40, device="cuda", progress=False, checkpoint_every=20)
    whole = train_flow(VelocityMLP(), data, "linear", cfg, checkpoint_path=tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train_flow(VelocityMLP(), data_then_crash, "linear", cfg, checkpoint_path=tmp_path / "cut")
    resumed = train_flow(VelocityMLP(), data, "linear", cfg, checkpoint_path=tmp_path / "cut", resume=True)
    assert whole.losses == resumed.losses
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


@needs_cuda
@pytest.mark.parametrize("method", ["rbf", "svdd"])
def test_search_on_cuda_spends_its_budget(method):
    from toyflow import rewards, search
    from toyflow.models import VelocityMLP

    gmm, reward = rewards.task("rare-mode")
    res = search.run(method, VelocityMLP().cuda().eval(), reward, mode="vp-sde", budget=200, steps=10, runs=64,
                     shape=(2,), device="cuda", generator=torch.Generator(device="cuda").manual_seed(0))
    assert res.samples.device.type == "cuda"
    assert bool((res.nfe == 200).all())


@needs_cuda
def test_gpu_bench_quick_on_cuda(gpu_bench, tmp_path):
    pytest.importorskip("torchcfm")
    pytest.importorskip("torchdiffeq")
    out = tmp_path / "gpu.md"
    assert gpu_bench.main(["--quick", "--out", str(out), "--require-cuda"]) == 0
    works = [r[0] for r in _rows(out)]
    assert any(w.startswith("2D training per step") for w in works)
    assert any(w.startswith("ODE sampling") for w in works) and any(w.startswith("search rbf") for w in works)
