"""The prepared GPU training script (bench/gpu_train_mnist.py): its checkpoint choice and target
logic on crafted classifier outputs, a CPU smoke run of the whole script on fake digits, and the
same on CUDA where there is a GPU (skipped cleanly otherwise)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from toyflow.data import mnist

BENCH = Path(__file__).resolve().parents[1] / "bench"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def script(bench_on_path):
    import gpu_train_mnist

    return gpu_train_mnist


def _write_fake_split(folder: Path, split: str, n: int) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    for name, array, magic in zip(mnist.SPLIT_FILES[split], (images, labels), (2051, 2049)):
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
        (folder / f"{name}.gz").write_bytes(gzip.compress(header + array.tobytes()))


class _ScriptedValidator(torch.nn.Module):
    """Logits chosen per call: call k gives each sample the class and confidence of plan[k]."""

    def __init__(self, plan):
        super().__init__()
        self.plan, self.calls = plan, 0

    def forward(self, x):
        confident, classes = self.plan[self.calls]
        self.calls += 1
        logits = torch.zeros(x.shape[0], 10)
        for i in range(x.shape[0]):
            logits[i, classes[i % len(classes)]] = 10.0 if i < confident * x.shape[0] else 0.5
        return logits


def test_checkpoint_choice_skips_a_collapsed_flow_and_the_target_needs_every_class(script, tmp_path):
    # evaluation 1: half confident, all classes; 2: all confident, one class (collapsed);
    # 3: 0.9 confident, all classes; 4: 0.95 confident, all classes
    every_class, one_class = list(range(10)), [3]
    plan = [(0.5, every_class), (1.0, one_class), (0.9, every_class), (0.95, every_class)]
    curve = script.QualityCurve(every=2, noises=torch.zeros(20, 1, 28, 28),
                                sample=lambda m, z: script.euler_samples(m, z, 1),
                                validator=_ScriptedValidator(plan), target=0.9, best_path=tmp_path / "best",
                                device=torch.device("cpu"), t_start=0.0)
    from toyflow.models.unet import UNet

    ema = UNet(channels=(8, 16, 16), mid_blocks=1).eval()  # its samples do not matter: the validator is scripted
    for step in range(1, 9):
        curve(step, ema)
    assert [p["step"] for p in curve.points] == [2, 4, 6, 8]  # every 2 steps, nothing between
    assert [p["validation_share"] for p in curve.points] == [0.5, 1.0, 0.9, 0.95]
    assert [p["rarest_class"] for p in curve.points] == [0.1, 0.0, 0.1, 0.1]
    assert curve.time_to_target["step"] == 6  # the collapsed evaluation at step 4 does not count
    assert curve.best["step"] == 8  # highest share among the covered evaluations
    cfg = json.loads((tmp_path / "best.json").read_text())
    assert cfg["step"] == 8 and cfg["chosen_by"] == "mnist-reward" and cfg["validation_share"] == 0.95


def test_without_cuda_the_script_says_so_and_exits_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    for extra, rc in (([], 0), (["--require-cuda"], 1)):
        r = subprocess.run([sys.executable, str(BENCH / "gpu_train_mnist.py"), *extra], capture_output=True,
                           text=True, env=env, timeout=120)
        assert r.returncode == rc, r.stderr
        assert "no CUDA device: gpu_train_mnist measured nothing" in r.stdout


def _smoke(script, tmp_path, device, extra=()):
    data = tmp_path / "data"
    data.mkdir()
    _write_fake_split(data, "test", 80)
    out = tmp_path / "out"
    md = tmp_path / "report.md"
    argv = ["--device", device, "--quick", "--quiet", "--data-dir", str(data), "--split", "test",
            "--reference-split", "test", "--out-dir", str(out), "--md", str(md), "--threads", "1", *extra]
    assert script.main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    quick = script.QUICK
    assert [p["step"] for p in report["curve"]] == list(range(quick["eval_every"], quick["steps"] + 1, quick["eval_every"]))
    assert report["chosen"] in report["curve"]
    assert report["steps_per_second"] == pytest.approx(quick["steps"] / report["train_seconds"])
    assert report["target"] == pytest.approx(report["real_validation_share"] - 0.05)
    assert sum(report["reported"]["class_frequencies"]) == pytest.approx(1.0)
    assert report["reference_seen_by"] == ["mnist-reward", "the flow"]  # t10k: the reward CNN's and the flow's
    assert {(s["device"], s["method"]) for s in report["search"]} == (
        {("cpu", m) for m in quick["search_methods"]} | ({("cuda", m) for m in quick["search_methods"]}
                                                         if device == "cuda" else set()))
    text = md.read_text()
    assert "Caveat: the reference split `test` was seen in training by mnist-reward, the flow" in text
    from toyflow.models import load_model

    best = load_model(out / "best", arch="unet")
    assert sum(p.numel() for p in best.parameters()) == report["parameters"]
    return report


def test_cpu_smoke_run_of_the_whole_script(script, tmp_path):
    _smoke(script, tmp_path, "cpu")


def test_time_budget_sets_whole_evaluation_intervals(script, tmp_path, capsys):
    # a budget too short for one interval still trains one; a huge one is capped at --steps
    quick = script.QUICK
    _write_fake_split(tmp_path, "test", 80)
    for budget, steps in ((1e-6, quick["eval_every"]), (1e6, quick["steps"])):
        out = tmp_path / f"out-{budget:g}"
        argv = ["--device", "cpu", "--quick", "--quiet", "--data-dir", str(tmp_path), "--split", "test",
                "--reference-split", "test", "--out-dir", str(out), "--threads", "1", "--no-search",
                "--time-budget", str(budget)]
        assert script.main(argv) == 0
        report = json.loads((out / "report.json").read_text())
        assert report["steps"] == report["time_budget"]["steps"] == steps
        assert report["time_budget"]["probe_steps"] == quick["probe_steps"] and report["time_budget"]["step_s"] > 0
        assert [p["step"] for p in report["curve"]] == list(range(quick["eval_every"], steps + 1, quick["eval_every"]))
        assert f"-> {steps:,} steps" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        script.main(["--device", "cpu", "--quick", "--time-budget", "0"])


@needs_cuda
def test_cuda_smoke_run_of_the_whole_script(script, tmp_path):
    report = _smoke(script, tmp_path, "cuda")
    assert report["amp"] is True
