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
# # 01 · Flow matching in 2D
#
# A **flow model** turns noise into data by integrating a velocity field. toyflow follows the
# convention of Kim et al. (2025): **t = 0 is data, t = 1 is noise**,
#
# $$x_t = \alpha_t x_0 + \sigma_t x_1, \qquad x_1 \sim \mathcal N(0, I),$$
#
# and sampling integrates $\dot x = u_t(x)$ from $t = 1$ down to $t = 0$. For the *Linear*
# (rectified-flow) interpolant $\alpha_t = 1 - t$, $\sigma_t = t$. The velocity is the
# conditional expectation $u_t(x) = \mathbb E[\dot\alpha_t x_0 + \dot\sigma_t x_1 \mid x_t = x]$,
# and flow matching learns it by regression:
#
# $$\mathcal L = \mathbb E_{t, x_0, x_1}\,\big\|u_\theta(x_t, t) - (\dot\alpha_t x_0 + \dot\sigma_t x_1)\big\|^2 .$$
#
# On a Gaussian mixture every one of these quantities is available in closed form
# (`toyflow.models.GaussianMixtureFlow`), so we can check the learned model against the truth.

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
from toyflow.models import VelocityMLP
from toyflow.train import TrainConfig, train_flow

# %% [markdown]
# ## The data and its exact flow
#
# Eight Gaussians on a circle of radius 2 (std 0.1). `toy2d.eight_gaussians_gmm()` is the same
# distribution as a `GaussianMixtureFlow`: the *oracle*.

# %%
g = torch.Generator().manual_seed(0)
data = toy2d.sample("8gaussians", 20_000, generator=g)
gmm = toy2d.eight_gaussians_gmm()  # exact velocity, x0-prediction, score, log-density

fig, ax = plt.subplots(figsize=(3.6, 3.6), layout="constrained")
ax.scatter(data[:2000, 0], data[:2000, 1], s=2, alpha=0.5)
ax.set(aspect="equal", xlim=(-3, 3), ylim=(-3, 3), xlabel="$x[0]$", ylabel="$x[1]$",
       title="2000 training points (8 Gaussians)");

# %% [markdown]
# ## Train a small MLP for a few seconds
#
# `train_flow` does conditional flow matching with Adam, a cosine learning rate and EMA weights.
# With `FULL = False` we train only a few hundred steps to see the loss go down, and then use the
# shipped model (`pretrained.load("2d-8gaussians")`, trained with the command printed below) for
# the figures.

# %%
cfg = TrainConfig(steps=3000 if FULL else 500, batch_size=256, lr=2e-3, seed=0, progress=False)
result = train_flow(VelocityMLP(dim=2, hidden=128, depth=3), data, "linear", cfg)
print(f"{result.steps} steps in {result.wall_time:.1f} s on {result.device}; "
      f"mean loss over the last 50 steps: {np.mean(result.losses[-50:]):.3f}")

fig, ax = plt.subplots(figsize=(5, 2.8), layout="constrained")
ax.plot(result.losses, lw=0.6)
ax.set(xlabel="optimiser step", ylabel="flow-matching loss", title="training loss");

# %%
model = result.model if FULL else pretrained.load("2d-8gaussians")
print("model used below:", "just trained" if FULL else "shipped: " + pretrained.info("2d-8gaussians")["command"])

# %% [markdown]
# ## The velocity field at several times
#
# Sampling runs *backwards* in t, so a particle moves along $-u_t(x)$. `viz.velocity_field` draws
# $-u_t$ on a 15 x 15 grid for the MLP (top) and for the exact flow (bottom); any callable
# `f(x, t)` works. At $t = 1$ every point is pushed toward the data mean; as $t \to 0$ the field
# splits toward the eight modes.

# %%
viz.velocity_field({"MLP": model, "exact": gmm.velocity}, times=(1.0, 0.7, 0.4, 0.1),
                   title="velocity fields: arrow = direction of motion while sampling, colour = speed |u| (per panel)")

# %% [markdown]
# ### Derivation: $\hat x_0$, $\hat x_1$ and the score from the velocity
#
# Take the conditional expectation given $x_t = x$ of the interpolant and of its time derivative:
#
# $$x = \alpha_t\,\hat x_0 + \sigma_t\,\hat x_1, \qquad u = \dot\alpha_t\,\hat x_0 + \dot\sigma_t\,\hat x_1,
# \qquad \hat x_0 = \mathbb E[x_0\mid x_t = x],\ \hat x_1 = \mathbb E[x_1\mid x_t = x].$$
#
# Two linear equations in two unknowns; with $D = \dot\alpha_t\sigma_t - \dot\sigma_t\alpha_t$,
#
# $$\hat x_0 = \frac{\sigma_t u - \dot\sigma_t x}{D}, \qquad \hat x_1 = \frac{\dot\alpha_t x - \alpha_t u}{D}.$$
#
# For the Linear path ($\dot\alpha_t = -1$, $\dot\sigma_t = 1$, $D = -1$): $\hat x_0 = x - t\,u$ and
# $\hat x_1 = x + (1 - t)\,u$. The score follows from $x_t \mid x_0 \sim \mathcal N(\alpha_t x_0, \sigma_t^2 I)$:
# $\nabla\log p_t(x) = \mathbb E\big[-(x - \alpha_t x_0)/\sigma_t^2 \,\big|\, x_t = x\big] = -\hat x_1/\sigma_t$
# (noise points away from the data, so the score points back). These are
# `dynamics.x0_from_velocity`, `noise_from_velocity` and `score_from_velocity`. Exercise 4 below
# checks $\hat x_0$ against the oracle, notebook 02's exercise 1 the score.

# %% [markdown]
# ## ODE trajectories from the same noise
#
# `dynamics.sample(model, x1, steps=..., record=True)` integrates with Euler steps and records the
# states $x_t$ and the predictions $\hat x_0(x_t) = x_t - t\,u_t(x_t)$ (Tweedie's formula for the
# Linear interpolant). The paths of the MLP and of the exact flow nearly coincide.

# %%
x1 = torch.randn(256, 2, generator=torch.Generator().manual_seed(1))
trajs = {
    "MLP": dynamics.sample(model, x1, "linear", steps=20, record=True),
    "exact flow": dynamics.sample(gmm, x1, "linear", steps=20, record=True),
}
viz.trajectories_2d(trajs, n_show=64, gmm=gmm, title="Linear ODE, 20 Euler steps, the same 64 noises")

# %% [markdown]
# ## How good is the model? Compare with the oracle
#
# Two checks: the relative velocity error on exact samples of $p_t$ (they come from
# `gmm.sample_marginal`), and the **energy distance** between generated samples and exact
# samples. We use its unbiased estimate, which is 0 on average for two sets from the same
# distribution; the "floor" line shows how much it fluctuates between two independent exact sets
# of the same size. Values within a couple of floor standard deviations of 0 are
# indistinguishable from exact sampling at this sample size.

# %%
g = torch.Generator().manual_seed(2)
for t in (0.9, 0.5, 0.2, 0.05):
    x = gmm.sample_marginal(2000, t, generator=g)
    with torch.no_grad():
        u_mlp = model(x, torch.full((2000,), t))
    u_true = gmm.velocity(x, t)
    rel = ((u_mlp - u_true).norm(dim=1) / u_true.norm(dim=1)).median()
    print(f"t = {t:4.2f}: median relative velocity error {rel:.3f}")

# %%
n = 5000 if FULL else 2000
g = torch.Generator().manual_seed(3)
exact = gmm.sample(n, generator=g)
x1 = torch.randn(n, 2, generator=g)
floor = metrics.energy_distance_floor(gmm.sample, n, generator=g, repeats=5, unbiased=True)
print(f"floor (two exact sample sets of {n}): {floor.mean:+.4f} ± {floor.std:.4f}")
for steps in (2, 5, 20, 100):
    ed_mlp = metrics.energy_distance(dynamics.sample(model, x1, steps=steps).x, exact, unbiased=True)
    ed_exact = metrics.energy_distance(dynamics.sample(gmm, x1, steps=steps).x, exact, unbiased=True)
    print(f"{steps:3d} Euler steps: energy distance  MLP {ed_mlp:+.4f}   exact flow {ed_exact:+.4f}")

# %% [markdown]
# With 2 Euler steps both the MLP and the exact flow are far off: that is discretisation, not the
# model. From about 20 steps on, both are indistinguishable from exact samples at this sample
# size: velocity errors of a few percent barely move the distribution of the samples (the
# energy distance with more samples, `FULL = True`, is more sensitive).

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
    raise NotImplementedError  # your code: return (x_t, target)


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
    raise NotImplementedError  # your code: a scalar tensor


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
    raise NotImplementedError  # your code


exercises.check_gaussian_velocity(my_gaussian_velocity)


# %% [markdown]
# ### Exercise 4 · $\hat x_0$ from the velocity
#
# Write `my_x0_hat(x, u, t)` for the Linear path (see the derivation above: $\hat x_0 = x - t\,u$). With
# the exact velocity it must give the oracle's posterior mean `gmm.x0`.

# %%
def my_x0_hat(x, u, t):
    raise NotImplementedError  # your code


exercises.check_x0_hat(my_x0_hat)


# %% [markdown]
# ### Exercise 5 · An Euler sampler
#
# Write `my_euler(velocity, x1, steps)`: start at $x_1$ and take `steps` Euler steps on the uniform
# grid from $t = 1$ to $0$, $x \leftarrow x + (t_{k+1} - t_k)\,u_{t_k}(x)$ (`velocity(x, t)` takes `t` of
# shape (B,)). The check compares with `dynamics.sample`.

# %%
def my_euler(velocity, x1, steps):
    raise NotImplementedError  # your code


exercises.check_euler_sampler(my_euler)

# %% [markdown]
# ### Going further
#
# Open questions, without a check:
#
# - **Another data set.** Train on `"moons"` or `"checkerboard"` (`toy2d.sample`). There is no oracle
#   there: measure the energy distance against fresh data samples instead, and find how many training
#   steps it takes to reach the floor.
# - **Solvers.** `dynamics.sample(..., solver="heun")` costs two velocity evaluations per step. At equal
#   NFE (e.g. 10 Euler steps vs 5 Heun steps), which is closer to the exact samples?
# - **Another interpolant.** Train with `"cosine"` or `"vp"` instead of `"linear"` and plot the ODE
#   trajectories. Why are they more curved, and what does that mean for a 5-step sampler?
# - **Where is the model worst?** Plot the relative velocity error against t on a fine grid. Why does it
#   grow near t = 0, and why does that matter less for sampling than it seems?
