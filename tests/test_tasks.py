"""toyflow.tasks, the one home of the tasks: rewards.task, the benchmark, the CLI and the demo read it;
a task registered there is found by all of them; the engine's single checks (reward, renoise) and
its null recorder."""

from __future__ import annotations

import csv
import math
import subprocess
import sys

import pytest
import torch

from toyflow import benchmark, demo, dynamics, rewards, search, tasks
from toyflow.cli import main
from toyflow.data.toy2d import eight_gaussians_gmm
from toyflow.search.result import NullRecorder, Recorder


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_names_and_clear_errors():
    assert tasks.names("2d") == ("rare-mode", "counting", "aesthetic") == rewards.TASKS == benchmark.TASKS_2D
    assert tasks.names("mnist") == ("mnist-digit", "mnist-ink", "mnist-thick") == benchmark.TASKS_MNIST
    with pytest.raises(ValueError, match=r"'rare-mode' with scale=8.*2D tasks: rare-mode, counting, aesthetic"):
        tasks.get("rare-mode-x8")
    with pytest.raises(ValueError, match="already registered"):
        tasks.register(tasks.get("counting"))
    with pytest.raises(TypeError, match="ToyTask or tasks.MnistTask"):
        tasks.register("rare-mode")
    with pytest.raises(ValueError, match="kind"):
        tasks.names("3d")


@pytest.mark.parametrize("name", ["rare-mode", "counting", "aesthetic"])
@pytest.mark.parametrize("scale", [1.0, 8.0])
def test_rewards_task_and_benchmark_read_the_registry(name, scale):
    gmm, reward = tasks.get(name).make(scale)
    gmm2, reward2 = rewards.task(name, scale=scale)
    assert torch.equal(gmm.means, gmm2.means) and torch.equal(gmm.weights, gmm2.weights)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3 * scale
    assert torch.equal(reward(x), reward2(x))
    t = benchmark.make_task(name, "oracle", scale=scale)
    assert t.name == tasks.get(name).label(scale) == (name if scale == 1 else f"{name}-x8")
    assert torch.equal(t.reward(x), reward(x)) and torch.equal(t.model.means, gmm.means)


def test_recommended_options_are_fresh_copies_and_the_demo_uses_them():
    task = tasks.get("rare-mode")
    opts = task.options("smc")
    assert opts == {"lam": 0.05} and task.options("rbf") == {}
    opts["lam"] = 9.0  # a caller's copy: the registry is unchanged
    assert task.options("smc") == {"lam": 0.05}
    with pytest.raises(TypeError):
        task.recommended["smc"]["lam"] = 1.0  # read-only
    assert demo._options("smc", "rare-mode") == {"lam": 0.05} and demo._options("svdd", "rare-mode") == {}
    assert tasks.get("mnist-digit").options("smc") == {"lam": 1.0}


def test_listing_tasks_does_not_import_torch():
    code = "import sys, toyflow.tasks as t; t.names(); assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture
def ring_task():
    """A task defined outside the package: 8 Gaussians, reward = closeness to the point (0, 2)."""

    def build():
        return eight_gaussians_gmm(), rewards.FunctionReward(lambda x: -((x - torch.tensor([0.0, 2.0]).to(x)) ** 2).sum(-1),
                                                             "near-top", differentiable=True)

    task = tasks.register(tasks.ToyTask("ring-top", build, "reach the top mode", (-math.inf, 0.0), {"smc": {"lam": 0.1}}))
    yield task
    del tasks.TOY["ring-top"]


def test_a_registered_task_runs_through_the_benchmark_and_the_cli(ring_task, tmp_path):
    t = benchmark.make_task("ring-top", "oracle")
    row = benchmark.run_cell(t, "svdd", "linear-sde", 40, steps=4, runs=4)
    assert row["status"] == "ok" and row["task"] == "ring-top" and row["nfe_mean"] == 40
    out = tmp_path / "r.csv"
    assert main(["bench", "search", "--task", "ring-top", "--methods", "bon", "--modes", "linear-ode", "--budgets", "8",
                 "--steps", "4", "--runs", "2", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["task"], r["method"], r["status"]) for r in rows] == [("ring-top", "bon", "ok")]


# -- the engine's single checks ---------------------------------------------------------------
class CountingReward(rewards.Reward):
    """The rare-mode bump, counting evaluate() calls and the rows they saw."""

    def __init__(self):
        _, self.inner = rewards.task("rare-mode")
        self.name, self.calls, self.rows = "counting-bump", 0, 0

    def evaluate(self, x0):
        self.calls += 1
        self.rows += x0.shape[0]
        return self.inner.evaluate(x0)


def _count_reads(fn) -> int:
    """Host reads (tensor -> Python value) while fn() runs: bench/_common.count_host_reads."""
    from _common import count_host_reads

    with count_host_reads() as counter:
        fn()
    return sum(counter.values())


def test_rbf_reads_two_values_per_tick_and_checks_each_reward_once(bench_on_path):
    gmm, _ = rewards.task("rare-mode")
    reward = CountingReward()

    class Calls(torch.nn.Module):  # a model that reads no values itself (the mixture's checks would count)
        n = 0

        def forward(self, x, t):
            Calls.n += 1
            return -0.5 * x + t[:, None]

    kw = dict(mode="vp-sde", steps=10, runs=32, shape=(2,))
    res = search.run("rbf", Calls(), reward, generator=torch.Generator().manual_seed(0), budget=200, **kw)
    assert reward.calls == Calls.n + 1  # one evaluation per model call, plus the final samples'
    assert reward.rows == int(res.nfe.sum() + res.discarded.sum()) + 32

    def reads_and_ticks(budget):
        Calls.n = 0
        reads = _count_reads(lambda: search.run("rbf", Calls(), reward, generator=torch.Generator().manual_seed(0),
                                                budget=budget, **kw))
        return reads, Calls.n - 1  # the initial draws are one call, every other call a tick

    (r1, t1), (r2, t2) = reads_and_ticks(60), reads_and_ticks(400)
    # each extra tick reads two values (the velocity's finiteness, the rewards' host copy); the set-up is the same
    assert t2 - t1 > 50 and r2 - r1 == 2 * (t2 - t1)


def test_non_finite_rewards_still_get_the_detailed_error():
    gmm, _ = rewards.task("rare-mode")

    def nan_right(x):  # NaN for the samples on the right half of the ring
        r = -(x**2).sum(-1)
        return torch.where(x[:, 0] > 0.5, torch.full_like(r, float("nan")), r)

    for method in ("rbf", "rbf-strict", "svdd", "bon"):
        with pytest.raises(ValueError, match=r"returned NaN or inf for \d+ of \d+ samples"):
            search.run(method, gmm, nan_right, mode="vp-sde", budget=100, steps=5, runs=16, shape=(2,),
                       generator=torch.Generator().manual_seed(1))


def test_renoise_rows_equal_dynamics_renoise():
    gmm, reward = rewards.task("rare-mode")
    for mode in search.MODES:
        ctx = search.SearchContext(gmm, reward, sampler=search.Sampler.preset(mode), budget=50, steps=7, runs=2,
                                   shape=(2,), generator=torch.Generator().manual_seed(0), device="cpu",
                                   dtype=torch.float64)
        x, z = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
        for k_from in range(8):
            for k_to in range(k_from + 1):
                want = dynamics.renoise(x, ctx.times[k_from].expand(5), ctx.times[k_to].expand(5), ctx.schedule, z)
                assert torch.allclose(ctx.renoise(x, k_from, k_to, z), want, rtol=0, atol=1e-15, equal_nan=True)  # NaN: from t = 1


def test_null_recorder_skips_lazy_fields_and_the_recorder_evaluates_them():
    def boom():
        raise AssertionError("a lazy field was evaluated with recording off")

    null = NullRecorder()
    assert not null.active and null.step(3, held=boom, candidates=boom, accepted=boom, quota=boom) is None
    assert null.finish(torch.zeros(1), torch.zeros(1)) is None
    rec = Recorder(runs=2, steps=3, particles=2, shape=(2,), times=torch.linspace(1, 0, 4), dtype=torch.float64,
                   device="cpu")
    x0, r = torch.ones(2, 2, 2, dtype=torch.float64), torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    rec.step(1, candidates=lambda: (x0, r), accepted=lambda: r > 1.5, held=(x0, x0, r), quota=torch.tensor([5, 6]))
    h = rec.finish(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, dtype=torch.int64))
    assert torch.equal(h.proposal_rewards[1], r) and torch.equal(h.accepted[1], r > 1.5)
    assert torch.equal(h.rewards[:, 1], r) and h.quota[:, 1].tolist() == [5, 6]
    gmm, reward = rewards.task("rare-mode")
    for method in search.METHODS:
        ctx_rec = []

        class Spy(search.Method):  # runs the built-in method and keeps its context
            name, options = f"spy-{method}", search.get_method(method).options

            def run(self, ctx, opts):
                ctx_rec.append(ctx.recorder)
                return search.get_method(method).run(ctx, opts)

        if search.get_method(method).needs_gradients:
            continue
        res = search.run(Spy(), gmm, reward, budget=60, steps=5, runs=3, shape=(2,),
                         generator=torch.Generator().manual_seed(0))
        assert isinstance(ctx_rec[0], NullRecorder) and res.history is None


@pytest.mark.parametrize("name", ["rare-mode", "counting", "aesthetic"])
def test_the_generic_scaled_reward_equals_each_built_in_scaled_one(name):
    _, r0 = rewards.task(name)
    _, r8 = rewards.task(name, scale=8)
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 20
    generic = rewards.ScaledReward(r0, 8)
    assert generic.differentiable == r0.differentiable and generic.name == f"{r0.name}-x8"
    assert torch.allclose(generic(x), r8(x), rtol=0, atol=1e-12)
    with pytest.raises(TypeError, match="FunctionReward"):
        rewards.scale_reward(lambda x: x[:, 0], 8)
