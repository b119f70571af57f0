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
# # Solutions · 03 · From the Linear to the VP interpolant
#
# Worked solutions to the exercises of `../03_linear_to_vp.ipynb`: try them there first. Every check below passes.

# %% [markdown]
# ## Exercises
#
# Each exercise below has a stub that raises `NotImplementedError`: replace it with your code and rerun
# the cell. The check under it (`toyflow.exercises`) compares your answer with the Gaussian-mixture
# oracle, a toyflow reference or an invariant, prints a line starting with ✓ when it is right, and
# raises an `AssertionError` that says what is off when it is not; a stub prints "not attempted yet".
# Worked solutions: `solutions/03_linear_to_vp_solutions.ipynb`.
#
# 1. The SNR-matched Linear time
# 2. The scale $s_r$
# 3. The VP path's `snr_inverse`
# 4. The converted velocity
# 5. $\hat x_0$ does not depend on the path

# %%
import torch

from toyflow import exercises, interpolants
from toyflow.data import toy2d

lin, vp = interpolants.Linear(), interpolants.VP()
gmm = toy2d.eight_gaussians_gmm()  # the Linear-path oracle


# %% [markdown]
# ### Exercise 1 · The SNR-matched Linear time
#
# Write `my_linear_time(r)`: the Linear time $t_r$ with $\alpha_t/\sigma_t$ equal to the VP path's
# $\bar\alpha_r/\bar\sigma_r$ (`r` a tensor; `vp(r).alpha`, `vp(r).sigma`). For the Linear path
# $\alpha/\sigma = (1-t)/t = \rho$ gives $t = 1/(1+\rho)$.

# %%
def my_linear_time(r):
    c = vp(r)
    return 1 / (1 + c.alpha / c.sigma)


exercises.check_snr_matched_time(my_linear_time)


# %% [markdown]
# ### Exercise 2 · The scale $s_r$
#
# Write `my_scale(r)` $= \bar\sigma_r/\sigma_{t_r}$. The check verifies that $s_r$ maps *both*
# Linear coefficients at $t_r$ onto the VP ones at $r$ (that is what equal SNR buys).

# %%
def my_scale(r):
    return vp(r).sigma / my_linear_time(r)  # sigma_Linear(t) = t


exercises.check_scale(my_scale)


# %% [markdown]
# ### Exercise 3 · The VP path's `snr_inverse`
#
# Solve $\bar\alpha_r/\bar\sigma_r = \rho$ for $r$ in closed form: $e^{-T}/(1 - e^{-T}) = \rho^2$ gives
# $T = -\log\big(\rho^2/(1+\rho^2)\big)$, then solve the quadratic
# $T = \tfrac12 r^2(\beta_{\max}-\beta_{\min}) + r\beta_{\min}$ ($\beta_{\min} = 0.1$, $\beta_{\max} = 20$).

# %%
def my_vp_snr_inverse(rho):
    b_min, b_max = 0.1, 20.0
    T = -torch.log(rho**2 / (1 + rho**2))
    return (-b_min + torch.sqrt(b_min**2 + 2 * (b_max - b_min) * T)) / (b_max - b_min)


exercises.check_vp_snr_inverse(my_vp_snr_inverse)


# %% [markdown]
# ### Exercise 4 · The converted velocity
#
# Write `my_converted_velocity(u_lin, x, r)` $= (\dot s_r/s_r)\,x + s_r\dot t_r\,u_{t_r}(x/s_r)$ at VP time
# `r` (a float), taking $(t_r, s_r, \dot t_r, \dot s_r)$ from
# `interpolants.ConvertedVelocity(u_lin, lin, vp).source_time_and_scale`. With the exact Linear
# velocity it must give the exact VP velocity.

# %%
def my_converted_velocity(u_lin, x, r):
    rr = torch.full((len(x),), r, dtype=x.dtype)
    t, s, dt, ds = interpolants.ConvertedVelocity(u_lin, lin, vp).source_time_and_scale(rr)
    s, dt, ds = s[:, None], dt[:, None], ds[:, None]
    return ds / s * x + s * dt * u_lin(x / s, t)


exercises.check_converted_velocity(my_converted_velocity)


# %% [markdown]
# ### Exercise 5 · $\hat x_0$ does not depend on the path
#
# Since $\bar x_r = s_r x_{t_r}$ is the same noisy data up to a scale, $\mathbb E[x_0 \mid \bar x_r = x]$
# on the VP path equals $\mathbb E[x_0 \mid x_{t_r} = x/s_r]$ on the Linear one. Write
# `my_x0_vp(x, r)` with the Linear oracle `gmm` only; the check compares with the VP oracle.

# %%
def my_x0_vp(x, r):
    r = torch.tensor(r, dtype=x.dtype)
    return gmm.x0(x / my_scale(r), my_linear_time(r))


exercises.check_x0_across_paths(my_x0_vp)
