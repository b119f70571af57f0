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
# # Solutions · 07 · When does VP-SDE help, and why does RBF win?
#
# Worked solutions to the exercises of `../07_regimes.ipynb`: try them there first. Every check below passes.

# %% [markdown]
# ## Exercises
#
# Each exercise below has a stub that raises `NotImplementedError`: replace it with your code and rerun
# the cell. The check under it (`toyflow.exercises`) compares your answer with the Gaussian-mixture
# oracle, a toyflow reference or an invariant, prints a line starting with ✓ when it is right, and
# raises an `AssertionError` that says what is off when it is not; a stub prints "not attempted yet".
# Worked solutions: `solutions/07_regimes_solutions.ipynb`.
#
# 1. Posterior purity
# 2. The Linear-equivalent noise level
# 3. Blur the flow map
# 4. Reward headroom
# 5. The η ratio of the VP SDE

# %%
import torch

from toyflow import dynamics, exercises, rewards
from toyflow.models import FlowMapOracle

gmm8, reward8 = rewards.task("rare-mode", scale=8)
flowmap8 = FlowMapOracle(gmm8)


# %% [markdown]
# ### Exercise 1 · Posterior purity
#
# Write `my_purity(gmm, x, t)` $= \operatorname{mean}_x \sum_k \pi_k(x)^2$ (section 1) with
# `gmm.posterior_weights`.

# %%
def my_purity(gmm, x, t):
    return (gmm.posterior_weights(x, t) ** 2).sum(1).mean()


exercises.check_purity(my_purity)


# %% [markdown]
# ### Exercise 2 · The Linear-equivalent noise level
#
# Write `my_noise_level(schedule, t)`: the Linear time with the same $\alpha/\sigma$ as `schedule` at
# `t`, $\sigma_t/(\alpha_t + \sigma_t)$ (the x axes of this notebook compare modes at equal noise level).

# %%
def my_noise_level(schedule, t):
    c = schedule(t)
    return c.sigma / (c.alpha + c.sigma)


exercises.check_noise_level(my_noise_level)


# %% [markdown]
# ### Exercise 3 · Blur the flow map
#
# Write `my_blend_velocity(x, t, lam)`: the Linear-path velocity whose $\hat x_0$ is
# $(1-\lambda)\,\mathbb E[x_0\mid x_t] + \lambda\,\Phi(x_t, t)$ for the ×8 task (`gmm8.x0`,
# `flowmap8.flow_map`; `dynamics.velocity_from_x0` turns an $\hat x_0$ into a velocity). Then plot RBF's
# reward against λ.

# %%
def my_blend_velocity(x, t, lam):
    x0 = (1 - lam) * gmm8.x0(x, t) + lam * flowmap8.flow_map(x, t)
    return dynamics.velocity_from_x0(x, x0, t, "linear")


exercises.check_blend_velocity(my_blend_velocity)


# %% [markdown]
# ### Exercise 4 · Reward headroom
#
# Write `my_headroom(rewards, mask)` $= \operatorname{mean}_{\text{runs}}(\max_j r_j - \operatorname{mean}_j r_j)$
# over the valid proposals only (`mask` True; `rewards`, `mask`: (R, M), padded entries hold anything).

# %%
def my_headroom(rewards, mask):
    best = torch.where(mask, rewards, -torch.inf).max(1).values
    mean = torch.where(mask, rewards, 0).sum(1) / mask.sum(1)
    return (best - mean).mean()


exercises.check_headroom(my_headroom)


# %% [markdown]
# ### Exercise 5 · The η ratio of the VP SDE
#
# On the VP path the ancestral diffusion is $g^2_{\text{DDPM}}(r) = \beta(r) = \beta_{\min} + r(\beta_{\max} - \beta_{\min})$.
# Write `my_vp_eta_ratio(r)` for $g = 3r^2$ and compare its values with the Linear SDE's
# $4.5\,t^3(1-t)$ at the same noise level (section 1's lower panel).

# %%
def my_vp_eta_ratio(r):
    beta = 0.1 + r * (20.0 - 0.1)
    return (3 * r**2) ** 2 / beta


exercises.check_vp_eta_ratio(my_vp_eta_ratio)
