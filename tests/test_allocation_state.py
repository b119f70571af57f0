"""State-aware allocation: AllocationScheme.quota(state) with a frozen search.AllocationState,
(R,) quotas honoured run by run, Rollover of a state-reading scheme, and RBF's explicit rollover."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from toyflow import dynamics, search
from toyflow.data.toy2d import eight_gaussians_gmm

STEPS = 6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def gmm():
    return eight_gaussians_gmm()


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


class Calls:
    """Crafted reward: the value depends only on how many times it was called (never on x)."""

    def __init__(self, fn):
        self.calls, self.fn = 0, fn

    def __call__(self, x0):
        v = self.fn(self.calls)
        self.calls += 1
        return torch.full((x0.shape[0],), float(v))


class Recording(search.AllocationScheme):
    """A fixed quota per step, keeping every state it was shown."""

    def __init__(self, q=3):
        self.q, self.states = q, []

    def quota(self, state):
        self.states.append(state)
        return self.q


def near(x0):
    return -((x0 - 1.0) ** 2).sum(-1)


def test_svdd_shows_the_state_of_every_search_step(gmm):
    scheme = Recording(4)
    res = search.run("svdd", gmm, near, budget=30, steps=STEPS, runs=3, shape=(2,), generator=gen(), allocation=scheme,
                     mode="linear-sde")
    assert res.nfe_per_step.tolist() == [[1, 4, 4, 4, 4, 4]] * 3
    times = dynamics.time_grid("uniform", STEPS)
    best = torch.full((3,), -float("inf"))
    for j, st in enumerate(scheme.states):
        assert st.step.tolist() == [j] * 3 and st.steps == STEPS - 1
        torch.testing.assert_close(st.t, times[j + 1].expand(3))
        assert st.spent.tolist() == [4 * j] * 3 and st.total.tolist() == [29] * 3
        assert st.drawn.tolist() == ([1] if j == 0 else [4]) * 3 and st.granted.tolist() == st.drawn.tolist()
        assert bool((st.best_reward >= best).all()) and (j > 0 or not bool(st.accepted.any()))
        best = st.best_reward
    with pytest.raises(dataclasses.FrozenInstanceError):
        scheme.states[0].step = None


def test_quotas_are_honoured_run_by_run(gmm):
    class PerRun(search.AllocationScheme):
        def quota(self, state):
            return 1 + torch.arange(state.spent.shape[0])  # run r gets r + 1 per step

    for method in ("svdd", "code"):
        res = search.run(method, gmm, near, budget=40, steps=STEPS, runs=3, shape=(2,), generator=gen(),
                         allocation=PerRun(), **({"block": 1} if method == "code" else {}))
        assert res.nfe_per_step[:, 1:-1].tolist() == [[1] * 4, [2] * 4, [3] * 4]
    res = search.run("rbf-strict", gmm, Calls(lambda i: 0.0), budget=40, steps=STEPS, runs=3, shape=(2,),
                     generator=gen(), allocation=PerRun(), rollover=False, proposals_per_tick=1)
    assert res.nfe_per_step[:, 1:].tolist() == [[1] * 5, [2] * 5, [3] * 5]  # never improves: every quota spent


def test_rbf_shows_draws_and_acceptances(gmm):
    rising, flat = Recording(3), Recording(3)
    kw = dict(budget=60, steps=STEPS, runs=2, shape=(2,), generator=gen(), proposals_per_tick=1, rollover=False)
    search.run("rbf-strict", gmm, Calls(float), allocation=rising, **kw)  # every draw beats the best: accepted at once
    search.run("rbf-strict", gmm, Calls(lambda i: 0.0), allocation=flat, **kw)  # never improves
    assert [s.accepted.tolist() for s in rising.states] == [[False, False]] + [[True, True]] * 4
    assert [s.drawn.tolist() for s in rising.states] == [[1, 1]] + [[1, 1]] * 4
    assert [s.accepted.tolist() for s in flat.states] == [[False, False]] * 5
    assert [s.drawn.tolist() for s in flat.states] == [[1, 1]] + [[3, 3]] * 4
    assert [s.best_reward.tolist() for s in rising.states] == [[float(j)] * 2 for j in range(5)]  # call j's reward


def test_rollover_of_a_state_scheme_hands_on_the_leftover(gmm):
    kw = dict(budget=60, steps=STEPS, runs=2, shape=(2,), generator=gen(), proposals_per_tick=1, record=True)
    res = search.run("rbf-strict", gmm, Calls(float), allocation=search.Rollover(Recording(3)), **kw)
    assert res.history.quota.tolist() == [[1, 3, 5, 7, 9, 11]] * 2  # each step drew 1 of its quota
    res = search.run("rbf-strict", gmm, Calls(float), allocation=Recording(3), rollover=False, **kw)
    assert res.history.quota.tolist() == [[1, 3, 3, 3, 3, 3]] * 2


def test_a_plain_scheme_given_to_rbf_needs_the_rollover_explicitly(gmm):
    kw = dict(budget=60, steps=STEPS, runs=2, shape=(2,))
    with pytest.raises(ValueError, match=r"Rollover\(Uniform\(\)\).*rollover=False"):
        search.run("rbf", gmm, near, allocation=search.Uniform(), **kw)
    a = search.run("rbf", gmm, near, allocation=search.LinearDecay(), rollover=True, generator=gen(1), **kw)
    b = search.run("rbf", gmm, near, allocation=search.Rollover(search.LinearDecay()), generator=gen(1), **kw)
    assert torch.equal(a.samples, b.samples) and repr(a.options.allocation) == "Rollover(LinearDecay(end=0))"
    with pytest.raises(ValueError, match="rollover=False"):
        search.RBFOptions(allocation=search.Rollover(), rollover=False)


def test_builtin_schemes_take_a_state_too():
    R, steps = 3, 5
    spent = torch.tensor([0, 7, 30])
    st = search.AllocationState(step=torch.tensor([0, 2, 4]), steps=steps, t=torch.zeros(R), budget_left=100 - spent,
                                spent=spent, best_reward=torch.zeros(R), drawn=torch.ones(R, dtype=torch.int64),
                                accepted=torch.zeros(R, dtype=torch.bool), granted=torch.ones(R, dtype=torch.int64))
    for scheme in (search.Uniform(), search.LinearDecay(0.3), search.Rollover(), search.Rollover(search.LinearDecay())):
        assert not scheme.reads_state
        assert scheme.quota(st).tolist() == scheme.quotas(st.step, steps, st.budget_left, st.spent).tolist()
        assert scheme.quota_of(st).tolist() == scheme.quota(st).tolist()


def test_the_reward_adaptive_example_spends_the_budget(gmm):
    path = Path(__file__).resolve().parents[1] / "examples" / "stall_boost_allocation.py"
    spec = importlib.util.spec_from_file_location("stall_boost_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
        for method, allocation in (("svdd", mod.StallBoost()), ("rbf", search.Rollover(mod.StallBoost()))):
            res = search.run(method, gmm, near, budget=80, steps=STEPS, runs=4, shape=(2,), generator=gen(),
                             allocation=allocation)
            assert bool((res.nfe == 80).all())
    finally:
        del sys.modules[spec.name]
