"""Training: determinism, exact resume, checkpoints (atomic, safetensors), DDP with gloo."""

import json
import os
import subprocess
import sys

import pytest
import torch

from toyflow import checkpoint
from toyflow.models import VelocityMLP, load_model, save_model
from toyflow.train import CoupledPairs, TrainConfig, flow_matching_loss, train_flow
from conftest import REPO, eight_gaussians

CFG = TrainConfig(steps=30, batch_size=64, warmup=5, progress=False, device="cpu")


def _data(n, g):
    return eight_gaussians().sample(n, g)


def test_same_seed_same_losses_and_weights(tmp_path):
    a = train_flow(VelocityMLP(hidden=32), _data, "linear", CFG)
    b = train_flow(VelocityMLP(hidden=32), _data, "linear", CFG)
    c = train_flow(VelocityMLP(hidden=32), _data, "linear", TrainConfig(**{**CFG.__dict__, "seed": 1}))
    assert a.losses == b.losses and a.losses != c.losses
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k


def test_on_step_sees_every_step_and_the_ema_weights_and_changes_nothing():
    seen = []

    def on_step(step, ema):
        seen.append((step, {k: v.clone() for k, v in ema.state_dict().items()}))

    plain = train_flow(VelocityMLP(hidden=32), _data, "linear", CFG)
    hooked = train_flow(VelocityMLP(hidden=32), _data, "linear", CFG, on_step=on_step)
    assert [s for s, _ in seen] == list(range(1, CFG.steps + 1))
    assert hooked.losses == plain.losses  # the hook draws nothing and changes nothing
    for k, v in hooked.model.state_dict().items():  # the last call saw the final EMA weights
        assert torch.equal(seen[-1][1][k], v) and torch.equal(plain.model.state_dict()[k], v), k
    assert not all(torch.equal(seen[0][1][k], v) for k, v in hooked.model.state_dict().items())


def test_resume_equals_uninterrupted(tmp_path):
    cfg = TrainConfig(**{**CFG.__dict__, "checkpoint_every": 10})
    full = train_flow(VelocityMLP(hidden=32), _data, "linear", cfg, checkpoint_path=tmp_path / "a")
    # the same run killed during step 11, after the step-10 checkpoint, then resumed
    stop = {"n": 0}

    def data_stop(n, g):
        stop["n"] += 1
        if stop["n"] > 10:
            raise KeyboardInterrupt
        return _data(n, g)

    with pytest.raises(KeyboardInterrupt):
        train_flow(VelocityMLP(hidden=32), data_stop, "linear", cfg, checkpoint_path=tmp_path / "c")
    resumed = train_flow(VelocityMLP(hidden=32), _data, "linear", cfg, checkpoint_path=tmp_path / "c", resume=True)
    assert resumed.losses == full.losses
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_amp_cpu_runs_the_forward_in_bf16_and_keeps_fp32_weights():
    seen = []

    def record_dtype(module, inputs, output):
        seen.append(output.dtype)

    for amp_cpu, want in ((False, torch.float32), (True, torch.bfloat16)):
        model = VelocityMLP(hidden=32)
        hook = model.net[0].register_forward_hook(record_dtype)  # the first Linear: autocast's bf16 list
        out = train_flow(model, _data, "linear", TrainConfig(**{**CFG.__dict__, "steps": 3, "amp_cpu": amp_cpu}))
        hook.remove()
        assert set(seen) == {want}, (amp_cpu, set(seen))
        seen.clear()
        assert all(p.dtype == torch.float32 for p in out.model.parameters())
        assert all(torch.isfinite(torch.tensor(out.losses)))


def test_continued_run_records_every_command(tmp_path):
    path = tmp_path / "run"
    train_flow(VelocityMLP(hidden=16), _data, "linear", TrainConfig(**{**CFG.__dict__, "steps": 4}),
               checkpoint_path=path, extra_config={"command": "first"})
    # continue the same weights to 8 steps with another command line
    train_flow(VelocityMLP(hidden=16), _data, "linear", TrainConfig(**{**CFG.__dict__, "steps": 8}),
               checkpoint_path=path, resume=True, extra_config={"command": "second"})
    config = json.loads((tmp_path / "run.json").read_text())
    assert config["step"] == 8 and config["command"] == "second"
    assert config["earlier_commands"] == ["first  (to step 4)"]
    # interrupted and resumed with its own command: the history stays as it was
    train_flow(VelocityMLP(hidden=16), _data, "linear", TrainConfig(**{**CFG.__dict__, "steps": 10}),
               checkpoint_path=path, resume=True, extra_config={"command": "second"})
    config = json.loads((tmp_path / "run.json").read_text())
    assert config["step"] == 10 and config["earlier_commands"] == ["first  (to step 4)"]


def test_checkpoint_files_and_wrong_architecture(tmp_path):
    m = VelocityMLP(hidden=16)
    save_model(tmp_path / "m", m, note="x")
    assert (tmp_path / "m.safetensors").exists() and (tmp_path / "m.json").exists()
    assert not list(tmp_path.glob("*.tmp"))
    with open(tmp_path / "m.safetensors", "rb") as f:
        assert b"pickle" not in f.read(200)
    back = load_model(tmp_path / "m.safetensors")
    x, t = torch.randn(5, 2), torch.rand(5)
    assert torch.equal(back(x, t), m(x, t))
    with pytest.raises(ValueError, match="not the expected 'unet'"):
        load_model(tmp_path / "m", arch="unet")
    # a checkpoint of another size of MLP under the same name: clear mismatch error
    cfg = json.loads((tmp_path / "m.json").read_text())
    cfg["arch_config"]["hidden"] = 64
    (tmp_path / "m.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match architecture"):
        load_model(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="incomplete"):
        load_model(tmp_path / "nothing")


def test_atomic_save_leaves_old_file_on_failure(tmp_path, monkeypatch):
    checkpoint.save(tmp_path / "c", {"w": torch.ones(3)}, {"v": 1})
    import toyflow.checkpoint as C

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(C.os, "fsync", boom)  # the weights' temp file cannot be made durable
    with pytest.raises(OSError):
        checkpoint.save(tmp_path / "c", {"w": torch.zeros(3)}, {"v": 2})
    tensors, cfg = checkpoint.load(tmp_path / "c")
    assert torch.equal(tensors["w"], torch.ones(3)) and cfg["v"] == 1
    assert not list(tmp_path.glob(".*tmp"))


def test_flow_matching_loss_is_zero_for_exact_conditional_target():
    """With one data point the conditional velocity is the marginal one: the oracle has loss ~0."""
    from toyflow.models import GaussianMixtureFlow

    point = GaussianMixtureFlow(torch.tensor([[1.0, -1.0]]), 1e-6)
    x0 = torch.tensor([[1.0, -1.0]]).repeat(256, 1).double()
    g = torch.Generator().manual_seed(0)
    loss = flow_matching_loss(point, x0, eight_gaussians().schedule, g, t_min=0.01)
    assert loss.item() < 1e-6


def test_bad_config():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)


DDP_SCRIPT = r"""
import sys, torch, torch.distributed as dist
sys.path.insert(0, {tests!r})
from conftest import eight_gaussians
from toyflow.models import VelocityMLP
from toyflow.train import TrainConfig, train_flow
res = train_flow(VelocityMLP(hidden=32), lambda n, g: eight_gaussians().sample(n, g), "linear",
                 TrainConfig(steps=20, batch_size=32, warmup=2, progress=False, device="cpu"))
flat = torch.cat([p.detach().flatten() for p in res.raw_model.parameters()])
torch.save(flat, {out!r} + f"/rank{{dist.get_rank()}}.pt")
losses = torch.tensor(res.losses)
torch.save(losses, {out!r} + f"/losses{{dist.get_rank()}}.pt")
dist.destroy_process_group()
"""


def test_ddp_two_cpu_processes_train_the_same_weights(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(REPO / "tests"), out=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0, w1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(w0, w1)  # gradients are averaged: identical weights on both ranks
    l0, l1 = torch.load(tmp_path / "losses0.pt"), torch.load(tmp_path / "losses1.pt")
    assert not torch.equal(l0, l1)  # ...while each rank drew its own batches


def test_time_sampling_distributions():
    """uniform: the same draws as t_min + (1 - t_min) U(0, 1); logit-normal-mix: half of them
    sigmoid(N(0, 1)), so more mass mid-path, every t inside [t_min, 1]."""
    seen = {}

    def recorder(name):
        def model(x, t):
            seen[name] = t.clone()
            return torch.zeros_like(x)
        return model

    x0 = torch.zeros(20000, 2, dtype=torch.float64)
    schedule = eight_gaussians().schedule
    flow_matching_loss(recorder("uniform"), x0, schedule, torch.Generator().manual_seed(3), t_min=0.01)
    expected = 0.01 + 0.99 * torch.rand(20000, generator=torch.Generator().manual_seed(3)).double()
    assert torch.allclose(seen["uniform"], expected)
    flow_matching_loss(recorder("mix"), x0, schedule, torch.Generator().manual_seed(3), 0.01, "logit-normal-mix")
    t = seen["mix"]
    assert float(t.min()) >= 0.01 and float(t.max()) <= 1.0
    # P(0.25 < u < 0.75): uniform 0.5; sigmoid(N(0,1)): P(|z| < logit(0.75) = 1.0986) = 0.7275; mix 0.614
    middle = float(((t - 0.01) / 0.99).sub(0.5).abs().lt(0.25).double().mean())
    assert abs(middle - 0.6137) < 0.02, middle
    assert abs(float(t.mean()) - 0.505) < 0.01
    with pytest.raises(ValueError, match="unknown t_sampling 'beta'"):
        TrainConfig(t_sampling="beta")
    with pytest.raises(ValueError, match="unknown t_sampling"):
        flow_matching_loss(recorder("x"), x0, schedule, torch.Generator(), 0.01, "beta")


def test_flow_matching_loss_with_fixed_noise_is_exact():
    """Given noise x1, the loss is exactly mean |model(x_t, t) - (x1 - x0)|^2 on the linear path with
    x_t = (1 - t) x0 + t x1, and the times are drawn as without it (same generator, same t)."""
    seen = {}

    def recorder(name):
        def model(x, t):
            seen[name] = (x.clone(), t.clone())
            return torch.zeros_like(x)
        return model

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(64, 3, generator=g, dtype=torch.float64)
    x1 = torch.randn(64, 3, generator=g, dtype=torch.float64)
    schedule = eight_gaussians().schedule  # linear
    loss = flow_matching_loss(recorder("fixed"), x0, schedule, torch.Generator().manual_seed(5), 0.01, noise=x1)
    xt, t = seen["fixed"]
    assert torch.allclose(xt, (1 - t)[:, None] * x0 + t[:, None] * x1, atol=1e-12)
    assert torch.allclose(loss.double(), ((x1 - x0) ** 2).mean(), rtol=1e-6)
    flow_matching_loss(recorder("drawn"), x0, schedule, torch.Generator().manual_seed(5), 0.01)
    assert torch.equal(seen["drawn"][1], t)
    with pytest.raises(ValueError, match=r"noise \(64, 2\) must have the shape of x0 \(64, 3\)"):
        flow_matching_loss(recorder("x"), x0, schedule, torch.Generator(), 0.01, noise=x1[:, :2])


def test_train_flow_on_coupled_pairs_keeps_rows_paired():
    """Every training point x_t lies on the segment between data[i] and noise[i] of one pair i."""

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))
            self.seen = []

        def forward(self, x, t):
            self.seen.append((x.detach().clone(), t.detach().clone()))
            return x * self.w

    n = 40
    data = torch.stack([torch.arange(n), -torch.arange(n)], 1).float()  # row i = (i, -i)
    pairs = CoupledPairs(data=data, noise=data + 100.0)  # x_t = x0 + 100 t on the linear path
    model = Recorder()
    cfg = TrainConfig(steps=3, batch_size=16, progress=False, device="cpu")
    res = train_flow(model, pairs, "linear", cfg)
    seen = res.raw_model.seen
    assert len(seen) == 3
    for xt, t in seen:
        x0 = xt - 100.0 * t[:, None]  # undo the pair's displacement
        i = x0[:, 0].round()
        assert torch.allclose(x0, torch.stack([i, -i], 1), atol=1e-3)
        assert ((i >= 0) & (i < n)).all()
    with pytest.raises(ValueError, match="same shape"):
        CoupledPairs(data=data, noise=data[:5])
    with pytest.raises(ValueError, match="non-empty"):
        CoupledPairs(data=data[:0], noise=data[:0])
    with pytest.raises(TypeError, match="two tensors"):
        CoupledPairs(data=data, noise=None)


# ---- Euler distillation --------------------------------------------------------------------------
class _GaussianField(torch.nn.Module):
    """Exact linear-path velocity when the data is N(0, I): x_t ~ N(0, s_t I), s_t = (1 - t)^2 + t^2,
    v(x, t) = x (2t - 1) / s_t; the ODE maps x at t to x sqrt(s_u / s_t) at u."""

    def forward(self, x, t):
        s = (1 - t) ** 2 + t ** 2
        return x * ((2 * t - 1) / s).reshape(-1, *([1] * (x.dim() - 1)))


def _s(t):
    return (1 - t) ** 2 + t ** 2


def test_euler_window_target_is_the_teachers_step_average():
    from toyflow.train import euler_window_target

    x, t = torch.randn(16, 2, dtype=torch.float64), torch.full((16,), 0.8, dtype=torch.float64)
    # v = x: K Euler steps multiply x by (1 - dt)^K
    ident = lambda y, tt: y  # noqa: E731
    torch.testing.assert_close(euler_window_target(ident, x, t, 0.2, 4), x * (1 - (1 - 0.05) ** 4) / 0.2)
    # v = t (time only): the average of the K left-point times; one substep is the velocity itself
    clock = lambda y, tt: tt[:, None].expand_as(y)  # noqa: E731
    torch.testing.assert_close(euler_window_target(clock, x, t, 0.2, 4), torch.full_like(x, 0.8 - 0.05 * 1.5))
    torch.testing.assert_close(euler_window_target(clock, x, t, 0.2, 1), torch.full_like(x, 0.8))
    # many substeps converge to the exact flow map's average velocity (Gaussian oracle), first order
    exact = x * (1 - (_s(torch.tensor(0.6)) / _s(torch.tensor(0.8))).sqrt()) / 0.2
    err = [(euler_window_target(_GaussianField(), x, t, 0.2, k) - exact).abs().max().item() for k in (100, 200)]
    assert err[1] < 1e-2 and 1.8 < err[0] / err[1] < 2.2  # error halves with twice the substeps


def test_euler_distillation_fixes_a_two_step_sampler():
    """Data N(0, I): the exact ODE maps noise to itself, but 2 Euler steps of the exact field give x1 / 2.
    A student distilled for 2 steps (64 substeps) lands close to x1."""
    from toyflow.dynamics import sample
    from toyflow.train import train_euler_distillation

    data = lambda n, g: torch.randn(n, 2, generator=g)  # noqa: E731
    teacher = _GaussianField()
    x1 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(5))
    base = sample(teacher, x1, "linear", steps=2).x
    torch.testing.assert_close(base, x1 / 2)
    cfg = TrainConfig(steps=400, batch_size=256, lr=3e-3, warmup=10, progress=False, device="cpu", reinit=False)
    res = train_euler_distillation(VelocityMLP(hidden=64), teacher, data, "linear", cfg, euler_steps=2, substeps=64)
    with torch.no_grad():
        out = sample(res.model, x1, "linear", steps=2).x
    ratio = (out.norm(dim=1) / x1.norm(dim=1)).median().item()
    assert 0.93 < ratio < 1.07, ratio  # the teacher's own 2-step sampler: 0.5
    assert res.losses[-1] < 0.1 * res.losses[0]


def test_euler_distillation_bad_input():
    from toyflow.train import train_euler_distillation

    data = torch.randn(8, 2)
    with pytest.raises(ValueError, match="reinit=False"):
        train_euler_distillation(VelocityMLP(hidden=8), _GaussianField(), data, config=TrainConfig(steps=1, progress=False))
    cfg = TrainConfig(steps=1, progress=False, reinit=False, device="cpu")
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match="positive integers"):
            train_euler_distillation(VelocityMLP(hidden=8), _GaussianField(), data, config=cfg, euler_steps=bad)
    with pytest.raises(ValueError, match="empty"):
        train_euler_distillation(VelocityMLP(hidden=8), _GaussianField(), torch.zeros(0, 2), config=cfg)
    with pytest.raises(ValueError, match="t_sampling"):
        train_euler_distillation(VelocityMLP(hidden=8), _GaussianField(), data,
                                 config=TrainConfig(steps=1, progress=False, reinit=False, t_sampling="logit-normal-mix"))


def test_euler_window_target_bad_input():
    from toyflow.train import euler_window_target

    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):  # the window would start below t = 0
        euler_window_target(_GaussianField(), x, torch.full((4,), 0.03), 0.05, 2)
    with pytest.raises(ValueError, match="shape"):
        euler_window_target(_GaussianField(), x, torch.full((3,), 0.5), 0.05, 2)
    with pytest.raises(ValueError, match="substeps"):
        euler_window_target(_GaussianField(), x, torch.full((4,), 0.5), 0.05, 0)


def test_command_history_lists_every_phase_in_order():
    from toyflow.train import command_history

    assert command_history({}) == []
    first = {"command": "toyflow train mnist --steps 10", "step": 10}
    assert command_history(first) == ["toyflow train mnist --steps 10  (to step 10)"]
    second = {"command": "python bench/distill_euler.py", "step": 5, "earlier_commands": command_history(first)}
    assert command_history(second) == ["toyflow train mnist --steps 10  (to step 10)", "python bench/distill_euler.py  (to step 5)"]
