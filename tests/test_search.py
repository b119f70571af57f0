"""toyflow.search: NFE ledger, RBF rollover, allocation schemes, history, determinism, errors.

The model is the exact 8-Gaussian flow (GaussianMixtureFlow), samples are 2D.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from toyflow import dynamics, interpolants, metrics, search
from toyflow.data.toy2d import eight_gaussians_gmm, eight_gaussians_means
from toyflow.rewards import FunctionReward
from toyflow.search._core import Context

STEPS = 6
MU3 = eight_gaussians_means()[3].float()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add synchronisation (milliseconds per op on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def gmm():
    return eight_gaussians_gmm()


def near_mu3(x0):
    return -((x0 - MU3) ** 2).sum(-1)


DIFF_REWARD = FunctionReward(near_mu3, name="near-mu3", differentiable=True)


def reward_for(method):
    return DIFF_REWARD if method in ("dps", "rbf+dps") else near_mu3


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


class Counter:
    """Crafted reward: the value depends only on how many times it was called (never on x)."""

    def __init__(self, fn):
        self.calls = 0
        self.fn = fn

    def __call__(self, x0):
        v = self.fn(self.calls)
        self.calls += 1
        return torch.full((x0.shape[0],), float(v))


# ---------------------------------------------------------------------------------------------
# The ledger: every method x mode x budget
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", search.MODES)
@pytest.mark.parametrize("method", search.METHODS)
def test_ledger_every_method_mode_budget(gmm, method, mode):
    lo = search.minimum_budget(method, STEPS)
    for budget in sorted({lo, lo + 7, 4 * lo + 3}):
        res = search.run(method, gmm, reward_for(method), mode=mode, budget=budget, steps=STEPS, runs=3,
                         shape=(2,), generator=gen(budget))
        assert res.nfe.dtype == torch.int64 and res.nfe_per_step.dtype == torch.int64
        assert res.nfe.shape == (3,) and res.nfe_per_step.shape == (3, STEPS)
        assert torch.equal(res.nfe, res.nfe_per_step.sum(1))
        assert bool((res.nfe <= budget).all()) and bool((res.nfe_per_step >= 0).all())
        assert res.samples.shape == (3, 2) and res.rewards.shape == (3,)
        assert torch.allclose(res.rewards, near_mu3(res.samples), atol=1e-5)
        N = budget // STEPS
        if method in ("bon", "dps", "smc"):
            assert bool((res.nfe_per_step == N).all())
        if method == "svdd":  # Uniform spreads the whole budget
            assert bool((res.nfe == budget).all()) and bool((res.nfe_per_step[:, 0] == 1).all())
        if method == "sop":
            opts = search.SoPOptions()
            M = search.sop.branch_for(budget, STEPS, opts)
            assert bool((res.nfe == search.sop.cost(STEPS, opts, M)).all())
        if method in ("rbf", "rbf+dps"):  # the official code's initial batch, the whole budget spent
            assert bool((res.nfe_per_step[:, 0] == max(1, budget // 20)).all()) and bool((res.nfe == budget).all())
            assert bool((res.nfe_per_step[:, 1:] >= 1).all())
        if method == "rbf-strict":
            assert bool((res.nfe_per_step[:, 0] == 1).all()) and bool((res.nfe_per_step[:, 1:] >= 1).all())


@pytest.mark.parametrize("method", search.METHODS)
def test_budget_too_small_names_the_minimum(gmm, method):
    lo = search.minimum_budget(method, STEPS)
    with pytest.raises(ValueError, match=rf"at least {lo} NFE"):
        search.run(method, gmm, reward_for(method), budget=lo - 1, steps=STEPS, shape=(2,), generator=gen())
    search.run(method, gmm, reward_for(method), budget=lo, steps=STEPS, shape=(2,), generator=gen())


def test_minimum_budgets_documented():
    assert search.minimum_budget("bon", 10) == 10
    assert search.minimum_budget("svdd", 10) == 10
    assert search.minimum_budget("rbf", 10) == 10
    assert search.minimum_budget("rbf-strict", 10) == 10
    assert search.minimum_budget("rbf", 10, initial_particles=5) == 14
    # the default initial batch grows with the budget: 100 steps need 104 NFE (5 initial draws + 99)
    assert search.minimum_budget("rbf", 100) == 104
    # SoP: N (s + 1) + N M ((f + 2)(K - 1 - s) + f + 1) with N = 2, s = 5, f = 1, M = 1
    assert search.minimum_budget("sop", 10) == 2 * 6 + 2 * (3 * 4 + 2)


def test_one_batched_model_call_per_tick(gmm):
    """RBF: one call for the initial draw, then one per tick holding the candidates of every active run."""

    class Logged(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.sizes = []

        def forward(self, x, t):
            self.sizes.append(x.shape[0])
            return gmm(x, t)

    # strictly one candidate per active run and tick: every evaluation is charged
    model = Logged()
    res = search.run("rbf-strict", model, near_mu3, budget=60, steps=STEPS, runs=16, shape=(2,), generator=gen(3),
                     proposals_per_tick=1)
    assert sum(model.sizes) == int(res.nfe.sum()) and int(res.discarded.sum()) == 0
    assert len(model.sizes) == 1 + int(res.nfe.max()) - 1
    assert model.sizes[0] == 16 and max(model.sizes) == 16
    # batches shrink only as runs finish: sizes are non-increasing
    assert all(a >= b for a, b in zip(model.sizes, model.sizes[1:]))
    strict_calls = len(model.sizes)

    # default: chunks of draws, at most CHUNK_MAX_ROWS x 16 rows per call
    from toyflow.search.rbf import CHUNK_MAX_ROWS

    model = Logged()
    res = search.run("rbf-strict", model, near_mu3, budget=60, steps=STEPS, runs=16, shape=(2,), generator=gen(3))
    assert sum(model.sizes) == int(res.nfe.sum()) + int(res.discarded.sum())
    assert model.sizes[0] == 16 and max(model.sizes) <= CHUNK_MAX_ROWS * 16
    assert len(model.sizes) < strict_calls
    assert bool((res.nfe <= 60).all())


def test_rbf_discard_share_trades_calls_for_discarded_draws(gmm):
    """discard_share=0: one draw per run and call, nothing discarded; larger shares make fewer,
    wider calls and discard more. The ledger adds up in every case: rows evaluated = NFE + discarded."""

    class Counted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rows = self.calls = 0

        def forward(self, x, t):
            self.rows, self.calls = self.rows + x.shape[0], self.calls + 1
            return gmm(x, t)

    kw = dict(mode="linear-sde", budget=100, steps=STEPS, runs=32, shape=(2,))
    calls, discarded = [], []
    for share in (0.0, 0.1, 0.5, 2.0):
        model = Counted()
        res = search.run("rbf", model, near_mu3, generator=gen(4), discard_share=share, **kw)
        assert model.rows == int(res.nfe.sum()) + int(res.discarded.sum())
        calls.append(model.calls)
        discarded.append(int(res.discarded.sum()) / model.rows)
    assert discarded[0] == 0
    assert discarded == sorted(discarded) and discarded[-1] > discarded[1]
    assert calls == sorted(calls, reverse=True) and calls[-1] < calls[0]
    with pytest.raises(ValueError, match="discard_share must be a finite number >= 0"):
        search.RBFOptions(discard_share=-0.1)
    with pytest.raises(ValueError, match="only applies to the adaptive width"):
        search.RBFOptions(proposals_per_tick=1, discard_share=0.1)


# ---------------------------------------------------------------------------------------------
# The transition, conversion and plain sampling
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", search.MODES)
def test_affine_coefficients_match_dynamics(gmm, mode):
    sampler = search.SamplerOptions(time_grid="exp")
    ctx = Context(gmm, near_mu3, mode=mode, sampler=sampler, budget=10, steps=5, runs=7, shape=(2,),
                  generator=gen(), device=torch.device("cpu"), dtype=torch.float64)
    sched = interpolants.VP() if mode == "vp-sde" else interpolants.Linear()
    model = interpolants.convert(gmm, interpolants.Linear(), sched)
    g_fn = dynamics.diffusion_schedule("square", 3.0, sched)
    x = torch.randn(7, 2, dtype=torch.float64, generator=gen(1))
    z = torch.randn(7, 2, dtype=torch.float64, generator=gen(2))
    for k in range(5):
        t = ctx.times[k].expand(7)
        u = model(x, t)
        assert torch.allclose(ctx.velocity_model(x, k), u, atol=1e-9)
        assert torch.allclose(ctx.x0(x, u, k), dynamics.x0_from_velocity(x, u, t, sched), atol=1e-9)
        g = g_fn(t) if mode != "linear-ode" else None
        want = dynamics.step(x, u, t, ctx.times[k + 1].expand(7), sched, g=g, noise=z)
        assert torch.allclose(ctx.step(x, u, k, z if ctx.needs_noise(k) else None), want, atol=1e-9)
        kk = torch.full((7,), k)
        assert torch.allclose(ctx.step(x, u, kk, z), want, atol=1e-9)  # per-run grid index


@pytest.mark.parametrize("mode", search.MODES)
@pytest.mark.parametrize("method", ["bon", "smc", "svdd", "code", "rbf"])
def test_minimum_budget_is_plain_sampling(gmm, method, mode):
    """With one candidate per step every method is the sampler itself (same random numbers)."""
    R = 5
    res = search.run(method, gmm, near_mu3, mode=mode, budget=STEPS, steps=STEPS, runs=R, shape=(2,),
                     generator=gen(7), dtype=torch.float64)
    g = gen(7)
    x1 = torch.randn(R, 2, generator=g, dtype=torch.float64)
    sched = interpolants.VP() if mode == "vp-sde" else interpolants.Linear()
    traj = dynamics.sample(interpolants.convert(gmm, interpolants.Linear(), sched), x1, sched, steps=STEPS,
                           sde=mode != "linear-ode", generator=g)
    assert torch.allclose(res.samples, traj.x, atol=1e-8)


def test_ode_mode_gives_candidates_no_diversity(gmm):
    """linear-ode: every candidate of a step is the same point, so SVDD's extra NFE change nothing."""
    plain = search.run("svdd", gmm, near_mu3, mode="linear-ode", budget=STEPS, steps=STEPS, runs=4, shape=(2,),
                       generator=gen(5))
    big = search.run("svdd", gmm, near_mu3, mode="linear-ode", budget=80, steps=STEPS, runs=4, shape=(2,),
                     generator=gen(5), record=True)
    assert torch.equal(plain.samples, big.samples)
    props = big.history.proposals_x0[2]
    assert torch.allclose(props, props[:, :1].expand_as(props))


def test_rbf_default_spends_the_whole_budget_with_the_official_initial_batch(gmm):
    """Default RBF = the official code: max(1, budget // 20) initial draws (25 at 500), nothing left unused."""
    for mode in search.MODES:
        for budget, n0 in ((10, 1), (50, 2), (500, 25), (1000, 50)):
            res = search.run("rbf", gmm, near_mu3, mode=mode, budget=budget, steps=STEPS, runs=4, shape=(2,),
                             generator=gen(1))
            assert res.nfe.tolist() == [budget] * 4 and res.nfe_per_step[:, 0].tolist() == [n0] * 4
    # rbf-strict, the paper's text: one initial draw; with a rising reward it stops early at every step
    res = search.run("rbf-strict", gmm, Counter(lambda i: float(i)), budget=500, steps=STEPS, runs=2, shape=(2,),
                     generator=gen())
    assert res.nfe_per_step.tolist() == [[1] * STEPS] * 2
    with pytest.raises(ValueError, match="cannot hold rbf's 5 initial draws and one draw per search step"):
        search.run("rbf", gmm, near_mu3, budget=100, steps=100, shape=(2,), generator=gen())


# ---------------------------------------------------------------------------------------------
# RBF rollover on crafted rewards
# ---------------------------------------------------------------------------------------------
B = 46  # steps = 6: one initial draw, 45 NFE over 5 search steps -> 9 each


def test_rbf_never_improving_reward_spends_every_quota(gmm):
    for reward in (Counter(lambda i: 0.0), Counter(lambda i: -float(i))):
        res = search.run("rbf-strict", gmm, reward, budget=B, steps=STEPS, runs=3, shape=(2,), generator=gen(), record=True)
        assert res.nfe_per_step.tolist() == [[1, 9, 9, 9, 9, 9]] * 3
        assert res.history.quota.tolist() == [[1, 9, 9, 9, 9, 9]] * 3
        for k in range(1, STEPS):  # the step's best is kept: exactly one accepted candidate
            assert res.history.accepted[k].sum(1).tolist() == [1, 1, 1]


def test_rbf_always_improving_reward_accepts_first_and_rolls_over(gmm):
    res = search.run("rbf-strict", gmm, Counter(lambda i: float(i)), budget=B, steps=STEPS, runs=3, shape=(2,),
                     generator=gen(), record=True)
    assert res.nfe_per_step.tolist() == [[1, 1, 1, 1, 1, 1]] * 3
    # the quota grows by the leftover at every step: 9, 9 + 8, 9 + 16, ...
    assert res.history.quota.tolist() == [[1, 9, 17, 25, 33, 41]] * 3
    for k in range(1, STEPS):
        assert res.history.accepted[k].tolist() == [[True]] * 3


def test_rbf_every_third_candidate_improves(gmm):
    # calls: 0 = initial draw, then one call per tick; value (call // 3) rises at every third tick
    res = search.run("rbf-strict", gmm, Counter(lambda i: float(i // 3)), budget=B, steps=STEPS, runs=2, shape=(2,),
                     generator=gen(), record=True, proposals_per_tick=1)
    assert res.nfe_per_step.tolist() == [[1, 3, 3, 3, 3, 3]] * 2
    assert res.history.quota.tolist() == [[1, 9, 15, 21, 27, 33]] * 2
    acc = res.history.accepted[1][0].tolist()
    assert acc == [False, False, True]


def test_rbf_spend_rest_at_last_step(gmm):
    """The default (official code): the last search step draws all that is left and keeps the best."""
    res = search.run("rbf", gmm, Counter(lambda i: float(i)), budget=B, steps=STEPS, runs=3, shape=(2,),
                     generator=gen(), initial_particles=1, record=True, proposals_per_tick=1)
    assert res.nfe_per_step.tolist() == [[1, 1, 1, 1, 1, B - 5]] * 3
    assert bool((res.nfe == B).all())
    last = res.history.accepted[STEPS - 1]
    assert last.sum(1).tolist() == [1, 1, 1] and bool(last[:, -1].all())  # the best = the last (rising reward)
    # in chunks of 4: the same ledger; 3 unread draws at each of the 4 early-accepting steps
    res = search.run("rbf", gmm, Counter(lambda i: float(i)), budget=B, steps=STEPS, runs=3, shape=(2,),
                     generator=gen(), initial_particles=1, proposals_per_tick=4)
    assert res.nfe_per_step.tolist() == [[1, 1, 1, 1, 1, B - 5]] * 3
    assert res.discarded.tolist() == [12] * 3


def test_rbf_initial_particles_keeps_the_best_draw(gmm):
    """Official-code deviation: a batch of initial noises, keep the best x0_hat reward."""
    res = search.run("rbf", gmm, near_mu3, budget=60, steps=STEPS, runs=4, shape=(2,), generator=gen(2),
                     initial_particles=8, record=True)
    assert res.nfe_per_step[:, 0].tolist() == [8] * 4
    h = res.history
    r0 = h.proposal_rewards[0]
    assert r0.shape == (4, 8)
    assert torch.equal(h.accepted[0], torch.nn.functional.one_hot(r0.argmax(1), 8).bool())
    assert torch.allclose(h.rewards[:, 0, 0], r0.max(1).values)
    # with a rising reward: 8 initial, then one candidate per step
    res = search.run("rbf-strict", gmm, Counter(lambda i: float(i)), budget=60, steps=STEPS, runs=2, shape=(2,),
                     generator=gen(), initial_particles=8)
    assert res.nfe_per_step.tolist() == [[8, 1, 1, 1, 1, 1]] * 2


def test_rbf_chunked_proposals_charge_only_what_the_algorithm_draws(gmm):
    """Chunks of 4 draws per tick: the ledger and the quotas are those of one-at-a-time drawing."""
    kw = dict(budget=B, steps=STEPS, runs=3, shape=(2,), generator=gen(), record=True, proposals_per_tick=4)
    res = search.run("rbf-strict", gmm, Counter(lambda i: 0.0), **kw)  # never improves: chunks 4 + 4 + 1 per step
    assert res.nfe_per_step.tolist() == [[1, 9, 9, 9, 9, 9]] * 3
    assert res.discarded.tolist() == [0, 0, 0]
    assert res.history.proposal_mask[1].sum(1).tolist() == [9, 9, 9]
    res = search.run("rbf-strict", gmm, Counter(lambda i: float(i)), **kw)  # the first draw of every chunk improves
    assert res.nfe_per_step.tolist() == [[1, 1, 1, 1, 1, 1]] * 3
    assert res.history.quota.tolist() == [[1, 9, 17, 25, 33, 41]] * 3
    assert res.discarded.tolist() == [3 * (STEPS - 1)] * 3  # 3 unread draws per search step
    for k in range(1, STEPS):
        assert res.history.accepted[k].tolist() == [[True]] * 3


def test_rbf_chunk_accepts_the_first_improving_draw_in_order(gmm):
    """Within a chunk the draws are read in order: the first that beats the best is taken, even if
    a later one of the same chunk is better."""

    class RowReward:  # the one search tick (2 runs x 4 draws): draw j gets [0, 1, 5, 9][j]; else 0
        calls = 0

        def __call__(self, x0):
            self.calls += 1
            if self.calls != 2:  # the initial draw and the final x0 step
                return torch.zeros(x0.shape[0])
            return torch.tensor([0.0, 1.0, 5.0, 9.0]).repeat(x0.shape[0] // 4)

    res = search.run("rbf-strict", gmm, RowReward(), budget=B, steps=2, runs=2, shape=(2,), generator=gen(),
                     proposals_per_tick=4, record=True)
    assert res.nfe_per_step.tolist() == [[1, 2]] * 2  # draws 0 and 1 charged, 1 accepted
    assert res.discarded.tolist() == [2, 2]
    assert res.history.proposal_rewards[1].tolist() == [[0.0, 1.0]] * 2
    assert res.history.accepted[1].tolist() == [[False, True]] * 2


@pytest.mark.slow
def test_rbf_chunked_and_one_at_a_time_agree_in_distribution(gmm):
    """Same algorithm, other random stream: mean reward and mean NFE agree within 4 standard errors
    (rbf-strict, whose NFE varies; the default spends exactly its budget)."""
    kw = dict(mode="vp-sde", budget=40, steps=STEPS, runs=3000, shape=(2,))
    one = search.run("rbf-strict", gmm, near_mu3, generator=gen(5), proposals_per_tick=1, **kw)
    many = search.run("rbf-strict", gmm, near_mu3, generator=gen(6), proposals_per_tick=8, **kw)
    assert int(one.discarded.sum()) == 0 and int(many.discarded.sum()) > 0
    for a, b in ((one.rewards, many.rewards), (one.nfe.double(), many.nfe.double())):
        se = ((a.var() + b.var()) / a.shape[0]).sqrt()
        assert abs(float(a.mean() - b.mean())) < 4 * float(se), (float(a.mean()), float(b.mean()), float(se))


def test_rbf_linear_ode_record_does_not_change_the_result(gmm):
    """linear-ode: coinciding candidates are evaluated once, recorded or not; the history holds every charged copy."""
    kw = dict(mode="linear-ode", budget=50, steps=STEPS, runs=8, shape=(2,))
    fast = search.run("rbf", gmm, near_mu3, generator=gen(7), initial_particles=4, **kw)
    slow = search.run("rbf", gmm, near_mu3, generator=gen(7), initial_particles=4, record=True, **kw)
    assert torch.equal(fast.samples, slow.samples) and torch.equal(fast.rewards, slow.rewards)
    assert torch.equal(fast.nfe_per_step, slow.nfe_per_step)
    assert torch.equal(slow.history.nfe, slow.nfe_per_step)
    drawn = torch.stack([m.sum(1) for m in slow.history.proposal_mask[1:STEPS]], 1)  # (R, K - 1) recorded draws
    assert torch.equal(drawn.long(), slow.nfe_per_step[:, 1:])


# ---------------------------------------------------------------------------------------------
# Allocation schemes
# ---------------------------------------------------------------------------------------------
class FrontLoaded(search.AllocationScheme):
    """Half of the search budget at the first search step, the rest spread evenly."""

    def quota(self, step, steps, budget_left, spent):
        total = budget_left + spent
        if step == 0:
            return total // 2
        return (total - total // 2) // (steps - 1)


@pytest.mark.parametrize("scheme", [search.Uniform(), search.LinearDecay(0.2), search.Rollover(),
                                    search.Rollover(search.LinearDecay())])
def test_numpy_fast_path_of_allocations_equals_torch(scheme):
    """RBF's numpy quotas (for_total_numpy) and clamp_quota on numpy equal the torch path exactly."""
    import numpy as np

    from toyflow.search.budget import clamp_quota

    g = torch.Generator().manual_seed(0)
    steps, total = 9, 499
    step = torch.randint(0, steps, (200,), generator=g)
    spent = torch.randint(0, total, (200,), generator=g)
    q_t = scheme.for_total(steps, total)(step, spent)
    q_np = scheme.for_total_numpy(steps, total)(step.numpy(), spent.numpy())
    assert q_np.tolist() == q_t.tolist()
    left = total - spent
    assert clamp_quota(np.asarray(q_np), step.numpy(), steps, left.numpy()).tolist() == \
        clamp_quota(q_t.clone(), step, steps, left).tolist()


def test_custom_allocation_with_svdd_and_rbf(gmm):
    kw = dict(budget=B, steps=STEPS, runs=3, shape=(2,), generator=gen())
    res = search.run("svdd", gmm, near_mu3, allocation=FrontLoaded(), **kw)
    assert res.nfe_per_step.tolist() == [[1, 22, 5, 5, 5, 5]] * 3
    res = search.run("rbf-strict", gmm, Counter(lambda i: 0.0), allocation=FrontLoaded(), rollover=False, **kw)
    assert res.nfe_per_step.tolist() == [[1, 22, 5, 5, 5, 5]] * 3
    res = search.run("rbf-strict", gmm, Counter(lambda i: 0.0), allocation=search.Rollover(FrontLoaded()), **kw)
    assert res.nfe_per_step.tolist() == [[1, 22, 5, 5, 5, 5]] * 3
    # no rollover: leftovers are lost; with Rollover(FrontLoaded) they carry over
    # (rewards that count calls: one draw per call, proposals_per_tick=1)
    res = search.run("rbf-strict", gmm, Counter(lambda i: float(i // 2)), allocation=FrontLoaded(), rollover=False,
                     record=True, proposals_per_tick=1, **kw)
    assert res.nfe_per_step.tolist() == [[1, 2, 2, 2, 2, 2]] * 3
    assert res.history.quota.tolist() == [[1, 22, 5, 5, 5, 5]] * 3
    res = search.run("rbf-strict", gmm, Counter(lambda i: float(i // 2)), allocation=search.Rollover(FrontLoaded()),
                     record=True, proposals_per_tick=1, **kw)
    assert res.history.quota.tolist() == [[1, 22, 25, 28, 31, 34]] * 3


def test_builtin_allocations():
    total = torch.tensor([45, 100])
    plan = search.Uniform().plan(5, total)
    assert plan.sum(1).tolist() == [45, 100] and plan[0].tolist() == [9] * 5
    dec = search.LinearDecay().plan(5, total)
    assert dec.sum(1).tolist() == [45, 100]
    assert all(a >= b for a, b in zip(dec[1].tolist(), dec[1, 1:].tolist()))
    assert dec[1, 0] > 3 * dec[1, -1]
    ro = search.Rollover(search.Uniform())
    spent = torch.tensor([3, 20])
    assert ro.quota(1, 5, total - spent, spent).tolist() == [18 - 3, 40 - 20]
    # vectorized quotas agree with the per-step ones
    for scheme in (search.Uniform(), search.LinearDecay(0.3), ro, FrontLoaded(), search.Rollover(FrontLoaded())):
        steps_t = torch.tensor([0, 3])
        got = scheme.quotas(steps_t, 5, total - spent, spent)
        want = [int(torch.as_tensor(scheme.quota(int(s), 5, (total - spent)[i:i + 1], spent[i:i + 1])).reshape(-1)[0])
                for i, s in enumerate(steps_t.tolist())]
        assert got.tolist() == want
        f = scheme.for_total(5, 100)
        assert f(torch.tensor([2]), torch.tensor([20])).tolist() == scheme.quotas(
            torch.tensor([2]), 5, torch.tensor([80]), torch.tensor([20])).tolist()


def test_linear_decay_with_svdd(gmm):
    res = search.run("svdd", gmm, near_mu3, budget=101, steps=STEPS, runs=2, shape=(2,), generator=gen(),
                     allocation=search.LinearDecay())
    per = res.nfe_per_step[0, 1:].tolist()
    assert sum(per) == 100 and per == sorted(per, reverse=True) and per[0] > per[-1]


def test_ledger_refuses_overspending():
    led = search.Ledger(runs=2, steps=3, budget=5)
    led.charge(0, per_run=4)
    led.charge(1, torch.tensor([0]))
    with pytest.raises(search.BudgetExceeded):
        led.charge(2, torch.tensor([0]))
    assert led.per_step[1].tolist() == [4, 0, 0]


# ---------------------------------------------------------------------------------------------
# History format
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", search.METHODS)
def test_history_format(gmm, method):
    R, K = 3, STEPS
    budget = max(40, search.minimum_budget(method, K))
    res = search.run(method, gmm, reward_for(method), mode="vp-sde", budget=budget, steps=K, runs=R, shape=(2,),
                     generator=gen(4), record=True)
    h = res.history
    N = h.states.shape[2]
    assert h.times.shape == (K + 1,) and h.states.shape == (R, K + 1, N, 2) and h.x0.shape == h.states.shape
    assert h.rewards.shape == (R, K + 1, N) and h.parents.shape == (R, K, N)
    assert torch.equal(h.nfe, res.nfe_per_step)
    assert len(h.proposals_x0) == len(h.proposal_rewards) == len(h.proposal_mask) == len(h.accepted) == K + 1
    assert torch.allclose(h.states[torch.arange(R), K, h.selected], res.samples)
    assert torch.allclose(h.rewards[torch.arange(R), K, h.selected], res.rewards)
    assert bool(torch.isfinite(h.states).all())
    for k in range(K + 1):
        px, pr, pm, pa = h.proposals_x0[k], h.proposal_rewards[k], h.proposal_mask[k], h.accepted[k]
        assert px.shape[:2] == pr.shape == pm.shape == pa.shape and px.shape[0] == R
        assert bool(torch.isfinite(pr[pm]).all()) and bool(torch.isnan(pr[~pm]).all())
        assert bool((pa <= pm).all()) and bool(pa.any(1).all())  # something held at every time
        if k == K:
            continue
        if method in ("svdd", "code", "rbf", "rbf+dps"):
            assert pm.sum(1).tolist() == res.nfe_per_step[:, k].tolist()  # every evaluation is a candidate
            assert pa.sum(1).tolist() == [1] * R
            assert torch.allclose(h.rewards[:, k, 0], pr[pa])
        if method in ("bon", "dps", "smc"):
            assert pm.sum(1).tolist() == res.nfe_per_step[:, k].tolist()
    if method in ("svdd", "code", "rbf", "rbf+dps"):
        assert h.quota is not None and bool((h.nfe <= h.quota).all())
    if method == "smc":
        assert h.ess is not None and bool(((h.ess > 0) & (h.ess <= N + 1e-4)).all())
    else:
        assert h.ess is None


def test_history_proposal_diversity(gmm):
    R, K = 4, STEPS
    res = search.run("svdd", gmm, near_mu3, mode="linear-sde", budget=40, steps=K, runs=R, shape=(2,),
                     generator=gen(5), record=True)
    h = res.history
    div = h.proposal_diversity()
    assert div.shape == (K + 1,) and div.dtype == torch.float64
    assert math.isnan(div[0]) and math.isnan(div[K])  # SVDD: one initial draw, one final sample per run
    for k in range(1, K):
        want = sum(metrics.diversity(h.proposals_x0[k][i][h.proposal_mask[k][i]]) for i in range(R)) / R
        assert float(div[k]) == pytest.approx(want, rel=1e-12)
    # a run with fewer than 2 candidates at a step is left out of that step's mean
    mask = [m.clone() for m in h.proposal_mask]
    mask[2][0] = False
    mask[2][0, 0] = True
    part = dataclasses.replace(h, proposal_mask=mask).proposal_diversity()
    want = sum(metrics.diversity(h.proposals_x0[2][i][h.proposal_mask[2][i]]) for i in range(1, R)) / (R - 1)
    assert float(part[2]) == pytest.approx(want, rel=1e-12) and torch.equal(part[3], div[3])
    # image-shaped candidates are flattened per sample; padding (mask False) is ignored
    x = torch.randn(2, 3, 1, 2, 2, generator=gen(1), dtype=torch.float64)
    m = torch.tensor([[True, True, True], [True, False, True]])
    img = dataclasses.replace(h, proposals_x0=[x], proposal_mask=[m]).proposal_diversity()
    want = (metrics.diversity(x[0].flatten(1)) + metrics.diversity(x[1, [0, 2]].flatten(1))) / 2
    assert float(img[0]) == pytest.approx(want, rel=1e-12)


def test_history_trajectory(gmm):
    R, K = 3, STEPS
    kw = dict(mode="linear-sde", budget=40, steps=K, runs=R, shape=(2,), record=True)
    svdd = search.run("svdd", gmm, near_mu3, generator=gen(6), **kw)
    h = svdd.history
    tr = h.trajectory()  # single path per run: one path per run
    assert isinstance(tr, dynamics.Trajectory)
    assert tr.xs.shape == (K + 1, R, 2) and torch.equal(tr.xs, h.states[:, :, 0].transpose(0, 1))
    assert torch.equal(tr.x, svdd.samples) and torch.equal(tr.times, h.times)
    assert tr.x0s.shape == (K, R, 2) and torch.equal(tr.x0s, h.x0[:, :K, 0].transpose(0, 1))
    assert tr.nfe == int(svdd.nfe.sum())

    bon = search.run("bon", gmm, near_mu3, generator=gen(7), **kw)
    h = bon.history
    N = h.states.shape[2]
    tr = h.trajectory(run=1)  # the N particles of run 1
    assert tr.xs.shape == (K + 1, N, 2) and torch.equal(tr.xs, h.states[1]) and torch.equal(tr.x, h.states[1, K])
    assert torch.equal(tr.x0s, h.x0[1, :K]) and tr.nfe == int(bon.nfe[1])
    assert torch.equal(svdd.history.trajectory(2).xs, svdd.history.states[2])  # (K + 1, 1, 2)
    with pytest.raises(ValueError, match=f"N = {N}.*run=r"):
        h.trajectory()
    for bad in (R, -1, True, 0.5):
        with pytest.raises(ValueError, match=rf"run must be an integer in \[0, {R}\)"):
            h.trajectory(bad)


def test_smc_resamples_when_ess_low(gmm):
    res = search.run("smc", gmm, near_mu3, budget=60, steps=STEPS, runs=2, shape=(2,), generator=gen(),
                     lam=0.1, record=True)
    h = res.history
    assert bool((h.ess < 0.5 * 10).any())
    moved = (h.parents != torch.arange(10)).any()
    assert bool(moved)


# ---------------------------------------------------------------------------------------------
# Determinism, improvement, errors
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", search.METHODS)
def test_same_seed_same_result(gmm, method):
    kw = dict(mode="vp-sde", budget=50, steps=STEPS, runs=4, shape=(2,), record=True)
    a = search.run(method, gmm, reward_for(method), generator=gen(11), **kw)
    b = search.run(method, gmm, reward_for(method), generator=gen(11), **kw)
    c = search.run(method, gmm, reward_for(method), generator=gen(12), **kw)
    for f in ("samples", "rewards", "nfe", "nfe_per_step"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    for f in ("states", "x0", "parents", "selected", "nfe"):
        assert torch.equal(getattr(a.history, f), getattr(b.history, f))
    assert torch.equal(a.history.rewards.nan_to_num(7.0), b.history.rewards.nan_to_num(7.0))
    for la, lb in zip(a.history.proposal_rewards, b.history.proposal_rewards):
        assert torch.equal(la.nan_to_num(7.0), lb.nan_to_num(7.0))
    assert not torch.equal(a.samples, c.samples)
    d = search.run(method, gmm, reward_for(method), generator=gen(11), **{**kw, "record": False})
    assert torch.equal(a.samples, d.samples) and torch.equal(a.nfe_per_step, d.nfe_per_step) and d.history is None


@pytest.mark.parametrize("method", search.METHODS)
def test_search_improves_reward_over_plain_sampling(gmm, method):
    R = 32
    plain = search.run("bon", gmm, near_mu3, mode="vp-sde", budget=10, steps=10, runs=R, shape=(2,), generator=gen(1))
    res = search.run(method, gmm, reward_for(method), mode="vp-sde", budget=200, steps=10, runs=R, shape=(2,),
                     generator=gen(2))
    assert float(plain.rewards.mean()) < -4.0
    assert float(res.rewards.mean()) > float(plain.rewards.mean()) + 3.0


def test_dps_rejects_non_differentiable_reward(gmm):
    flat = FunctionReward(near_mu3, name="flat", differentiable=False)
    for method in ("dps", "rbf+dps"):
        with pytest.raises(ValueError, match="differentiable"):
            search.run(method, gmm, flat, budget=20, steps=STEPS, shape=(2,), generator=gen())
        with pytest.raises(ValueError, match="differentiable"):
            search.run(method, gmm, near_mu3, budget=20, steps=STEPS, shape=(2,), generator=gen())
    detached = FunctionReward(lambda x: near_mu3(x).detach(), name="detached", differentiable=True)
    with pytest.raises(ValueError, match="autograd"):
        search.run("dps", gmm, detached, budget=20, steps=STEPS, shape=(2,), generator=gen())


def test_unknown_method_mode_and_options(gmm):
    kw = dict(budget=20, steps=STEPS, shape=(2,), generator=gen())
    with pytest.raises(ValueError, match="'rbf'"):
        search.run("beam", gmm, near_mu3, **kw)
    with pytest.raises(ValueError, match="'vp-sde'"):
        search.run("rbf", gmm, near_mu3, mode="vp-ode", **kw)
    with pytest.raises(TypeError, match="initial_particles") as e:
        search.run("rbf", gmm, near_mu3, inital_particles=3, **kw)
    assert "inital_particles" in str(e.value) and "spend_rest_at_last_step" in str(e.value)
    with pytest.raises(TypeError, match="lam"):
        search.run("svdd", gmm, near_mu3, lam=1.0, **kw)  # SMC's option, not SVDD's
    with pytest.raises(ValueError):
        search.run("smc", gmm, near_mu3, ess_threshold=2.0, **kw)
    with pytest.raises(TypeError, match="AllocationScheme"):
        search.run("svdd", gmm, near_mu3, allocation="uniform", **kw)
    with pytest.raises(ValueError, match="time_grid"):
        search.run("bon", gmm, near_mu3, time_grid="cosine", **kw)
    res = search.run("bon", gmm, near_mu3, eta=1.0, time_grid="exp", diffusion="sigma", **kw)
    assert res.sampler == search.SamplerOptions(diffusion="sigma", eta=1.0, time_grid="exp")


def test_bad_reward_and_model_outputs(gmm):
    kw = dict(budget=20, steps=STEPS, runs=3, shape=(2,), generator=gen())
    with pytest.raises(ValueError, match="NaN or inf"):
        search.run("rbf", gmm, lambda x: torch.full((x.shape[0],), float("nan")), **kw)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        search.run("svdd", gmm, lambda x: -(x**2), **kw)
    with pytest.raises(TypeError, match="tensor"):
        search.run("bon", gmm, lambda x: 1.0, **kw)
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        search.run("smc", lambda x, t: x * float("nan"), near_mu3, **kw)
    with pytest.raises(ValueError, match="shape"):
        search.run("rbf", lambda x, t: x[:, :1], near_mu3, **kw)
    with pytest.raises(ValueError, match="shape"):
        search.run("bon", gmm, near_mu3, budget=20, steps=STEPS, shape=(3,), generator=gen())
    with pytest.raises(ValueError, match="budget"):
        search.run("bon", gmm, near_mu3, budget=0, steps=STEPS, shape=(2,))


def test_generator_none_uses_global_rng(gmm):
    torch.manual_seed(3)
    a = search.run("rbf", gmm, near_mu3, budget=30, steps=STEPS, runs=2, shape=(2,))
    torch.manual_seed(3)
    b = search.run("rbf", gmm, near_mu3, budget=30, steps=STEPS, runs=2, shape=(2,))
    assert torch.equal(a.samples, b.samples) and a.wall_time > 0 and a.method == "rbf" and a.mode == "vp-sde"


@pytest.mark.slow
def test_sde_search_reaches_the_optimum_and_ode_does_not(gmm):
    """The paper's point on a toy task, at 200 NFE: particle search needs stochastic generation.
    In vp-sde, SVDD / SMC / SoP put almost every run at the optimum (reward ~ 0); RBF in vp-sde
    beats RBF in linear-ode by a wide margin."""
    R = 512
    kw = dict(budget=200, steps=10, runs=R, shape=(2,))
    for method in ("svdd", "smc", "sop"):
        res = search.run(method, gmm, near_mu3, mode="vp-sde", generator=gen(1), **kw)
        assert float((res.rewards > -0.1).float().mean()) > 0.9, method
    ode = search.run("rbf", gmm, near_mu3, mode="linear-ode", generator=gen(1), **kw)
    vp = search.run("rbf", gmm, near_mu3, mode="vp-sde", generator=gen(1), **kw)
    assert float(vp.rewards.mean()) > float(ode.rewards.mean()) + 4.0


@pytest.mark.parametrize("method", search.METHODS)
def test_image_shaped_samples(method):
    """Samples of shape (1, 4, 4): every method keeps the event shape (models and rewards see (B, 1, 4, 4))."""
    target = torch.linspace(-1, 1, 16).view(1, 4, 4)

    def model(x, t):
        assert x.shape[1:] == (1, 4, 4) and t.shape == (x.shape[0],)
        return 0.5 * (x - target) - x

    rew = FunctionReward(lambda x: -((x - target) ** 2).flatten(1).sum(1), name="img", differentiable=True)
    budget = max(30, search.minimum_budget(method, 4))
    res = search.run(method, model, rew, budget=budget, steps=4, runs=3, shape=(1, 4, 4), generator=gen(), record=True)
    assert res.samples.shape == (3, 1, 4, 4) and res.history.states.shape[-3:] == (1, 4, 4)
    assert bool((res.nfe <= budget).all()) and bool(torch.isfinite(res.samples).all())


def test_code_blocks(gmm):
    kw = dict(budget=101, steps=STEPS, runs=3, shape=(2,))
    svdd = search.run("svdd", gmm, near_mu3, generator=gen(8), **kw)
    code1 = search.run("code", gmm, near_mu3, generator=gen(8), block=1, **kw)
    assert torch.equal(svdd.samples, code1.samples) and torch.equal(svdd.nfe_per_step, code1.nfe_per_step)
    code = search.run("code", gmm, near_mu3, generator=gen(8), block=2, record=True, **kw)
    per = code.nfe_per_step[0].tolist()  # search steps 1-2, 3-4 and 5 form the blocks
    assert per[0] == 1 and per[1] == per[2] and per[3] == per[4] and per == [1, 20, 20, 20, 20, 20]
    acc = code.history.accepted
    # the chosen path is accepted at both times of its block: the same candidate index
    assert torch.equal(acc[1].float().argmax(1), acc[2].float().argmax(1))


@pytest.mark.parametrize("mode", ["linear-ode", "linear-sde", "vp-sde"])
def test_coefficient_table_is_dynamics_on_each_basis_input(gmm, mode):
    """The engine's affine coefficients (one dynamics call on stacked basis inputs) are exactly what
    dynamics.step / x0_from_velocity give for x = 1, u = 1, z = 1 one at a time, and the transition
    built from them reproduces dynamics.step on random particles."""
    from toyflow.search._core import CoefColumn as C

    f64 = dict(dtype=torch.float64)
    ctx = Context(gmm, near_mu3, mode=mode, sampler=search.SamplerOptions(), budget=10, steps=6, runs=1, shape=(2,),
                  generator=None, device="cpu", **f64)
    t64 = dynamics.time_grid("uniform", 6, **f64, schedule=ctx.schedule)
    t, tn = t64[:-1], t64[1:]
    g = None
    if ctx.sde:
        g = dynamics.diffusion_schedule(ctx.sampler.diffusion, float(ctx.sampler.eta), ctx.schedule)(t)
    one, zero = torch.ones(6, 1, **f64), torch.zeros(6, 1, **f64)
    assert torch.equal(ctx.coef[:, C.A], dynamics.step(one, zero, t, tn, ctx.schedule, g=g, noise=zero)[:, 0])
    assert torch.equal(ctx.coef[:, C.B], dynamics.step(zero, one, t, tn, ctx.schedule, g=g, noise=zero)[:, 0])
    c = dynamics.step(zero, zero, t, tn, ctx.schedule, g=g, noise=one)[:, 0] if g is not None else torch.zeros(6, **f64)
    assert torch.equal(ctx.coef[:, C.C], c)
    assert torch.equal(ctx.coef[:, C.P], dynamics.x0_from_velocity(one, zero, t, ctx.schedule)[:, 0])
    assert torch.equal(ctx.coef[:, C.Q], dynamics.x0_from_velocity(zero, one, t, ctx.schedule)[:, 0])
    assert ctx.stochastic == [ctx.sde] * 5 + [False]  # the last step (to t = 0) is the noiseless x0_hat step
    gen = torch.Generator().manual_seed(0)
    x, u, z = (torch.randn(64, 2, generator=gen, **f64) for _ in range(3))
    for k in range(6):
        tk, tk1 = t[k].expand(64), tn[k].expand(64)
        ref = dynamics.step(x, u, tk, tk1, ctx.schedule, g=None if g is None else g[k].expand(64), noise=z)
        torch.testing.assert_close(ctx.step(x, u, k, z if ctx.needs_noise(k) else None), ref, rtol=1e-12, atol=1e-12)
