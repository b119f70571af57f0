"""Flow-map distillation (toyflow.distill) and the shipped 2d-<task>-x8-flowmap MLPs."""

import json
import math

import pytest
import torch

from toyflow import pretrained, rewards
from toyflow.distill import (
    DistillConfig,
    _init_weights,
    flow_map_error,
    flow_map_loss,
    flow_map_pairs,
    main,
    train_flow_map_mlp,
)
from toyflow.models import FlowMapOracle, GaussianMixtureFlow, VelocityMLP, load_model

torch.set_num_threads(1)

SHIPPED = {name: f"2d-{name}-x8-flowmap" for name in rewards.TASKS}


def _four_gaussians():
    means = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]], dtype=torch.float64)
    return GaussianMixtureFlow(means, 0.2, [0.4, 0.3, 0.2, 0.1])


def test_pairs_hold_the_oracles_flow_map():
    gmm = _four_gaussians()
    fm = FlowMapOracle(gmm)
    p = flow_map_pairs(gmm, 256, torch.Generator().manual_seed(0), t_one_share=0.5, t_power=2.0, oracle=fm)
    assert p.x.shape == (256, 2) and p.t.shape == (256,) and p.u.shape == (256, 2)
    assert bool((p.t > 0).all() and (p.t <= 1).all()) and 0.35 < float((p.t == 1).double().mean()) < 0.65
    torch.testing.assert_close(p.x0.double(), fm.flow_map(p.x.double(), p.t.double()), rtol=0, atol=1e-4)


def test_a_short_training_run_reduces_the_flow_map_error():
    gmm = _four_gaussians()
    fm = FlowMapOracle(gmm, 24)
    pairs = flow_map_pairs(gmm, 2048, torch.Generator().manual_seed(1), t_one_share=0.25, oracle=fm)
    untrained = VelocityMLP()
    _init_weights(untrained, torch.Generator().manual_seed(0))
    trained = train_flow_map_mlp(gmm, steps=300, batch_size=128, lr=3e-3, seed=0, pairs=pairs)
    assert isinstance(trained, VelocityMLP) and not trained.training
    for t in (0.5, 1.0):
        before = flow_map_error(untrained, gmm, t, 512, torch.Generator().manual_seed(2), fm).mean()
        after = flow_map_error(trained, gmm, t, 512, torch.Generator().manual_seed(2), fm).mean()
        assert after < 0.5 * before, (t, float(before), float(after))
    # the loss is a relative velocity error: the same for the task and its scaled copy
    x, tt, u = pairs.x[:64], pairs.t[:64], pairs.u[:64]
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    torch.testing.assert_close(flow_map_loss(zero, 8 * x, tt, 8 * u, 8.0), flow_map_loss(zero, x, tt, u, 1.0))


def test_training_is_seeded():
    gmm = _four_gaussians()
    pairs = flow_map_pairs(gmm, 256, torch.Generator().manual_seed(3), oracle=FlowMapOracle(gmm, 8))
    a = train_flow_map_mlp(gmm, steps=5, batch_size=32, seed=4, pairs=pairs)
    b = train_flow_map_mlp(gmm, steps=5, batch_size=32, seed=4, pairs=pairs)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ValueError, match="steps"):
        DistillConfig(steps=0)


def test_command_line_writes_a_shipped_style_checkpoint(tmp_path, capsys):
    out = tmp_path / "fm"
    argv = ["--task", "rare-mode", "--scale", "8", "--out", str(out), "--steps", "20", "--pool-size", "512", "--quiet"]
    assert main(argv) == 0
    cfg = json.loads(out.with_suffix(".json").read_text())
    assert cfg["arch"] == "mlp" and cfg["objective"] == "flow-map distillation"
    assert cfg["task"] == "rare-mode" and cfg["scale"] == 8.0 and cfg["schedule"] == "linear"
    assert cfg["command"] == "python -m toyflow.distill " + " ".join(argv) and cfg["step"] == 20
    assert cfg["train_config"]["steps"] == 20
    model = load_model(out, arch="mlp")
    assert model(torch.zeros(3, 2), torch.ones(3)).shape == (3, 2)


# ---- the shipped models ---------------------------------------------------------------------------
def _shipped(name):
    if SHIPPED[name] not in pretrained.available():
        pytest.fail(f"{SHIPPED[name]} is registered but its weights are missing")
    return pretrained.load(SHIPPED[name])


@pytest.mark.parametrize("name", rewards.TASKS)
def test_shipped_flow_map_mlp_metadata_and_size(name):
    cfg = pretrained.info(SHIPPED[name])
    assert cfg["objective"] == "flow-map distillation" and cfg["task"] == name and cfg["scale"] == 8
    assert cfg["command"].startswith(f"python -m toyflow.distill --task {name} --scale 8")
    assert pretrained.path(SHIPPED[name]).stat().st_size < 200_000


@pytest.mark.parametrize("name", rewards.TASKS)
def test_shipped_flow_map_mlp_x0_is_close_to_the_flow_map(name):
    gmm, _ = rewards.task(name, scale=8)
    model, fm, std = _shipped(name), FlowMapOracle(gmm), float(gmm.stds.min())
    g = torch.Generator().manual_seed(2024)  # held out: the training pools use other streams
    for t in (0.2, 0.5, 0.8, 1.0):
        err = flow_map_error(model, gmm, t, 600, g, fm) / std
        assert err.mean() < 0.3, (name, t, float(err.mean()))


@pytest.mark.parametrize("name", rewards.TASKS)
def test_shipped_flow_map_mlp_samples_in_one_step(name):
    gmm, _ = rewards.task(name, scale=8)
    model, std = _shipped(name), float(gmm.stds.min())
    n = 4000
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        x = (z - model(z, torch.ones(n))).double()  # one Euler step from t = 1 to 0
    dist = (x[:, None] - gmm.means[None]).norm(dim=2)
    near, comp = dist.min(1)
    assert (near < 3 * std).double().mean() > 0.9
    freq = torch.bincount(comp, minlength=len(gmm.weights)).double() / n
    sd = (gmm.weights * (1 - gmm.weights) / n).sqrt()
    assert ((freq - gmm.weights).abs() < 0.15 * gmm.weights + 4 * sd).all(), (freq, gmm.weights)
    assert math.isfinite(float(x.abs().max()))
