"""Few-step distillation from teacher trajectories (toyflow.fewstep), checked on exact Gaussian-mixture teachers."""

import importlib.util
import json
import math

import pytest
import torch

from toyflow.fewstep import (
    FewStepConfig,
    TrajectoryPairs,
    distill_few_step,
    few_step_sample,
    teacher_flow_map,
    trajectory_pairs,
    uniform_grid,
)
from toyflow.metrics import energy_distance
from toyflow.models import FlowMapOracle, GaussianMixtureFlow, VelocityMLP, load_model

from conftest import REPO, eight_gaussians

torch.set_num_threads(1)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _four_gaussians(std=0.4, shape=None):
    means = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]], dtype=torch.float64)
    return GaussianMixtureFlow(means, std, [0.4, 0.3, 0.2, 0.1], shape=shape)


def _noise(n, shape, seed, dtype=torch.float64):
    return torch.randn((n,) + tuple(shape), generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---- teacher_flow_map -----------------------------------------------------------------------------
def test_teacher_flow_map_is_heun_on_the_exact_ode_second_order():
    gmm = _four_gaussians()
    oracle = FlowMapOracle(gmm)  # exact flow map (Dormand-Prince 5, error ~1e-9 x std at the median)
    g = torch.Generator().manual_seed(0)
    n = 1024
    t = 1 - 0.95 * torch.rand(n, generator=g, dtype=torch.float64)  # per-row times in (0.05, 1]
    t[:256] = 1.0
    x0, x1 = gmm.sample(n, g, dtype=torch.float64), torch.randn(n, 2, generator=g, dtype=torch.float64)
    x = (1 - t)[:, None] * x0 + t[:, None] * x1  # exact draws of x_t
    exact = oracle.flow_map(x, t)
    err = {m: (teacher_flow_map(gmm, x, t, m) - exact).norm(dim=1) for m in (8, 16, 32)}
    # measured: mean 6.7e-3, 2.0e-3, 5.5e-4 (ratios 3.4, 3.6); the median falls alike
    assert float(err[32].mean()) < 1e-3
    for a, b in ((8, 16), (16, 32)):
        assert float(err[a].mean() / err[b].mean()) > 3.0, (a, b, float(err[a].mean()), float(err[b].mean()))
        assert float(err[a].median() / err[b].median()) > 3.0
    # a scalar t is a (B,) t; t = 0 leaves x unchanged
    z = x[:64]
    ones = torch.ones(64, dtype=torch.float64)
    torch.testing.assert_close(teacher_flow_map(gmm, z, 1.0, 4), teacher_flow_map(gmm, z, ones, 4))
    torch.testing.assert_close(teacher_flow_map(gmm, z, 0.0, 4), z, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        teacher_flow_map(gmm, z, 1.5, 4)
    with pytest.raises(ValueError, match="substeps"):
        teacher_flow_map(gmm, z, 1.0, 0)


def test_teacher_flow_map_counts_two_evaluations_per_substep():
    calls = []

    def teacher(x, t):
        calls.append(t.clone())
        return -x  # dx/dt = -x: x_0 = e^t x_t

    x = torch.ones(3, 2, dtype=torch.float64)
    x0 = teacher_flow_map(teacher, x, 1.0, 10)
    assert len(calls) == 20 and float(calls[-1].max()) == 0.0  # the last corrector at t = 0
    # one Heun step of length 0.1 downwards multiplies by 1 + 0.1 + 0.1^2 / 2 (e^0.1 to third order)
    torch.testing.assert_close(x0, torch.full_like(x, 1.105**10), rtol=1e-12, atol=0)
    assert abs(1.105**10 / math.e - 1) < 2e-3


# ---- trajectory_pairs -----------------------------------------------------------------------------
def test_trajectory_pairs_layout_and_flow_map_identity():
    gmm = _four_gaussians()
    n, K, m = 96, 3, 8
    grid = uniform_grid(K)
    p = trajectory_pairs(gmm, n, (2,), grid, m, torch.Generator().manual_seed(5), dtype=torch.float64, chunk=40)
    assert isinstance(p, TrajectoryPairs) and p.x.shape == (n * K, 2) and p.t.shape == (n * K,) and p.u.shape == (n * K, 2)
    # trajectory-major: row i * K + k is trajectory i at grid[k]; k = 0 is the noise drawn from the generator
    torch.testing.assert_close(p.t, grid[:-1].repeat(n), rtol=0, atol=0)
    torch.testing.assert_close(p.x[::K], _noise(n, (2,), 5), rtol=0, atol=0)
    # x - t u is the trajectory's end point, the same for its K rows
    x0 = p.x0.reshape(n, K, 2)
    torch.testing.assert_close(x0, x0[:, :1].expand(n, K, 2), rtol=0, atol=1e-12)
    # ... which is the teacher's flow map from the noise (same fine grid: K * m uniform Heun steps)
    torch.testing.assert_close(x0[:, 0], teacher_flow_map(gmm, p.x[::K], 1.0, K * m), rtol=0, atol=1e-10)
    # every pair lies on the teacher's ODE: integrating again from (x_{t_k}, t_k) reaches the same x0
    for k in range(1, K):
        again = teacher_flow_map(gmm, p.x[k::K], p.t[k::K], (K - k) * m)
        torch.testing.assert_close(again, x0[:, 0], rtol=0, atol=1e-10)
    # the states at t_k are the exact ODE's states too, up to Heun's error
    exact = FlowMapOracle(gmm).flow_map(p.x, p.t)
    assert float((exact - p.x0).norm(dim=1).median()) < 5e-3


def test_trajectory_pairs_on_a_nonuniform_grid_follow_the_exact_flow():
    gmm = _four_gaussians()
    grid = torch.tensor([1.0, 0.7, 0.25, 0.0], dtype=torch.float64)
    p = trajectory_pairs(gmm, 128, (2,), grid, 16, torch.Generator().manual_seed(6), dtype=torch.float64)
    exact = FlowMapOracle(gmm).flow_map(p.x, p.t)  # every pair's x0 against the exact flow map from its own (x, t)
    err = (exact - p.x0).norm(dim=1)
    assert float(err.median()) < 2e-3 and float(err.mean()) < 5e-3, (float(err.median()), float(err.mean()))
    assert torch.equal(p.t[:3], grid[:-1])


def test_trajectory_pairs_are_seeded_and_chunk_free():
    gmm = _four_gaussians()

    def make(seed, chunk):
        return trajectory_pairs(gmm, 50, (2,), uniform_grid(2), 3, torch.Generator().manual_seed(seed), chunk=chunk)

    a, b, c = make(1, 64), make(1, 7), make(2, 64)
    assert a.x.dtype == torch.float32
    for field in ("x", "t", "u"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=0, atol=1e-6)
    assert torch.equal(a.x, make(1, 64).x) and torch.equal(a.u, make(1, 64).u)
    assert not torch.allclose(a.x, c.x)


def test_trajectory_pairs_of_images_match_the_flat_mixture():
    means = torch.randn(3, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    image = GaussianMixtureFlow(means, 0.3, shape=(1, 4, 4))
    flat = GaussianMixtureFlow(means, 0.3)
    pi = trajectory_pairs(image, 20, (1, 4, 4), uniform_grid(4), 2, torch.Generator().manual_seed(3), dtype=torch.float64)
    pf = trajectory_pairs(flat, 20, (16,), uniform_grid(4), 2, torch.Generator().manual_seed(3), dtype=torch.float64)
    assert pi.x.shape == (80, 1, 4, 4) and pi.shape == (1, 4, 4) and pi.x0.shape == (80, 1, 4, 4)
    torch.testing.assert_close(pi.x.reshape(80, 16), pf.x, rtol=0, atol=1e-12)
    torch.testing.assert_close(pi.u.reshape(80, 16), pf.u, rtol=0, atol=1e-12)
    x0 = teacher_flow_map(image, pi.x[::4], 1.0, 8)
    torch.testing.assert_close(pi.x0[::4], x0, rtol=0, atol=1e-12)


def test_trajectory_pairs_check_their_inputs():
    gmm = _four_gaussians()
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="decrease strictly from 1 to 0"):
        trajectory_pairs(gmm, 4, (2,), [1.0, 0.5], 2, g)
    with pytest.raises(ValueError, match="decrease strictly from 1 to 0"):
        trajectory_pairs(gmm, 4, (2,), [1.0, 0.6, 0.7, 0.0], 2, g)
    with pytest.raises(ValueError, match="substeps"):
        trajectory_pairs(gmm, 4, (2,), uniform_grid(2), 0, g)


# ---- distill_few_step -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def distilled_8gaussians():
    """A VelocityMLP distilled from the exact 8-Gaussians velocity to a 2-step sampler (~3 s)."""
    gmm = eight_gaussians()  # radius 2, std 0.1, float64
    pairs = trajectory_pairs(gmm, 8192, (2,), uniform_grid(2), 16, torch.Generator().manual_seed(0), dtype=torch.float64)
    cfg = FewStepConfig(steps=800, batch_size=256, lr=5e-3, warmup=50, ema_decay=0.99, grid_steps=2, substeps=16,
                        seed=0, device="cpu")
    losses = []
    student = distill_few_step(gmm, VelocityMLP(), cfg, (2,), pairs=pairs, losses=losses)
    return gmm, student, losses


def _sharpness(x0, gmm):
    """Mean distance of x0 to the nearest component mean, in component stds."""
    return float(torch.cdist(x0.double(), gmm.means).min(1).values.mean() / gmm.stds.min())


def test_distilled_student_samples_in_two_steps_and_is_sharp(distilled_8gaussians):
    gmm, student, losses = distilled_8gaussians
    assert isinstance(student, VelocityMLP) and not student.training and len(losses) == 800
    assert sum(losses[-50:]) < 0.5 * sum(losses[:50])
    g = torch.Generator().manual_seed(123)
    n = 2000
    z, data = torch.randn(n, 2, generator=g), gmm.sample(n, g)
    with torch.no_grad():
        student_2 = few_step_sample(student, z, 2)
        student_renoise_2 = few_step_sample(student, z, 2, generator=torch.Generator().manual_seed(5))
        teacher_2 = few_step_sample(gmm, z.double(), 2).float()
        x0_student = z - student(z, torch.ones(n))
        x0_teacher = z.double() - gmm(z.double(), torch.ones(n, dtype=torch.float64))  # E[x0 | x1]: the mixture's mean
    ed = {name: energy_distance(x, data) for name, x in
          (("student_2", student_2), ("renoise_2", student_renoise_2), ("teacher_2", teacher_2), ("student_1", x0_student))}
    # measured: student 2 Euler steps 0.012, re-noised 2 steps 0.0033, 1 step 0.0035; teacher 2 Euler steps 0.17
    # (two independent data sets of 2000: ~0.0007; the exact flow map in 2 Euler steps: 0.013)
    assert ed["student_2"] < 0.03 and ed["teacher_2"] > 0.12 and ed["student_2"] < ed["teacher_2"] / 5, ed
    assert ed["renoise_2"] < 0.008 and ed["student_1"] < 0.008, ed
    # x0_hat at t = 1: measured 1.9 stds from the nearest mean for the student, 20 for the teacher's posterior mean
    sharp_student, sharp_teacher = _sharpness(x0_student, gmm), _sharpness(x0_teacher, gmm)
    assert sharp_student < 3.0 and sharp_teacher > 19.0, (sharp_student, sharp_teacher)


def test_distillation_is_seeded_and_draws_its_own_pool():
    gmm = _four_gaussians()
    cfg = FewStepConfig(steps=15, batch_size=32, pool_size=64, grid_steps=2, substeps=2, warmup=5, seed=3, device="cpu")
    a = distill_few_step(gmm, VelocityMLP(hidden=32, depth=2), cfg, (2,))
    b = distill_few_step(gmm, VelocityMLP(hidden=32, depth=2), cfg, (2,))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    # a pool drawn by hand from the same seed is the one it drew
    pairs = trajectory_pairs(gmm, 64, (2,), uniform_grid(2), 2, torch.Generator().manual_seed(3))
    c = distill_few_step(gmm, VelocityMLP(hidden=32, depth=2), cfg, (2,), pairs=pairs)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), c.state_dict().values()))
    d = distill_few_step(gmm, VelocityMLP(hidden=32, depth=2), FewStepConfig(**{**cfg.__dict__, "seed": 4}), (2,), pairs=pairs)
    assert not torch.equal(a.net[0].weight, d.net[0].weight)
    with pytest.raises(ValueError, match="differs from the pairs' shape"):
        distill_few_step(gmm, VelocityMLP(), cfg, (3,), pairs=pairs)
    with pytest.raises(ValueError, match="event shape"):
        distill_few_step(gmm, VelocityMLP(), cfg)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"grid_steps": 0}, "grid_steps .*positive integer.*FewStepConfig\\(grid_steps=4\\)"),
        ({"steps": 2.5}, "steps"),
        ({"batch_size": True}, "batch_size"),
        ({"substeps": -1}, "substeps"),
        ({"pool_size": 0}, "pool_size"),
        ({"lr": 0.0}, "lr must be a positive"),
        ({"lr": float("nan")}, "lr must be a positive"),
        ({"warmup": -1}, "warmup"),
        ({"ema_decay": 1.0}, "ema_decay must be in \\[0, 1\\)"),
        ({"grad_clip": -1.0}, "grad_clip"),
        ({"lr_final_ratio": 2.0}, "lr_final_ratio"),
        ({"amp": "yes"}, "amp must be True or False"),
        ({"seed": -1}, "seed"),
        ({"device": None}, "device must be a string"),
    ],
)
def test_config_validation_names_the_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FewStepConfig(**kwargs)


def test_unknown_device_and_unavailable_cuda_are_refused():
    gmm = _four_gaussians()
    with pytest.raises(ValueError, match="unknown device"):
        distill_few_step(gmm, VelocityMLP(), FewStepConfig(device="tpu", steps=1), (2,))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            distill_few_step(gmm, VelocityMLP(), FewStepConfig(device="cuda", steps=1), (2,))


def test_few_step_sample_grid():
    seen = []

    def model(x, t):
        seen.append(float(t[0]))
        return torch.ones_like(x)

    x = few_step_sample(model, torch.zeros(4, 2), 4)
    assert seen == [1.0, 0.75, 0.5, 0.25]
    torch.testing.assert_close(x, -torch.ones(4, 2))  # sum of (t_{k+1} - t_k) * 1 = -1
    # with a flow-map velocity, one step is x1 - model(x1, 1)
    oracle = FlowMapOracle(_four_gaussians())
    z = _noise(16, (2,), 0)
    torch.testing.assert_close(few_step_sample(oracle, z, 1), oracle.flow_map(z, 1.0))


@needs_cuda
def test_distillation_on_cuda_with_bf16_autocast():
    gmm = eight_gaussians().to("cuda")
    cfg = FewStepConfig(steps=400, batch_size=256, lr=5e-3, warmup=30, pool_size=2048, grid_steps=2, substeps=8,
                        seed=0, device="cuda", amp=True, ema_decay=0.99)
    losses = []
    student = distill_few_step(gmm, VelocityMLP(), cfg, (2,), losses=losses)  # draws its pool on the GPU
    assert all(p.device.type == "cuda" and bool(torch.isfinite(p).all()) for p in student.parameters())
    assert sum(losses[-20:]) < 0.5 * sum(losses[:20])
    g = torch.Generator().manual_seed(1)
    n = 1000
    z, data = torch.randn(n, 2, generator=g).to("cuda"), eight_gaussians().sample(n, g)  # CPU draws
    with torch.no_grad():
        x2 = few_step_sample(student, z, 2)
        teacher_2 = few_step_sample(gmm, z.double(), 2)
        x0 = z - student(z, torch.ones(n, device="cuda"))
    assert x2.device.type == "cuda" and bool(torch.isfinite(x2).all())
    # the same run on the CPU (no autocast there) measured: energy distance 0.014 (teacher's 2 Euler steps 0.17),
    # x0_hat at t = 1 2.5 stds from the nearest mean (the teacher's posterior mean: 20)
    ed_student, ed_teacher = energy_distance(x2.cpu(), data.cpu()), energy_distance(teacher_2.cpu(), data.cpu())
    assert ed_student < ed_teacher / 4, (ed_student, ed_teacher)
    assert _sharpness(x0.cpu(), eight_gaussians()) < 5.0


# ---- the MNIST script -----------------------------------------------------------------------------
def _bench_module():
    spec = importlib.util.spec_from_file_location("distill_fewstep_mnist", REPO / "bench" / "distill_fewstep_mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mnist_script_quick_run_writes_a_checkpoint(tmp_path, capsys):
    bench = _bench_module()
    out = tmp_path / "fewstep"
    argv = ["--quick", "--out", str(out), "--device", "cpu", "--seed", "2", "--quiet"]
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    assert "44,145 parameters" in text and "steps/s" in text
    cfg = json.loads(out.with_suffix(".json").read_text())
    assert cfg["arch"] == "unet" and cfg["command"] == "python bench/distill_fewstep_mnist.py " + " ".join(argv)
    assert cfg["train_config"]["grid_steps"] == 4 and cfg["train_config"]["seed"] == 2 and cfg["step"] == 3
    assert cfg["sampler"]["steps"] == 4 and cfg["earlier_commands"]
    student = load_model(out, arch="unet")
    with torch.no_grad():
        x = few_step_sample(student, torch.randn(2, 1, 28, 28), 4)
    assert x.shape == (2, 1, 28, 28) and bool(torch.isfinite(x).all())


def test_mnist_script_keeps_the_weights_the_validation_classifier_chose(tmp_path, capsys):
    bench = _bench_module()
    out = tmp_path / "fewstep"
    argv = ["--quick", "--out", str(out), "--device", "cpu", "--quiet", "--select-every", "1", "--select-samples", "10"]
    assert bench.main(argv) == 0
    sel = json.loads(out.with_suffix(".json").read_text())["selection"]
    assert sel["by"] == "mnist-reward" and [p["step"] for p in sel["curve"]] == [1, 2, 3]
    ranks = [(p["rarest_class"] >= 0.05, p["validation_share"]) for p in sel["curve"]]
    assert sel["chosen"] == sel["curve"][ranks.index(max(ranks))]  # the first best evaluation
    shipped, best = load_model(out, arch="unet"), load_model(tmp_path / "fewstep-best", arch="unet")
    assert json.loads((tmp_path / "fewstep-best.json").read_text())["step"] == sel["chosen"]["step"]
    for (k, v), w in zip(shipped.state_dict().items(), best.state_dict().values()):
        assert torch.equal(v, w), k
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--out", str(tmp_path / "bad"), "--select-every", "1", "--select-samples", "3"])
    assert "--select-samples >= 10" in capsys.readouterr().err


def test_mnist_script_default_student_fits_and_oversize_is_refused(tmp_path, capsys):
    bench = _bench_module()
    from toyflow.models.unet import UNet

    f = bench.FULL
    default = UNet(channels=tuple(f["student_channels"]), mid_blocks=f["student_mid_blocks"], time_dim=f["student_time_dim"],
                   emb_dim=f["student_emb_dim"], mid_attention=f["student_attention"])
    assert 2 * sum(p.numel() for p in default.parameters()) <= 1.9e6
    with pytest.raises(SystemExit):
        bench.main(["--out", str(tmp_path / "big"), "--student-channels", "32", "64", "192"])
    err = capsys.readouterr().err
    assert "over --size-limit-mb 1.9" in err and "--student-channels" in err
    assert not (tmp_path / "big.json").exists()
