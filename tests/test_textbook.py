"""search.run(..., engine="textbook"): the paper's pseudo-code, one run at a time, equals the fast engine.

- identical: with one run the random streams align (RBF with ``proposals_per_tick=1``), so samples,
  rewards and ``nfe_per_step`` agree run for run (samples to float rounding: the fast engine fuses
  its affine maps);
- identical ``nfe_per_step`` on crafted rewards, with the fast engine's default chunked proposals;
- in distribution otherwise (many runs, independent seeds): rewards, samples and NFE per step.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from toyflow import search
from toyflow.data.toy2d import eight_gaussians_gmm, eight_gaussians_means
from toyflow.search import textbook
from toyflow.rewards import FunctionReward
from toyflow.search.budget import AllocationScheme, Rollover

STEPS = 6
MU3 = eight_gaussians_means()[3].float()
TEXTBOOK = ("bon", "sop", "smc", "svdd", "code", "rbf", "rbf-strict", "dps", "rbf+dps")
ONE = {"proposals_per_tick": 1}
ALIGN = {"rbf": ONE, "rbf-strict": ONE, "rbf+dps": ONE}  # RBF's fast engine: one draw per model call


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def gmm():
    return eight_gaussians_gmm()


def near_mu3(x0):
    return -((x0 - MU3) ** 2).sum(-1)


DIFF = FunctionReward(near_mu3, name="near-mu3", differentiable=True)


def reward_for(method):
    return DIFF if method in ("dps", "rbf+dps") else near_mu3


class Counter:
    """Crafted reward: the value depends only on how many times it was called (never on x)."""

    def __init__(self, fn):
        self.calls, self.fn = 0, fn

    def __call__(self, x0):
        v = self.fn(self.calls)
        self.calls += 1
        return torch.full((x0.shape[0],), float(v))


class StallBoost(AllocationScheme):
    """Reads the state: an even share of what is left, twice that after a step without improvement."""

    def quota(self, state):
        share = state.budget_left // (state.steps - state.step)
        return torch.where(state.accepted, share, 2 * share)


def both(method, model, reward_fast, reward_text, seed=0, seed_text=None, **kw):
    kw = {"budget": 40, "steps": STEPS, "runs": 1, "shape": (2,), **kw}
    fast = search.run(method, model, reward_fast, generator=torch.Generator().manual_seed(seed), **kw)
    text = search.run(method, model, reward_text, generator=torch.Generator().manual_seed(
        seed if seed_text is None else seed_text), engine="textbook", **kw)
    return fast, text


# ---------------------------------------------------------------------------------------------
# identical where the random streams align (one run)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", search.MODES)
@pytest.mark.parametrize("method", TEXTBOOK)
def test_identical_samples_one_run(gmm, method, mode):
    lo = search.minimum_budget(method, STEPS)
    for seed, budget in enumerate(sorted({lo, 40, 97})):
        fast, text = both(method, gmm, reward_for(method), reward_for(method), seed=seed, mode=mode, budget=budget,
                          **ALIGN.get(method, {}))
        assert fast.nfe_per_step.tolist() == text.nfe_per_step.tolist(), (method, mode, budget)
        assert torch.allclose(fast.samples, text.samples, atol=1e-5, rtol=0), (method, mode, budget)
        assert torch.allclose(fast.rewards, text.rewards, atol=1e-5, rtol=0)
        assert text.method == method and bool((text.nfe <= budget).all())


@pytest.mark.parametrize("method, extra", [("svdd", {}), ("code", {"block": 2}), ("code", {"block": 3}),
                                           ("rbf", {}), ("rbf-strict", {})])
def test_identical_with_a_state_reading_scheme(gmm, method, extra):
    alloc = Rollover(StallBoost()) if method.startswith("rbf") else StallBoost()
    for seed in range(3):
        fast, text = both(method, gmm, near_mu3, near_mu3, seed=seed, budget=60, allocation=alloc,
                          **ALIGN.get(method, {}), **extra)
        assert fast.nfe_per_step.tolist() == text.nfe_per_step.tolist()
        assert torch.allclose(fast.samples, text.samples, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method, extra", [
    ("smc", {"resample": "multinomial", "output": "sample", "lam": 0.3}), ("smc", {"ess_threshold": 1.0}),
    ("sop", {"paths": 3, "renoise_steps": 2, "start": 0.6}), ("sop", {"branch": 2}), ("code", {"block": 5}),
    ("dps", {"lam": 0.5}), ("rbf+dps", {"lam": 0.5, **ONE}), ("rbf", {"initial_particles": 4, **ONE}),
    ("rbf-strict", {"spend_rest_at_last_step": True, **ONE}),
])
def test_identical_with_options(gmm, method, extra):
    for seed in range(2):
        fast, text = both(method, gmm, reward_for(method), reward_for(method), seed=seed, budget=90, **extra)
        assert fast.nfe_per_step.tolist() == text.nfe_per_step.tolist()
        assert torch.allclose(fast.samples, text.samples, atol=1e-5, rtol=0)


def test_smc_resamples_in_these_tests(gmm):
    """lam = 0.3 (options test above, distribution test below) makes SMC resample; ess_threshold=1 always does."""
    for seed in range(2):
        res = search.run("smc", gmm, near_mu3, budget=90, steps=STEPS, shape=(2,), record=True, lam=0.3,
                         generator=torch.Generator().manual_seed(seed))
        assert bool((res.history.ess < 0.5 * (90 // STEPS)).any())


def test_identical_with_one_step(gmm):
    for method in TEXTBOOK:
        if method == "sop":
            continue  # SoP needs steps > renoise_steps
        fast, text = both(method, gmm, reward_for(method), reward_for(method), budget=7, steps=1)
        assert fast.nfe_per_step.tolist() == text.nfe_per_step.tolist()
        assert torch.allclose(fast.samples, text.samples, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# identical nfe_per_step on crafted rewards (the fast engine with its default chunked proposals)
# ---------------------------------------------------------------------------------------------
B = 46  # steps = 6, rbf-strict: one initial draw, 45 NFE over 5 search steps -> 9 each


@pytest.mark.parametrize("method", ("rbf", "rbf-strict"))
@pytest.mark.parametrize("name, fn", [("constant", lambda i: 0.0), ("falling", lambda i: -float(i)),
                                      ("rising", lambda i: float(i))])
def test_crafted_rewards_same_nfe_per_step(gmm, method, name, fn):
    # with every call's rows sharing one value, a chunk of draws decides like draws one at a time
    fast, text = both(method, gmm, Counter(fn), Counter(fn), budget=B, runs=3)
    assert fast.nfe_per_step.tolist() == text.nfe_per_step.tolist()
    expect = {("rbf-strict", "rising"): [1] * STEPS, ("rbf", "rising"): [2, 1, 1, 1, 1, B - 6]}
    if (method, name) in expect:
        assert text.nfe_per_step.tolist() == [expect[method, name]] * 3
    elif method == "rbf-strict":
        assert text.nfe_per_step.tolist() == [[1, 9, 9, 9, 9, 9]] * 3


@pytest.mark.parametrize("method", ("rbf", "rbf-strict"))
def test_crafted_every_third_candidate_improves(gmm, method):
    fn = lambda i: float(i // 3)  # noqa: E731
    fast, text = both(method, gmm, Counter(fn), Counter(fn), budget=B, initial_particles=1, proposals_per_tick=1)
    assert fast.nfe_per_step.tolist() == text.nfe_per_step.tolist()
    assert text.nfe_per_step.tolist()[0][:5] == [1, 3, 3, 3, 3]


def test_crafted_fixed_schedules(gmm):
    for method in ("bon", "smc", "svdd", "code", "sop"):
        fast, text = both(method, gmm, Counter(lambda i: 0.0), Counter(lambda i: 0.0), budget=B, runs=3)
        assert fast.nfe_per_step.tolist() == text.nfe_per_step.tolist()


# ---------------------------------------------------------------------------------------------
# in distribution (many runs, independent seeds; the fast engine with its defaults)
# ---------------------------------------------------------------------------------------------
def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup |F_a - F_b|."""
    a, b = a.double().sort().values, b.double().sort().values
    grid = torch.cat([a, b])
    Fa = torch.searchsorted(a, grid, right=True).double() / len(a)
    Fb = torch.searchsorted(b, grid, right=True).double() / len(b)
    return float((Fa - Fb).abs().max())


RUNS = {"rbf": 150, "rbf-strict": 150, "rbf+dps": 100}  # else 200 (textbook: one model call per candidate)


@pytest.mark.parametrize("method", TEXTBOOK)
def test_same_distribution(gmm, method):
    kw = {"rbf+dps": ONE, "smc": {"lam": 0.3}}.get(method, {})  # rbf+dps: one gradient per draw either way
    n = RUNS.get(method, 200)
    fast, text = both(method, gmm, reward_for(method), reward_for(method), seed=1, seed_text=2, runs=n, budget=30, **kw)
    crit = 1.95 * math.sqrt(2 / n)  # two-sample KS at alpha = 0.001
    assert ks_statistic(fast.rewards, text.rewards) < crit
    for d in range(2):
        assert ks_statistic(fast.samples[:, d], text.samples[:, d]) < crit
    diff = fast.rewards.double().mean() - text.rewards.double().mean()
    se = math.sqrt((fast.rewards.double().var() + text.rewards.double().var()) / n)
    assert abs(float(diff)) < 4 * se + 1e-9
    mf, mt = fast.nfe_per_step.double().mean(0), text.nfe_per_step.double().mean(0)
    sf = ((fast.nfe_per_step.double().var(0) + text.nfe_per_step.double().var(0)) / n).sqrt()
    assert bool(((mf - mt).abs() <= 4 * sf + 1e-9).all()), (mf.tolist(), mt.tolist())


# ---------------------------------------------------------------------------------------------
# the contract: clear errors, the fast engine stays the default, short methods
# ---------------------------------------------------------------------------------------------
def test_errors(gmm):
    kw = dict(budget=40, steps=STEPS, shape=(2,), generator=torch.Generator().manual_seed(0))
    assert set(textbook.TEXTBOOK) == set(TEXTBOOK)

    class Greedy(search.Method):
        name = "greedy-textbook-test"

        def run(self, ctx, opts):
            x = ctx.noise(ctx.runs)
            return x, ctx.reward(x)

    listing = "'bon', 'sop', 'smc', 'svdd', 'code', 'rbf', 'rbf-strict', 'dps', 'rbf\\+dps'"
    with pytest.raises(ValueError, match=f"'greedy-textbook-test' has no textbook implementation.*{listing}"):
        search.run(Greedy, gmm, near_mu3, engine="textbook", **kw)
    with pytest.raises(ValueError, match="unknown engine 'numpy'.*'fast'.*'textbook'"):
        search.run("rbf", gmm, near_mu3, engine="numpy", **kw)
    with pytest.raises(ValueError, match="record=True needs engine='fast'"):
        search.run("rbf", gmm, near_mu3, engine="textbook", record=True, **kw)

    class MyRBF(type(search.get_method("rbf"))):
        name = "my-rbf"

    with pytest.raises(ValueError, match="'my-rbf' has no textbook implementation"):
        search.run(MyRBF, gmm, near_mu3, engine="textbook", **kw)


def test_fast_is_the_default():
    assert inspect.signature(search.run).parameters["engine"].default == "fast"


def test_textbook_methods_are_short():
    for name, (_, fn) in textbook.TEXTBOOK.items():
        code = inspect.getsource(inspect.getmodule(fn)).split('"""', 2)[2]  # after the docstring (the pseudo-code)
        assert len(code.strip().splitlines()) <= 60, (name, len(code.strip().splitlines()))
