# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Prototype your own budget allocation
#
# SVDD, CoDe and RBF ask an **allocation scheme** how many proposals (NFE) each search step may
# use. toyflow ships `Uniform` (the paper's), `LinearDecay` and `Rollover` (RBF: a base scheme
# plus everything earlier steps left unused). A new scheme is a small subclass of
# `toyflow.search.AllocationScheme` with one method:
#
# ```python
# def quota(self, step, steps, budget_left, spent) -> int or (R,) tensor   # counters only
# def quota(self, state) -> int or (R,) tensor                             # the search state
# ```
#
# `step` runs over the *search steps* 0 … steps − 1, `budget_left` and `spent` are (R,) tensors
# per run (their sum is the run's whole search budget). The second form receives a frozen
# `search.AllocationState` with, per run, also the grid time `t`, the best reward so far, and
# what the previous step drew and whether it improved: a scheme can react to the search.
# Whatever you return is clamped so that every later step keeps at least one NFE: no run can
# exceed its budget.
#
# This notebook is the one place where we write code that could live in the library: the scheme
# is the experiment.

# %%
FULL = False  # True: longer, better settings

# %%
# %matplotlib inline
# %config InlineBackend.figure_format = 'png'
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets: plain progress bars
import matplotlib.pyplot as plt
import numpy as np
import torch

plt.rcParams["figure.dpi"] = 80  # also the resolution of toyflow.viz figures shown inline
torch.set_num_threads(1)  # tiny 2D batches: one thread is fastest, and robust on a busy machine

from toyflow import benchmark, metrics, rewards, search, viz
from toyflow.demo import format_table
from toyflow.search import AllocationScheme, Rollover, Uniform

RUNS = 128 if FULL else 64


# %% [markdown]
# ## A scheme: spend most in the middle
#
# On the toy tasks the mode of a sample is decided in the middle of the trajectory: early
# $\hat x_0$ are all near the data mean (proposals look alike) and late proposals can only
# polish. `MiddleHeavy` gives step $s$ a share proportional to $\sin(\pi (s + \tfrac12)/S)^p$.

# %%
class MiddleHeavy(AllocationScheme):
    """Share of search step s proportional to sin(pi (s + 1/2) / steps) ** power."""

    def __init__(self, power: float = 2.0):
        self.power = power

    def quota(self, step, steps, budget_left, spent):
        w = torch.sin(torch.pi * (torch.arange(steps) + 0.5) / steps) ** self.power
        total = budget_left + spent  # (R,) each run's search budget
        return torch.floor(total * w[step] / w.sum()).long()

    def __repr__(self):
        return f"MiddleHeavy(power={self.power:g})"


total = torch.tensor([199])  # budget 200 minus the initial draw at t = 1
print("Uniform      plan:", Uniform().plan(9, total)[0].tolist())
print("MiddleHeavy  plan:", MiddleHeavy().plan(9, total)[0].tolist())

# %% [markdown]
# `plan(steps, total)` shows what each search step would get if it spent exactly its quota.
# The scheme plugs into SVDD directly, and into RBF wrapped in `Rollover` (so that what RBF
# leaves unused still rolls over).

# %% [markdown]
# ## Compare it with the built-in schemes
#
# Four variants on the rare-mode task (exact flow, Linear SDE), at three budgets: SVDD with
# `Uniform` and with `MiddleHeavy`; RBF with `Rollover(Uniform())` (the paper) and with
# `Rollover(MiddleHeavy())`. `benchmark.run_cell` gives one tidy row per setting; we rename the
# method column so the table and the plot tell the variants apart.

# %%
task = benchmark.make_task("rare-mode", "oracle")
variants = {
    "svdd": ("svdd", {"allocation": Uniform()}),
    "SVDD, MiddleHeavy": ("svdd", {"allocation": MiddleHeavy()}),
    "rbf": ("rbf", {"allocation": Rollover(Uniform())}),
    "RBF, MiddleHeavy": ("rbf", {"allocation": Rollover(MiddleHeavy())}),
}
budgets = (25, 50, 100, 200, 400) if FULL else (30, 60, 120)
rows = []
for name, (method, options) in variants.items():
    for b in budgets:
        row = benchmark.run_cell(task, method, "linear-sde", b, steps=10, runs=RUNS, options=options)
        rows.append({**row, "method": name})
print(format_table(rows, title=f"rare-mode task, exact flow, Linear SDE, {RUNS} runs"))

# %% [markdown]
# Read the table per budget: the reward column says whether moving proposals to the middle
# steps helps, the realism column whether it costs sample quality, and the NFE column what each
# variant spent (RBF, run as the official code does, spends all of it: whatever the quotas leave
# is drawn at the last search step).
#
# On this task `MiddleHeavy` does not help: SVDD does about as well as with `Uniform` (slightly
# worse, partly because it spends a few NFE less, see below), and RBF does clearly worse: RBF
# already moves unused budget to later steps by rolling it over, and a single proposal at the
# first steps removes its early exploration. Note also that `MiddleHeavy` rounds its quotas
# down and leaves a few NFE unused (27 of 30); `StaticAllocation` distributes the remainder
# (exercise 4). A negative result is still a result: exercises 1 and 2 look for better schemes.

# %%
fig = viz.scaling_curves(rows, title="rare-mode task: allocation schemes, Linear SDE")
fig.set_size_inches(7.5, 4.2)
fig

# %% [markdown]
# ## Where the budget goes
#
# One recorded search per variant at the middle budget. Left: the built-in schemes; right: the
# same methods with `MiddleHeavy`.

# %%
b = budgets[len(budgets) // 2]
recorded = {
    name: search.run(method, task.model, task.reward, mode="linear-sde", budget=b, steps=10, runs=RUNS, shape=(2,),
                     generator=torch.Generator().manual_seed(0), record=True, **options)
    for name, (method, options) in variants.items()
}
fig, axs = plt.subplots(1, 2, figsize=(14, 4.2), sharey=True, layout="constrained")
viz.budget_allocation({"svdd": recorded["svdd"], "rbf": recorded["rbf"]}, ax=axs[0],
                      title=f"built-in: Uniform / Rollover(Uniform), budget {b}")
viz.budget_allocation({"svdd": recorded["SVDD, MiddleHeavy"], "rbf": recorded["RBF, MiddleHeavy"]}, ax=axs[1],
                      title=f"MiddleHeavy / Rollover(MiddleHeavy), budget {b}");

# %%
viz.rbf_steps(recorded["RBF, MiddleHeavy"], run=0)


# %% [markdown]
# ## A scheme that reacts to the search
#
# `quota(self, state)` sees the rewards: `StallBoost` gives a run an even share of what it has
# left, doubled after a step whose kept proposal did not improve on the best reward so far, and
# halved after one that did (the last step takes what is left). Every run gets its own quota.

# %%
class StallBoost(AllocationScheme):
    """Even share of the budget left, x boost after a stalled step, / boost after an improving one."""

    def __init__(self, boost: float = 2.0):
        self.boost = boost

    def quota(self, state):  # state: search.AllocationState, every field (R,)
        share = state.budget_left.double() / (state.steps - state.step).double()
        factor = torch.where(state.accepted, 1 / self.boost, self.boost).double()
        factor = torch.where(state.step == 0, torch.ones_like(factor), factor)
        q = torch.floor(share * factor).long()
        return torch.where(state.step == state.steps - 1, state.budget_left, q)


b = budgets[len(budgets) // 2]
for name, (method, options) in {"SVDD, Uniform": ("svdd", {}), "SVDD, StallBoost": ("svdd", {"allocation": StallBoost()}),
                                "RBF, Rollover(Uniform)": ("rbf", {}),
                                "RBF, Rollover(StallBoost)": ("rbf", {"allocation": Rollover(StallBoost())})}.items():
    res = search.run(method, task.model, task.reward, mode="linear-sde", budget=b, steps=10, runs=RUNS, shape=(2,),
                     generator=torch.Generator().manual_seed(0), **options)
    se = res.rewards.std() / RUNS**0.5
    print(f"{name:26s} budget {b}: mean reward {res.rewards.mean():.3f} ± {se:.3f}, NFE {res.nfe.double().mean():.0f}")

# %% [markdown]
# On this task `StallBoost` does not beat the uniform share, for SVDD or for RBF: writing a scheme
# that reacts to the search takes a dozen lines, finding one that helps is exercise 2.
#
# ## A search method of your own
#
# Methods are open in the same way: a small class on `search.SearchContext` (noise, velocity at a
# grid index charged to the NFE ledger, $\hat x_0$, the step, the reward), registered with
# `search.register`, then run by name like a built-in one (`examples/beam_search.py` is a fuller
# beam search; `toyflow bench search --methods examples/beam_search.py:BeamSearch` runs it from
# the shell). Here a greedy search keeps the best of `width` children at every step.

# %%
from dataclasses import dataclass


@dataclass(frozen=True)
class GreedyOptions:
    width: int = 4


@search.register
class Greedy(search.Method):
    """Keep the best of `width` children at every grid step (1 + width (steps - 1) NFE)."""

    name, options = "greedy", GreedyOptions

    def minimum_budget(self, steps, opts):
        return 1 + opts.width * (steps - 1)

    def run(self, ctx, opts):
        R, W = ctx.runs, opts.width
        x = ctx.noise(R)
        u = ctx.velocity(x, 0)
        for k in range(ctx.steps - 1):
            z = ctx.noise(R * W) if ctx.needs_noise(k) else None
            y = ctx.step(x.repeat_interleave(W, 0), u.repeat_interleave(W, 0), k, z)  # (R W, 2) children
            uy = ctx.velocity(y, k + 1)
            best = ctx.reward(ctx.x0(y, uy, k + 1)).view(R, W).argmax(1) + torch.arange(R) * W
            x, u = y[best], uy[best]
        x_final = ctx.step(x, u, ctx.steps - 1)  # the last step is x0_hat: free
        return x_final, ctx.reward(x_final)


for m, opts in (("svdd", {}), ("greedy", {"width": 8})):
    res = search.run(m, task.model, task.reward, mode="linear-sde", budget=1 + 8 * 9, steps=10, runs=RUNS,
                     shape=(2,), generator=torch.Generator().manual_seed(0), **opts)
    print(f"{m:7s} budget {1 + 8 * 9}: mean reward {res.rewards.mean():.3f}, NFE {res.nfe.double().mean():.0f}")

# %% [markdown]
# ## Exercises
#
# Each exercise below has a stub that raises `NotImplementedError`: replace it with your code and rerun
# the cell. The check under it (`toyflow.exercises`) compares your answer with the Gaussian-mixture
# oracle, a toyflow reference or an invariant, prints a line starting with ✓ when it is right, and
# raises an `AssertionError` that says what is off when it is not; a stub prints "not attempted yet".
# Worked solutions: `solutions/06_custom_allocation_solutions.ipynb`.
#
# 1. MiddleHeavy as a static scheme
# 2. Rounding that keeps the whole budget
# 3. A front-loaded scheme
# 4. An even share of what is left
# 5. What the greedy search costs

# %%
import torch

from toyflow import exercises
from toyflow.search import AllocationScheme, StaticAllocation


# %% [markdown]
# ### Exercise 1 · MiddleHeavy as a static scheme
#
# Re-implement `MiddleHeavy` as a `StaticAllocation`: define `weights(steps)` only
# ($\sin(\pi(s + \tfrac12)/S)^2$). `StaticAllocation` turns weights into quotas that add up to the
# whole search budget (unlike the floor in `MiddleHeavy`, which left a few NFE unused).

# %%
class MyMiddleHeavy(StaticAllocation):
    def weights(self, steps):
        raise NotImplementedError  # your code: (steps,) non-negative weights


exercises.check_static_middle_heavy(MyMiddleHeavy)


# %% [markdown]
# ### Exercise 2 · Rounding that keeps the whole budget
#
# How does `StaticAllocation` round? Write `my_rounding(weights, total)`: with the normalised cumulative
# weights $C_k$, $q_k = \lfloor \text{total}\,C_k\rfloor - \lfloor \text{total}\,C_{k-1}\rfloor$ (integers).
# They add up to `total` exactly, and each is within one of its share.

# %%
def my_rounding(weights, total):
    raise NotImplementedError  # your code: (steps,) int64 quotas


exercises.check_cumulative_rounding(my_rounding)


# %% [markdown]
# ### Exercise 3 · A front-loaded scheme
#
# Write `FrontLoaded`, an `AllocationScheme` with `quota(self, step, steps, budget_left, spent)` whose
# quotas decrease with the step (e.g. proportional to `steps - step`), at least one per step, spending
# at most the search budget `budget_left + spent`.

# %%
class FrontLoaded(AllocationScheme):
    def quota(self, step, steps, budget_left, spent):
        raise NotImplementedError  # your code


exercises.check_front_loaded(FrontLoaded)


# %% [markdown]
# ### Exercise 4 · An even share of what is left
#
# Write `EvenShare` with `quota(self, state)`: `state.budget_left // (state.steps - state.step)`, and
# everything left at the last step (`state.step == state.steps - 1`). The check runs SVDD with it: every
# run must spend its whole budget, evenly.

# %%
class EvenShare(AllocationScheme):
    def quota(self, state):
        raise NotImplementedError  # your code


exercises.check_even_share(EvenShare)


# %% [markdown]
# ### Exercise 5 · What the greedy search costs
#
# Write `my_greedy_nfe(steps, width)`: the NFE of the `Greedy` method above (count its
# `ctx.velocity` calls).

# %%
def my_greedy_nfe(steps, width):
    raise NotImplementedError  # your code


exercises.check_greedy_nfe(my_greedy_nfe)

# %% [markdown]
# ### Going further
#
# Open questions, without a check:
#
# - **Tune it.** Sweep `power` in (0.5, 1, 2, 4). Is there a best value, and does it depend on the budget?
# - **Adaptive schemes.** Write a `quota(self, state)` scheme that beats `Uniform()` for SVDD or
#   `Rollover(Uniform())` for RBF on the same budget (ideas: spend more where `state.best_reward` is
#   still low, or at the grid times `state.t` where the last steps improved).
# - **Another task.** Repeat the comparison on `counting` and in the `vp-sde` mode. Does the middle
#   still matter most?
# - **CoDe.** Pass your scheme to `"code"` (`block=2`): the scheme then sees blocks as steps.
