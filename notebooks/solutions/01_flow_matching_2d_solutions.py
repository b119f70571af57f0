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
# # Solutions · 01 · Flow matching in 2D
#
# Worked solutions to the exercises of `../01_flow_matching_2d.ipynb`: try them there first. Every check below passes.

# %% [markdown]
# ## Exercises
#
# Each exercise below has a stub that raises `NotImplementedError`: replace it with your code and rerun
# the cell. The check under it (`toyflow.exercises`) compares your answer with the Gaussian-mixture
# oracle, a toyflow reference or an invariant, prints a line starting with ✓ when it is right, and
# raises an `AssertionError` that says what is off when it is not; a stub prints "not attempted yet".
# Worked solutions: `solutions/01_flow_matching_2d_solutions.ipynb`.
#
# 1. The Linear interpolant and its regression target
# 2. The flow-matching loss
# 3. One Gaussian by hand
# 4. $\hat x_0$ from the velocity
# 5. An Euler sampler

# %%
import torch

from toyflow import dynamics, exercises, interpolants
from toyflow.models import GaussianMixtureFlow


# %% [markdown]
# ### Exercise 1 · The Linear interpolant and its regression target
#
# Write `my_linear_pair(x0, x1, t)` returning $x_t = (1 - t)\,x_0 + t\,x_1$ and the flow-matching
# target $\dot\alpha_t x_0 + \dot\sigma_t x_1$ for the Linear path (`t` has shape (B,)). Mind the sign:
# the target is $dx_t/dt$ in *forward* time, even though sampling runs from $t = 1$ to $0$.

# %%
def my_linear_pair(x0, x1, t):
    t = t[:, None]  # (B,) -> (B, 1): one time per row
    return (1 - t) * x0 + t * x1, x1 - x0


exercises.check_linear_pair(my_linear_pair)


# %% [markdown]
# ### Exercise 2 · The flow-matching loss
#
# Write `my_fm_loss(velocity, x0, x1, t)`: the mean over the batch of
# $\|u(x_t, t) - (x_1 - x_0)\|^2$ (squared norm summed over coordinates). The check evaluates it at the
# exact velocity (the minimiser: what is left is the irreducible variance of the target) and at a
# perturbed one.

# %%
def my_fm_loss(velocity, x0, x1, t):
    xt, target = my_linear_pair(x0, x1, t)
    return (velocity(xt, t) - target).pow(2).sum(1).mean()


exercises.check_fm_loss(my_fm_loss)


# %% [markdown]
# ### Exercise 3 · One Gaussian by hand
#
# For $p_0 = \mathcal N(\mu, s^2 I)$ on the Linear path, $x_t \sim \mathcal N(\alpha_t\mu, v_t I)$ with
# $v_t = \alpha_t^2 s^2 + \sigma_t^2$, and the posterior mean is
# $\hat x_0 = \mu + \alpha_t s^2 (x - \alpha_t\mu)/v_t$. With $\hat x_1 = (x - \alpha_t\hat x_0)/\sigma_t$,
# the velocity is $u_t(x) = \dot\alpha_t\hat x_0 + \dot\sigma_t\hat x_1$. Write
# `my_gaussian_velocity(x, t, mu, s)` (t a float); the check compares it with
# `GaussianMixtureFlow([mu], s).velocity`.

# %%
def my_gaussian_velocity(x, t, mu, s):
    alpha, sigma = 1 - t, t
    v = alpha**2 * s**2 + sigma**2
    x0_hat = mu + alpha * s**2 * (x - alpha * mu) / v
    x1_hat = (x - alpha * x0_hat) / sigma
    return -x0_hat + x1_hat  # d_alpha = -1, d_sigma = 1


exercises.check_gaussian_velocity(my_gaussian_velocity)


# %% [markdown]
# ### Exercise 4 · $\hat x_0$ from the velocity
#
# Write `my_x0_hat(x, u, t)` for the Linear path (see the derivation above: $\hat x_0 = x - t\,u$). With
# the exact velocity it must give the oracle's posterior mean `gmm.x0`.

# %%
def my_x0_hat(x, u, t):
    return x - t * u


exercises.check_x0_hat(my_x0_hat)


# %% [markdown]
# ### Exercise 5 · An Euler sampler
#
# Write `my_euler(velocity, x1, steps)`: start at $x_1$ and take `steps` Euler steps on the uniform
# grid from $t = 1$ to $0$, $x \leftarrow x + (t_{k+1} - t_k)\,u_{t_k}(x)$ (`velocity(x, t)` takes `t` of
# shape (B,)). The check compares with `dynamics.sample`.

# %%
def my_euler(velocity, x1, steps):
    times = torch.linspace(1, 0, steps + 1, dtype=x1.dtype)
    x = x1
    for t, t_next in zip(times[:-1], times[1:]):
        x = x + (t_next - t) * velocity(x, t.expand(len(x)))  # t_next < t: a step towards the data
    return x


exercises.check_euler_sampler(my_euler)
