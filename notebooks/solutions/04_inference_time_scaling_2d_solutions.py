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
# # Solutions · 04 · Inference-time scaling on 2D toy tasks
#
# Worked solutions to the exercises of `../04_inference_time_scaling_2d.ipynb`: try them there first. Every check below passes.

# %% [markdown]
# ## Exercises
#
# Each exercise below has a stub that raises `NotImplementedError`: replace it with your code and rerun
# the cell. The check under it (`toyflow.exercises`) compares your answer with the Gaussian-mixture
# oracle, a toyflow reference or an invariant, prints a line starting with ✓ when it is right, and
# raises an `AssertionError` that says what is off when it is not; a stub prints "not attempted yet".
# Worked solutions: `solutions/04_inference_time_scaling_2d_solutions.ipynb`.
#
# 1. RBF's ledger
# 2. SMC's weights and effective sample size
# 3. $\mathbb E_{p^*}[r]$ by importance sampling
# 4. The expected Best-of-N
# 5. A reward that can be hacked

# %%
import torch

from toyflow import exercises, rewards


# %% [markdown]
# ### Exercise 1 · RBF's ledger
#
# Write `my_rbf_ledger(budget, steps, needed)` following the pseudo-code above for one run with
# $S$ = `steps` − 1 search steps: $n_0 = \max(1, \lfloor\text{budget}/20\rfloor)$ initial draws;
# search budget $B$ = budget − $n_0$; step $j$ gets $\lfloor B/S\rfloor$ plus what earlier steps left
# unused, clamped to $[1,\ \text{left} - (S-1-j)]$, and draws `min(needed[j], quota)` (`needed[j]`:
# the draws until the first improvement); the last search step spends everything left. Return the
# NFE per grid step `[n0, d_0, ..., d_{S-1}]`: it must add up to the budget.

# %%
def my_rbf_ledger(budget, steps, needed):
    n0, S = max(1, budget // 20), steps - 1
    total = budget - n0
    ledger, carry, spent = [n0], 0, 0
    for j in range(S):
        left = total - spent
        if j == S - 1:
            draws = left  # the official code spends the rest at the last search step
        else:
            quota = max(1, min(total // S + carry, left - (S - 1 - j)))  # keep 1 NFE per later step
            draws = min(needed[j], quota)
            carry = quota - draws  # the unused quota rolls over
        spent += draws
        ledger.append(draws)
    return ledger


exercises.check_rbf_ledger(my_rbf_ledger)


# %% [markdown]
# ### Exercise 2 · SMC's weights and effective sample size
#
# Write `my_smc_weights(r_prev, r_new, lam)` returning the normalised weights
# $w_i \propto e^{(r^{\text{new}}_i - r^{\text{prev}}_i)/\lambda}$ (use a softmax: the exponentials
# overflow for small $\lambda$) and the ESS $1/\sum_i w_i^2$.

# %%
def my_smc_weights(r_prev, r_new, lam):
    w = torch.softmax((r_new - r_prev) / lam, dim=0)
    return w, 1 / w.pow(2).sum()


exercises.check_smc_weights(my_smc_weights)


# %% [markdown]
# ### Exercise 3 · $\mathbb E_{p^*}[r]$ by importance sampling
#
# Base samples $x_i \sim p_0$ reweighted by $e^{r(x_i)/\lambda}$ (self-normalised) estimate the
# tilted target's expected reward. Write `my_tilted_expectation(samples, reward, lam)`; the check also
# compares it with the grid value of `metrics.tilted_oracle`.

# %%
def my_tilted_expectation(samples, reward, lam):
    r = reward(samples)
    return (torch.softmax(r / lam, dim=0) * r).sum()


exercises.check_tilted_expectation(my_tilted_expectation)


# %% [markdown]
# ### Exercise 4 · The expected Best-of-N
#
# If one full sample has reward distribution $F$, BoN with $N$ samples has
# $\mathbb E[\max] = \int r\, d(F^N)$. For an empirical $F$ (rewards $r_{(1)} \le \dots \le r_{(m)}$,
# drawn with replacement) that is $\sum_i r_{(i)}\big[(i/m)^N - ((i-1)/m)^N\big]$. Write
# `my_bon_expected_max(rewards, n)`: it is the BoN scaling curve without running a search.

# %%
def my_bon_expected_max(rewards, n):
    r = rewards.sort().values
    m = len(r)
    i = torch.arange(1, m + 1, dtype=r.dtype)
    return (r * ((i / m) ** n - ((i - 1) / m) ** n)).sum()


exercises.check_bon_expected_max(my_bon_expected_max)


# %% [markdown]
# ### Exercise 5 · A reward that can be hacked
#
# Write `my_hacking_reward(x)` ((B, 2) → (B,)) with a sharp peak *off* the data of the 8 Gaussians
# (e.g. at the centre of the circle). Then run a few methods on it: which ones find the peak, and what
# does `metrics.realism` say?

# %%
def my_hacking_reward(x):
    return torch.exp(-x.pow(2).sum(1) / (2 * 0.3**2))  # a bump at the origin, far from every mode


exercises.check_hacking_reward(my_hacking_reward)
