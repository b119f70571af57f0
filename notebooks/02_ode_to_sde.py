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
# # 02 · From the ODE to an SDE with the same marginals
#
# Inference-time search needs **randomness**: to choose among several continuations of a
# particle, the sampler must be able to propose different ones. A flow model gives a
# deterministic ODE, but for any diffusion coefficient $g_t \ge 0$ the SDE
#
# $$dx = \Big[u_t(x) - \frac{g_t^2}{2}\,\nabla\log p_t(x)\Big]\,dt + g_t\,d\bar w
# \quad\text{(integrated from } t = 1 \text{ to } 0)$$
#
# has the **same marginals** $p_t$ (Kim et al. 2025, Sec. 3.1). One Euler–Maruyama step from
# $t$ to $t - h$ is
#
# $$x \leftarrow x - h\,u + h\,\frac{g_t^2}{2}\,\nabla\log p_t(x) + g_t\sqrt h\,z .$$
#
# The score is not a new network: it follows from the velocity,
# $\nabla\log p_t(x) = -\hat x_1/\sigma_t$ with $\hat x_1 = (\dot\alpha_t x - \alpha_t u)/(\dot\alpha_t\sigma_t - \dot\sigma_t\alpha_t)$.

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

from toyflow import dynamics, metrics, pretrained, viz
from toyflow.data import toy2d

gmm = toy2d.eight_gaussians_gmm()          # exact flow of the 8 Gaussians
model = pretrained.load("2d-8gaussians")   # shipped MLP trained on the same data

# %% [markdown]
# ### Why the marginals are the same (Fokker–Planck)
#
# Write the sampler in reverse time $\tau = 1 - t$. The ODE $dx/d\tau = -u_t(x)$ moves the density by
# the continuity equation $\partial_\tau p = \nabla\cdot(u\,p)$, which is $-\partial_t p$: it follows
# $p_t$ backwards. An SDE $dx = b\,d\tau + g\,dw$ moves it by the Fokker–Planck equation
# $\partial_\tau p = -\nabla\cdot(b\,p) + \tfrac{g^2}{2}\Delta p$. Take
# $b = -u + \tfrac{g^2}{2}\nabla\log p_t$: since $p\,\nabla\log p = \nabla p$,
#
# $$-\nabla\cdot(b\,p) + \tfrac{g^2}{2}\Delta p = \nabla\cdot(u\,p) - \tfrac{g^2}{2}\Delta p + \tfrac{g^2}{2}\Delta p = \nabla\cdot(u\,p),$$
#
# the same as for the ODE, for every $g_t \ge 0$ (that depends on $t$ only): the score term exactly
# undoes the spreading of the noise. One Euler–Maruyama step $x \leftarrow x + h\,b + g\sqrt h\,z$ is
# the update above. Exercise 3 checks this equation numerically on the oracle.

# %% [markdown]
# ## The score from the velocity
#
# `dynamics.score_from_velocity(x, u, t, schedule)` applies the formula above. With the *exact*
# velocity it must give the exact score (`gmm.score`) to round-off; with the MLP's velocity it
# inherits the model's error, amplified by $1/\sigma_t$ as $t \to 0$.

# %%
g = torch.Generator().manual_seed(0)
print(" t     max |score(u_exact) - score|   median rel. error of score(u_MLP)")
for t in (0.9, 0.5, 0.2, 0.05, 0.01):
    x = gmm.sample_marginal(2000, t, generator=g, dtype=torch.float64)
    t = torch.tensor(t, dtype=torch.float64)  # the same float64 time for every function
    true = gmm.score(x, t)
    from_exact = dynamics.score_from_velocity(x, gmm.velocity(x, t), t, "linear")
    with torch.no_grad():
        u_mlp = model(x.float(), t.float().expand(2000)).double()
    from_mlp = dynamics.score_from_velocity(x, u_mlp, t, "linear")
    rel = ((from_mlp - true).norm(dim=1) / true.norm(dim=1)).median()
    print(f"{t:4.2f}   {(from_exact - true).abs().max():.2e}                      {rel:.3f}")

# %% [markdown]
# ## Diffusion schedules $g_t$
#
# `dynamics.diffusion_schedule(name, eta, schedule)` returns $g(t)$. The paper's default is
# `"square"`, $g_t = \eta t^2$ with $\eta = 3$: a lot of noise early (where the sample is still
# undecided), none at the end (so the last steps only sharpen the sample).

# %%
t = torch.linspace(0, 1, 201)
fig, ax = plt.subplots(figsize=(5.5, 3.4), layout="constrained")
for name in ("square", "linear", "constant", "sigma"):
    gt = dynamics.diffusion_schedule(name, eta=1.0, schedule="linear")(t)
    ax.plot(t, gt, label=name + (" (Linear path: = linear)" if name == "sigma" else ""),
            ls=":" if name == "sigma" else "-", lw=2.5 if name == "sigma" else 1.5)
ax.plot(t, dynamics.diffusion_schedule("sigma", eta=1.0, schedule="vp")(t), ls="--", label="sigma (VP path)")
ax.set(xlabel="t (1 = noise, 0 = data)", ylabel="$g_t$ for $\\eta = 1$", title="diffusion schedules")
ax.legend(title="diffusion");

# %% [markdown]
# ## ODE vs SDE from the same noise
#
# $\eta = 0$ is the ODE. With $\eta = 1$ and $\eta = 3$ the paths wander, and so do the
# predictions $\hat x_0(x_t)$ (bottom row): early on, an SDE particle can still change mode.

# %%
x1 = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
trajs = {
    f"η = {eta:g}": dynamics.sample(model, x1, "linear", steps=20, sde=eta > 0, eta=eta,
                                    generator=torch.Generator().manual_seed(2), record=True)
    for eta in (0.0, 1.0, 3.0)
}
viz.trajectories_2d(trajs, n_show=64, gmm=gmm, title="shipped MLP, Linear path, 20 steps, $g_t = \\eta t^2$")

# %% [markdown]
# ## Same marginals? Check it with the energy distance
#
# We sample the **exact** flow (so only the discretisation error is left) with the ODE and the
# SDE at several step counts, and compare to exact data with the (unbiased) energy distance,
# next to its fluctuation between two exact sample sets (the floor, see notebook 01). Values
# within a couple of floor standard deviations of 0 mean "indistinguishable from exact samples".

# %%
n = 4000 if FULL else 2000
step_counts = (5, 20, 100, 400) if FULL else (5, 20, 100)
g = torch.Generator().manual_seed(3)
exact = gmm.sample(n, generator=g)
x1 = torch.randn(n, 2, generator=g)
floor = metrics.energy_distance_floor(gmm.sample, n, generator=g, repeats=5, unbiased=True)
print(f"floor (two exact sets of {n}): {floor.mean:+.4f} ± {floor.std:.4f}")
print("eta   " + "   ".join(f"{s:>4d} steps" for s in step_counts))
for eta in (0.0, 1.0, 3.0):
    eds = [metrics.energy_distance(dynamics.sample(gmm, x1, "linear", steps=s, sde=eta > 0, eta=eta,
                                                   generator=torch.Generator().manual_seed(4)).x,
                                   exact, unbiased=True)
           for s in step_counts]
    print(f"{eta:3g}   " + "   ".join(f"{e:+10.4f}" for e in eds))

# %% [markdown]
# The marginals at intermediate times agree too: the heatmaps are the exact $p_t$, the dots are
# SDE particles ($\eta = 3$, 50 steps) at the same times.

# %%
traj = dynamics.sample(gmm, x1[:300], "linear", steps=50, sde=True, eta=3.0,
                       generator=torch.Generator().manual_seed(5), record=True)
viz.density_panels(gmm, times=(1.0, 0.6, 0.3, 0.1, 0.0), traj=traj)

# %% [markdown]
# ## Why this matters for search: proposals from one state
#
# Take **one** particle at $t = 0.6$ and make 64 one-step proposals to $t = 0.5$. Their
# predictions $\hat x_0$ are all identical for the ODE (nothing to choose from), and spread out
# for the SDE, for $\eta = 3$ towards the neighbouring modes: a search method can pick the one
# with the best reward.

# %%
t, t_next, M = torch.tensor(0.6), torch.tensor(0.5), 64
state = gmm.sample_marginal(1, 0.6, generator=torch.Generator().manual_seed(6)).expand(M, 2)
data = gmm.sample(1000, generator=torch.Generator().manual_seed(8))
fig, axs = plt.subplots(1, 3, figsize=(10, 3.6), sharex=True, sharey=True, layout="constrained")
for ax, eta in zip(axs, (0.0, 1.0, 3.0)):
    ax.scatter(data[:, 0], data[:, 1], s=2, c="0.8", label="data")
    u = gmm.velocity(state, t)
    g_t = dynamics.diffusion_schedule("square", eta)(t).expand(M)
    z = torch.randn(M, 2, generator=torch.Generator().manual_seed(7))
    proposals = dynamics.step(state, u, t.expand(M), t_next.expand(M), "linear", g=g_t, noise=z)
    x0_hat = dynamics.x0_from_velocity(proposals, gmm.velocity(proposals, t_next), t_next, "linear")
    ax.scatter(x0_hat[:, 0], x0_hat[:, 1], s=12, alpha=0.6, label="$\\hat x_0$ of proposals")
    ax.scatter(state[:1, 0], state[:1, 1], marker="x", c="k", s=60, label="current state $x_{0.6}$")
    ax.set(aspect="equal", xlim=(-3, 3), ylim=(-3, 3), xlabel="$x[0]$",
           title=f"η = {eta:g}: diversity {metrics.diversity(x0_hat):.2f}")
axs[0].set_ylabel("$x[1]$")
axs[0].legend(loc="upper left", fontsize="small");

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
    raise NotImplementedError  # your code


exercises.check_score_from_velocity(my_score)


# %% [markdown]
# ### Exercise 2 · One Euler–Maruyama step
#
# Write `my_sde_step(x, u, score, t, h, g, z)`: the state at $t - h$,
# $x - h\,u + h\,\tfrac{g^2}{2}\,\nabla\log p_t + g\sqrt h\,z$ (`t`, `h`, `g` floats).

# %%
def my_sde_step(x, u, score, t, h, g, z):
    raise NotImplementedError  # your code


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
    raise NotImplementedError  # your code


exercises.check_reverse_drift(my_reverse_drift)


# %% [markdown]
# ### Exercise 4 · Proposals from one state
#
# Write `my_proposals(velocity, x, t, t_next, eta, z)`: one SDE step from $t$ to `t_next` for the $M$
# identical rows of `x`, with $g = \eta t^2$ and the noises `z` (M, 2). Reuse `my_score` and
# `my_sde_step`. At $\eta = 0$ all proposals coincide: the ODE gives a search nothing to choose from.

# %%
def my_proposals(velocity, x, t, t_next, eta, z):
    raise NotImplementedError  # your code


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
    raise NotImplementedError  # your code


exercises.check_eta_ratio(my_eta_ratio)

# %% [markdown]
# ### Going further
#
# Open questions, without a check:
#
# - **Stiffness.** For $\eta = 10$, find the number of steps the SDE needs to reach the noise floor.
#   Which term of the update becomes large, and where in t?
# - **Other schedules.** Repeat the energy-distance table with `diffusion="constant"` and
#   `diffusion="sigma"`. Which schedule gives the most proposal diversity at $t = 0.6$ for the same
#   energy distance at 50 steps?
# - **A wrong score.** Replace the score by half of it in the update (with `my_sde_step`). What happens
#   to the marginals? Measure it with the energy distance.
# - **Model error.** Use the MLP instead of `gmm` in the energy-distance table. Does the SDE hide or
#   amplify the model's error compared with the ODE?
