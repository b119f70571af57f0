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
# # Solutions · 02 · From the ODE to an SDE with the same marginals
#
# Worked solutions to the exercises of `../02_ode_to_sde.ipynb`: try them there first. Every check below passes.

# %% [markdown]
# ## Exercises
#
# Each exercise below has a stub that raises `NotImplementedError`: replace it with your code and rerun
# the cell. The check under it (`toyflow.exercises`) compares your answer with the Gaussian-mixture
# oracle, a toyflow reference or an invariant, prints a line starting with ✓ when it is right, and
# raises an `AssertionError` that says what is off when it is not; a stub prints "not attempted yet".
# Worked solutions: `solutions/02_ode_to_sde_solutions.ipynb`.
#
# 1. The score from the velocity
# 2. One Euler–Maruyama step
# 3. The marginals are preserved (Fokker–Planck)
# 4. Proposals from one state
# 5. How stochastic is $g_t = \eta t^2$?

# %%
import torch

from toyflow import dynamics, exercises


# %% [markdown]
# ### Exercise 1 · The score from the velocity
#
# Write `my_score(x, u, t)` for the Linear path: $\hat x_1 = x + (1 - t)\,u$ and
# $\nabla\log p_t = -\hat x_1/t$ (the derivation above). With the exact velocity it must equal `gmm.score`.

# %%
def my_score(x, u, t):
    x1_hat = x + (1 - t) * u
    return -x1_hat / t


exercises.check_score_from_velocity(my_score)


# %% [markdown]
# ### Exercise 2 · One Euler–Maruyama step
#
# Write `my_sde_step(x, u, score, t, h, g, z)`: the state at $t - h$,
# $x - h\,u + h\,\tfrac{g^2}{2}\,\nabla\log p_t + g\sqrt h\,z$ (`t`, `h`, `g` floats).

# %%
def my_sde_step(x, u, score, t, h, g, z):
    return x - h * u + h * g**2 / 2 * score + g * h**0.5 * z


exercises.check_sde_step(my_sde_step)


# %% [markdown]
# ### Exercise 3 · The marginals are preserved (Fokker–Planck)
#
# Write `my_reverse_drift(u, score, g)`: the drift $b$ of the sampling SDE per unit of reverse time
# $\tau = 1 - t$, so that one step is $x \leftarrow x + h\,b + g\sqrt h\,z$. The check builds $b$ from a
# mixture's exact velocity and score and verifies the Fokker–Planck equation
# $\partial_\tau p = -\nabla\cdot(b\,p) + \tfrac{g^2}{2}\Delta p$ of the exact $p_t$ by finite
# differences, for $g = 0, 1, 2$: a wrong sign changes $p_t$ as soon as $g > 0$.

# %%
def my_reverse_drift(u, score, g):
    return -u + g**2 / 2 * score  # reverse time flips u; the score term cancels the diffusion


exercises.check_reverse_drift(my_reverse_drift)


# %% [markdown]
# ### Exercise 4 · Proposals from one state
#
# Write `my_proposals(velocity, x, t, t_next, eta, z)`: one SDE step from $t$ to `t_next` for the $M$
# identical rows of `x`, with $g = \eta t^2$ and the noises `z` (M, 2). Reuse `my_score` and
# `my_sde_step`. At $\eta = 0$ all proposals coincide: the ODE gives a search nothing to choose from.

# %%
def my_proposals(velocity, x, t, t_next, eta, z):
    u = velocity(x, torch.full((len(x),), t, dtype=x.dtype))
    return my_sde_step(x, u, my_score(x, u, t), t, t - t_next, eta * t**2, z)


exercises.check_proposals(my_proposals)


# %% [markdown]
# ### Exercise 5 · How stochastic is $g_t = \eta t^2$?
#
# The member of the family whose forward process is the path's own noising (the DDPM sampler) has
# $g^2_{\text{DDPM}} = 2\sigma_t^2\,\tfrac{d}{dt}\log(\sigma_t/\alpha_t)$, which is $2t/(1-t)$ on the
# Linear path. Write `my_eta_ratio(t, eta)` $= g_t^2/g^2_{\text{DDPM}}(t)$ for $g_t = \eta t^2$
# (0 is the ODE, 1 is DDPM) and compare with `dynamics.eta_ratio`.

# %%
def my_eta_ratio(t, eta):
    return (eta * t**2) ** 2 / (2 * t / (1 - t))


exercises.check_eta_ratio(my_eta_ratio)
