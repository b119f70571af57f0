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
# # Solutions · 06 · Prototype your own budget allocation
#
# Worked solutions to the exercises of `../06_custom_allocation.ipynb`: try them there first. Every check below passes.

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
        return torch.sin(torch.pi * (torch.arange(steps) + 0.5) / steps) ** 2


exercises.check_static_middle_heavy(MyMiddleHeavy)


# %% [markdown]
# ### Exercise 2 · Rounding that keeps the whole budget
#
# How does `StaticAllocation` round? Write `my_rounding(weights, total)`: with the normalised cumulative
# weights $C_k$, $q_k = \lfloor \text{total}\,C_k\rfloor - \lfloor \text{total}\,C_{k-1}\rfloor$ (integers).
# They add up to `total` exactly, and each is within one of its share.

# %%
def my_rounding(weights, total):
    c = torch.cumsum(weights, 0) / weights.sum()
    cum = torch.floor(total * c + 1e-9).long()  # + 1e-9: round-off must not lose an NFE
    cum[-1] = total
    return torch.diff(cum, prepend=torch.zeros(1, dtype=torch.long))


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
        total = budget_left + spent  # (R,) each run's search budget
        share = total * 2 * (steps - step) / (steps * (steps + 1))  # weights steps, steps - 1, ..., 1
        return torch.floor(share).long().clamp_min(1)


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
        share = state.budget_left // (state.steps - state.step)
        return torch.where(state.step == state.steps - 1, state.budget_left, share)


exercises.check_even_share(EvenShare)


# %% [markdown]
# ### Exercise 5 · What the greedy search costs
#
# Write `my_greedy_nfe(steps, width)`: the NFE of the `Greedy` method above (count its
# `ctx.velocity` calls).

# %%
def my_greedy_nfe(steps, width):
    return 1 + width * (steps - 1)  # the initial draw, width children per search step; the last step is free


exercises.check_greedy_nfe(my_greedy_nfe)
