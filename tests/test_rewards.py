"""Rewards: output validation, differentiability flags, the 2D tasks, MNIST rewards on crafted images."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from toyflow import rewards
from toyflow.models.gmm import GaussianMixtureFlow


class TinyClassifier(nn.Module):
    """A small random classifier with the toyflow interface: forward -> logits (B, 10), features -> (B, 16)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.Tanh())
        self.head = nn.Linear(16, 10)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
        self.eval()

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


def images_with_ink(counts, dtype=torch.float32):
    """(B, 1, 28, 28) images at -1 with exactly counts[b] pixels set to +1 (plus 0.0 pixels: not lit)."""
    x = -torch.ones(len(counts), 1, 28, 28, dtype=dtype)
    for b, c in enumerate(counts):
        x.view(len(counts), -1)[b, :c] = 1.0
        x.view(len(counts), -1)[b, c : c + 5] = 0.0  # exactly at the threshold: not counted
    return x


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def test_nan_output_raises_naming_reward_and_inputs():
    r = rewards.FunctionReward(lambda x: torch.log(x[:, 0]), name="log-x", differentiable=True)
    with pytest.raises(ValueError, match=r"reward 'log-x' returned NaN or inf for 1 of 2 samples; check its inputs"):
        r(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    with pytest.raises(ValueError, match="x0_hat exploding"):
        r(torch.tensor([[float("nan"), 0.0], [1.0, 0.0]]))


def test_wrong_shape_raises():
    r = rewards.FunctionReward(lambda x: x.sum(1, keepdim=True), name="keepdim", differentiable=True)
    with pytest.raises(ValueError, match=r"reward 'keepdim' returned shape \(4, 1\) for a batch of 4"):
        r(torch.zeros(4, 2))
    batch_mean = rewards.FunctionReward(lambda x: x.mean(), name="mean", differentiable=True)
    with pytest.raises(ValueError, match=r"one value per sample, shape \(4,\)"):
        batch_mean(torch.zeros(4, 2))


def test_non_tensor_and_integer_outputs_raise():
    with pytest.raises(TypeError, match="must return a tensor"):
        rewards.FunctionReward(lambda x: [0.0] * x.shape[0], "list", False)(torch.zeros(3, 2))
    with pytest.raises(TypeError, match="floating-point"):
        rewards.FunctionReward(lambda x: (x[:, 0] > 0).long(), "int", False)(torch.zeros(3, 2))
    with pytest.raises(TypeError, match="torch.Tensor"):
        rewards.smooth()([[0.0, 0.0]])


def test_wrong_point_dimension_raises():
    with pytest.raises(ValueError, match=r"expects points of shape \(B, 2\), got \(5, 3\)"):
        rewards.smooth()(torch.zeros(5, 3))


def test_check_differentiable():
    r = rewards.mnist_ink(150)
    with pytest.raises(ValueError, match=r"method 'dps' .* reward 'mnist-ink-150' is not differentiable"):
        rewards.check_differentiable(r, "dps")
    with pytest.raises(ValueError, match="not differentiable"):
        rewards.check_differentiable(rewards.piecewise_constant(), "rbf+dps")
    with pytest.raises(ValueError, match="FunctionReward"):
        rewards.check_differentiable(lambda x: x.sum(1), "dps")
    smooth = rewards.smooth()
    assert rewards.check_differentiable(smooth, "dps") is smooth


# ---------------------------------------------------------------------------------------------
# 2D rewards
# ---------------------------------------------------------------------------------------------
def test_rare_mode_values_and_gradient():
    gmm, r = rewards.rare_mode_task()
    assert r.differentiable and r.name == "rare-mode-0"
    assert torch.allclose(gmm.weights[0], torch.tensor(0.02, dtype=torch.float64))
    assert torch.allclose(gmm.weights[1:].sum(), torch.tensor(0.98, dtype=torch.float64))
    means = gmm.means.float()
    vals = r(means)
    assert math.isclose(float(vals[0]), 1.0)
    assert float(vals[1:].max()) < 0.01  # the neighbours are not rewarded
    # gradient points towards the rare mode, and matches the closed form -(x - c) r / w^2
    x = torch.tensor([[1.7, 0.3]], requires_grad=True)
    (g,) = torch.autograd.grad(r(x).sum(), x)
    c = torch.tensor([2.0, 0.0])
    expected = -(x.detach() - c) * r(x.detach())[:, None] / 0.5**2
    assert torch.allclose(g, expected, atol=1e-6)


def test_rare_mode_index_checked():
    gmm, _ = rewards.rare_mode_task()
    with pytest.raises(ValueError, match="mode_index must be in 0..7"):
        rewards.rare_mode(gmm, 8)


def test_counting_is_piecewise_constant_count_error():
    gmm, r = rewards.counting_task()
    assert not r.differentiable
    assert gmm.means.shape == (25, 2)
    corner = int(((gmm.means - torch.tensor([2.0, 2.0], dtype=torch.float64)).abs().sum(1) == 0).nonzero())
    assert 0.012 < float(gmm.weights[corner]) < 0.016  # a rare count
    pts = torch.tensor([[2.0, 2.0], [2.3, 1.8], [1.0, 2.0], [0.0, 0.0], [-2.0, -2.0], [3.1, 2.0]])
    assert torch.equal(r(pts), torch.tensor([0.0, 0.0, -1.0, -4.0, -8.0, -1.0]))
    assert set(r(gmm.means.float()).tolist()) == {float(-k) for k in range(9)}


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-4, 4), min_size=2, max_size=2), st.floats(-0.3, 0.3))
def test_counting_constant_inside_a_cell(point, shift):
    r = rewards.piecewise_constant((2, 2))
    x = torch.tensor([point], dtype=torch.float64)
    centre = torch.round(x)
    assert torch.equal(r(centre + shift), r(centre))


def test_aesthetic_smooth_bounded_and_tied_best_modes():
    gmm, r = rewards.aesthetic_task()
    assert r.differentiable
    vals = r(gmm.means.float())
    assert math.isclose(float(vals[0]), float(vals[1]), rel_tol=1e-6)
    assert float(vals[0]) == pytest.approx(math.tanh(2 * math.cos(math.pi / 8)), rel=1e-6)
    assert int(vals.argmax()) in (0, 1) and float(vals[2:].max()) < float(vals[0]) - 0.2
    far = r(torch.tensor([[1e3, 1e3], [-1e3, -1e3]]))
    assert float(far[0]) <= 1.0 and float(far[1]) >= -1.0


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 20), st.sampled_from(rewards.TASKS))
def test_task_rewards_shape_and_finite(batch, name):
    gmm, r = rewards.task(name)
    x = 3 * torch.randn(batch, 2, generator=torch.Generator().manual_seed(batch))
    out = r(x)
    assert out.shape == (batch,) and bool(torch.isfinite(out).all())
    assert isinstance(gmm, GaussianMixtureFlow)


def test_unknown_task():
    with pytest.raises(ValueError, match="valid names: rare-mode, counting, aesthetic"):
        rewards.task("nope")


# ---------------------------------------------------------------------------------------------
# MNIST rewards
# ---------------------------------------------------------------------------------------------
def test_mnist_ink_exact_counts():
    r = rewards.mnist_ink(150)
    assert not r.differentiable
    x = images_with_ink([0, 150, 200, 784 - 5])
    assert torch.allclose(r(x), torch.tensor([-1.5, 0.0, -0.5, -(779 - 150) / 100]))


def test_mnist_digit_is_log_prob():
    clf = TinyClassifier()
    r = rewards.mnist_digit(7, classifier=clf)
    assert r.differentiable and r.name == "mnist-digit-7"
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = r(x)
    assert out.shape == (6,) and bool((out <= 0).all())
    assert torch.allclose(out, torch.log_softmax(clf(x), 1)[:, 7])
    # summing over the 10 digits of exp(log p) gives 1
    total = sum(torch.exp(rewards.mnist_digit(k, clf)(x)) for k in range(10))
    assert torch.allclose(total, torch.ones(6), atol=1e-5)
    # differentiable through the classifier
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(r(x).sum(), x)
    assert g.shape == x.shape and float(g.abs().sum()) > 0


def test_mnist_digit_thick_is_min_of_both():
    clf = TinyClassifier(1)
    r = rewards.mnist_digit_thick(3, classifier=clf, min_ink=100)
    assert not r.differentiable
    x = images_with_ink([0, 50, 100, 400])
    p3 = torch.softmax(clf(x), 1)[:, 3]
    thick = torch.tensor([0.0, 0.5, 1.0, 1.0])
    out = r(x)
    assert torch.allclose(out, torch.minimum(p3, thick))
    assert float(out[0]) == 0.0 and not out.requires_grad


def test_mnist_shape_validated():
    clf = TinyClassifier()
    for reward in (rewards.mnist_ink(100), rewards.mnist_digit(1, clf), rewards.mnist_digit_thick(1, clf)):
        with pytest.raises(ValueError, match=r"expects MNIST images of shape \(B, 1, 28, 28\)"):
            reward(torch.zeros(2, 784))


def test_mnist_arguments_validated():
    with pytest.raises(ValueError, match="digit must be an int in 0..9"):
        rewards.mnist_digit(10, TinyClassifier())
    with pytest.raises(ValueError, match="ink target"):
        rewards.mnist_ink(1000)


def test_check_reward_output_is_shared_by_rewards_and_search(gmm8):
    """One validator: a Reward and a plain function given to a search fail with the same message."""
    from toyflow import search
    from toyflow.rewards import check_reward_output

    x0 = torch.zeros(3, 2)
    counts = torch.tensor([1, 2, 3])
    with pytest.raises(TypeError, match="returned dtype torch.int64"):
        check_reward_output(counts, x0, "count")
    cast = check_reward_output(counts, x0, "count", cast_integers=True)
    assert cast.dtype == torch.get_default_dtype() and torch.equal(cast, counts.to(cast.dtype))
    bad = torch.tensor([0.0, float("inf"), 1.0])
    with pytest.raises(ValueError, match=r"reward 'count' returned NaN or inf for 1 of 3 samples; check its inputs: inputs are finite"):
        check_reward_output(bad, x0, "count")
    huge = torch.full((3,), 1e308, dtype=torch.float64)  # the sum overflows, every entry is finite
    assert check_reward_output(huge, x0, "big") is huge

    def count(x):
        return torch.where(torch.arange(x.shape[0]) == 0, float("nan"), x[:, 0])

    with pytest.raises(ValueError, match=r"reward 'count' returned NaN or inf for 1 of \d+ samples; check its inputs"):
        search.run("bon", gmm8, count, budget=8, steps=4, runs=2, shape=(2,), generator=torch.Generator().manual_seed(0))
    res = search.run("bon", gmm8, lambda x: (x[:, 0] > 0).long(), budget=8, steps=4, runs=2, shape=(2,),
                     generator=torch.Generator().manual_seed(0))
    assert res.rewards.dtype.is_floating_point
