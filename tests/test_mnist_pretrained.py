"""The shipped MNIST weights: load offline, classify real digits, sample digits, run every search method."""

import pytest
import torch

from toyflow import dynamics, pretrained, rewards, search
from toyflow.models import load_model

needs_weights = pytest.mark.skipif(
    "mnist-flow" not in pretrained.available(), reason="shipped MNIST weights not present in toyflow/pretrained"
)


@needs_weights
def test_shipped_weights_are_small_and_load():
    # every shipped file (weights and their JSON configs) in decimal megabytes: 10 MB = 10**7 bytes
    files = [f for n in pretrained.available() for f in (pretrained.path(n), pretrained.path(n).with_suffix(".json"))]
    total = sum(f.stat().st_size for f in files if f.exists())
    assert total <= 10 * 10**6, f"shipped weights take {total / 10**6:.2f} MB > 10 MB"
    flow = pretrained.load("mnist-flow")
    assert type(flow).arch == "unet" and 1_000_000 <= sum(p.numel() for p in flow.parameters()) <= 3_000_000
    for name in ("mnist-flow", "mnist-reward", "mnist-evaluator"):
        assert "command" in pretrained.info(name)
    # the flow ships float16 weights (toyflow export) and loads as a float32 model
    assert pretrained.info("mnist-flow")["weights_dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in flow.parameters())
    # so does the evaluator (float16 storage keeps it under the budget; it computes in float32)
    assert pretrained.info("mnist-evaluator")["weights_dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in pretrained.load("mnist-evaluator").parameters())
    # its history: six flow-matching phases (toyflow train mnist), then the Euler distillation
    info = pretrained.info("mnist-flow")
    assert info["objective"].startswith("euler-distillation") and info["command"].startswith("python bench/distill_euler.py")
    assert len(info["earlier_commands"]) == 6 and all(c.startswith("toyflow train mnist") for c in info["earlier_commands"])


@needs_weights
def test_wrong_shape_and_mismatched_checkpoint_errors():
    flow = pretrained.load("mnist-flow")
    with pytest.raises(ValueError, match="28"):
        flow(torch.randn(2, 784), torch.rand(2))
    with pytest.raises(ValueError, match="not the expected 'unet'"):
        load_model(pretrained.path("mnist-reward"), arch="unet")


@needs_weights
@pytest.mark.slow
def test_classifiers_on_held_out_real_digits(mnist_dir):
    from toyflow.data.mnist import load_mnist

    test, train5k = load_mnist("test", mnist_dir), load_mnist("train5k", mnist_dir)
    with torch.no_grad():
        acc_reward = (pretrained.load("mnist-reward")(train5k.images).argmax(1) == train5k.labels).float().mean()
        acc_eval = (pretrained.load("mnist-evaluator")(test.images[:5000]).argmax(1) == test.labels[:5000]).float().mean()
    assert acc_reward >= 0.98 and acc_eval >= 0.97, (acc_reward, acc_eval)


@needs_weights
@pytest.mark.slow
def test_flow_samples_are_digits():
    flow, evaluator = pretrained.load("mnist-flow"), pretrained.load("mnist-evaluator")
    g = torch.Generator().manual_seed(1)
    x = dynamics.sample(flow, torch.randn(200, 1, 28, 28, generator=g), "linear", steps=20).x
    with torch.no_grad():
        conf, cls = torch.softmax(evaluator(x), 1).max(1)
    assert (conf >= 0.9).float().mean() >= 0.85  # bench/RESULTS.md: 90.7-92.0 % of 1,000 samples (s.e. of 200: 2 points)
    assert torch.bincount(cls, minlength=10).min() >= 5  # every class appears


@needs_weights
@pytest.mark.parametrize("method", ["bon", "sop", "smc", "svdd", "code", "rbf", "dps", "rbf+dps"])
def test_every_method_runs_on_images(method):
    flow = pretrained.load("mnist-flow")
    reward = rewards.mnist_digit(3)
    g = torch.Generator().manual_seed(0)
    res = search.run(method, flow, reward, mode="vp-sde", budget=40, steps=4, runs=2, shape=(1, 28, 28), generator=g)
    assert res.samples.shape == (2, 1, 28, 28)
    assert bool((res.nfe <= 40).all()) and torch.equal(res.nfe, res.nfe_per_step.sum(1))


needs_student = pytest.mark.skipif(
    "mnist-flow-fewstep" not in pretrained.available() or "mnist-evaluator" not in pretrained.available(),
    reason="the shipped few-step MNIST student is not installed",
)


@needs_student
def test_fewstep_student_is_small_and_records_how_it_was_made():
    student = pretrained.load("mnist-flow-fewstep")
    info = pretrained.info("mnist-flow-fewstep")
    assert type(student).arch == "unet" and info["weights_dtype"] == "float16"
    assert pretrained.path("mnist-flow-fewstep").stat().st_size <= 1.9e6  # the student's share of the budget
    assert "distill_fewstep_mnist.py" in info["command"] and info["distilled_from"]


@needs_student
def test_fewstep_student_x0_hat_is_sharper_than_the_flows_at_high_noise():
    """At t = 1 the flow's x0_hat is a posterior-mean blur; the student's is the teacher's flow map, a
    digit: the held-out evaluator is more confident on it (same noises)."""
    evaluator = pretrained.load("mnist-evaluator")
    x1 = torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    t = torch.ones(32)
    conf = {}
    with torch.no_grad():
        for name in ("mnist-flow", "mnist-flow-fewstep"):
            x0 = (x1 - pretrained.load(name)(x1, t)).clamp(-1, 1)
            conf[name] = float(torch.softmax(evaluator(x0), 1).max(1).values.mean())
    assert conf["mnist-flow-fewstep"] > conf["mnist-flow"] + 0.15, conf


@needs_student
def test_benchmark_runs_the_student_as_model_unet_fewstep():
    from toyflow import benchmark

    task = benchmark.make_task("mnist-ink", "unet-fewstep")
    assert task.model_name == "unet-fewstep"
    ref = pretrained.load("mnist-flow-fewstep")
    assert all(torch.equal(a, b) for a, b in zip(task.model.state_dict().values(), ref.state_dict().values()))
