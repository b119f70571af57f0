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
# # 03 · From the Linear to the VP interpolant
#
# A model trained on the Linear path ($\alpha_t = 1 - t$, $\sigma_t = t$) can be used on any other
# path with the same data, e.g. the **variance-preserving** (VP) path of diffusion models,
# $\bar\alpha_r = e^{-T(r)/2}$, $\bar\sigma_r = \sqrt{1 - e^{-T(r)}}$ with
# $T(r) = \tfrac12 r^2(\beta_{\max} - \beta_{\min}) + r\beta_{\min}$. Two paths with the same
# **signal-to-noise ratio** $\alpha/\sigma$ describe the same noisy data up to a scale, so
# (Kim et al. 2025, Sec. 3.2) for target time $r$:
#
# $$t_r = \mathrm{snr}^{-1}_{\text{Linear}}\!\big(\bar\alpha_r/\bar\sigma_r\big),\quad s_r = \bar\sigma_r/\sigma_{t_r},\quad
# \bar u_r(x) = \frac{\dot s_r}{s_r}\,x + s_r\,\dot t_r\,u_{t_r}\!\big(x/s_r\big).$$
#
# `interpolants.convert(model, source="linear", target="vp")` is this formula.

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

from toyflow import dynamics, interpolants, metrics, pretrained, rewards, search, viz
from toyflow.data import toy2d

lin, vp = interpolants.Linear(), interpolants.VP()
gmm = toy2d.eight_gaussians_gmm()  # the exact Linear-path flow

# %% [markdown]
# ### Derivation: why matching the SNR works
#
# Use the same $(x_0, x_1)$ on both paths. Pick $t_r$ with $\alpha_{t_r}/\sigma_{t_r} = \bar\alpha_r/\bar\sigma_r$
# and $s_r = \bar\sigma_r/\sigma_{t_r}$; then $s_r\alpha_{t_r} = \bar\sigma_r\,\alpha_{t_r}/\sigma_{t_r} = \bar\alpha_r$, so
#
# $$s_r\,x_{t_r} = s_r\alpha_{t_r}x_0 + s_r\sigma_{t_r}x_1 = \bar\alpha_r x_0 + \bar\sigma_r x_1 = \bar x_r .$$
#
# The VP state is the Linear state at the matched time, scaled: $p^{\text{VP}}_r$ is $p^{\text{Linear}}_{t_r}$
# pushed through $x \mapsto s_r x$, and $\mathbb E[x_0 \mid \bar x_r = x] = \mathbb E[x_0 \mid x_{t_r} = x/s_r]$.
# Differentiating $\bar x_r = s_r x_{t_r}$ in $r$ and conditioning on $\bar x_r = x$ gives the converted velocity:
#
# $$\bar u_r(x) = \dot s_r\,\frac{x}{s_r} + s_r\,\dot t_r\,u_{t_r}(x/s_r).$$
#
# On the Linear path $\alpha/\sigma = (1-t)/t$, so $t_r = 1/(1 + \bar\alpha_r/\bar\sigma_r)$ (`lin.snr_inverse`).
# Exercises 1–5 rebuild each piece and check it against the exact VP oracle.

# %% [markdown]
# ## Matching the signal-to-noise ratio
#
# Left: $\alpha/\sigma$ of both paths (log scale). The VP path stays close to pure noise for a
# long time (SNR < 0.2 until $r \approx 0.6$) and then rushes to the data. Right: the Linear time
# $t_r$ with the same SNR, and the scale $s_r$ between the two states.

# %%
r = torch.linspace(0.005, 0.995, 199, dtype=torch.float64)
conv = interpolants.ConvertedVelocity(gmm, source=lin, target=vp)
t_r, s_r, dt_r, ds_r = conv.source_time_and_scale(r)

fig, axs = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
for sched, name in ((lin, "Linear"), (vp, "VP")):
    c = sched(r)
    axs[0].plot(r, c.alpha / c.sigma, label=name)
axs[0].set(yscale="log", xlabel="time (1 = noise, 0 = data)", ylabel="SNR  $\\alpha/\\sigma$",
           title="signal-to-noise ratio")
axs[0].legend()
axs[1].plot(r, t_r, label="Linear time $t_r$ with the same SNR")
axs[1].plot(r, s_r, label="scale $s_r = \\bar\\sigma_r / \\sigma_{t_r}$")
axs[1].plot(r, r, c="0.7", ls=":", label="identity")
axs[1].set(xlabel="VP time r", title="the scale-time map")
axs[1].legend(fontsize="small");

# %% [markdown]
# `snr_inverse` inverts the SNR in closed form; a round trip recovers the time:

# %%
for sched in (lin, vp):
    c = sched(r)
    print(f"{sched!r:32s} max |snr_inverse(alpha/sigma) - t| = {(sched.snr_inverse(c.alpha / c.sigma) - r).abs().max():.1e}")

# %% [markdown]
# ## The conversion is exact
#
# For a Gaussian mixture we know the VP-path velocity in closed form
# (`gmm.with_schedule("vp")`). Converting the exact Linear velocity must give it to float64
# round-off, at every time and everywhere in space.

# %%
gmm_vp = gmm.with_schedule("vp")
u_vp = interpolants.convert(gmm, source="linear", target="vp")
g = torch.Generator().manual_seed(0)
for rr in (0.95, 0.7, 0.4, 0.1, 0.01):
    x = gmm_vp.sample_marginal(1000, rr, generator=g, dtype=torch.float64)
    rt = torch.full((1000,), rr, dtype=torch.float64)
    err = (u_vp(x, rt) - gmm_vp.velocity(x, rt)).abs().max()
    print(f"r = {rr:4.2f}: max |converted - exact VP velocity| = {err:.1e}")

# %% [markdown]
# With a *learned* model the formula still holds, but only the second term carries the model (and
# its error, multiplied by $s_r\dot t_r$); the first term $(\dot s_r/s_r)\,x$ is exact. Where the
# two terms nearly cancel, the converted velocity is small and its *relative* error is much larger
# than the model's own error at $t_r$. Worth knowing before running VP-SDE search with an
# imperfect model:

# %%
model = pretrained.load("2d-8gaussians")
u_model_vp = interpolants.convert(model, source="linear", target="vp")
print(" r     t_r    s_r dt_r/dr   median rel. error: MLP at t_r (Linear)   converted MLP (VP)")
for rr in (0.8, 0.7, 0.5, 0.3, 0.1, 0.05):
    x = gmm_vp.sample_marginal(2000, rr, generator=g)
    rt = torch.full((2000,), rr)
    t_src, s, dt, _ = (float(v) for v in conv.source_time_and_scale(torch.tensor([rr], dtype=torch.float64)))
    with torch.no_grad():
        u_true = gmm_vp.velocity(x, rt)
        rel_vp = ((u_model_vp(x, rt) - u_true).norm(dim=1) / u_true.norm(dim=1)).median()
        x_lin, t_lin = x / s, torch.full((2000,), t_src)
        u_lin = gmm.velocity(x_lin, t_lin)
        rel_lin = ((model(x_lin, t_lin) - u_lin).norm(dim=1) / u_lin.norm(dim=1)).median()
    print(f"{rr:4.2f}  {t_src:5.3f}  {s * dt:8.2f}      {rel_lin:22.3f}   {rel_vp:22.3f}")

# %% [markdown]
# ## Sampling on the VP path
#
# The converted model is sampled like any other: `dynamics.sample(u_vp, x1, "vp", ...)`. From the
# same noise, the VP SDE's predictions $\hat x_0$ (bottom right) stay near the centre for longer
# and then go almost straight to a mode: on a uniform grid in its own time, the VP path spends
# its first steps at a very low SNR, where all its noise is injected.

# %%
x1 = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
trajs = {
    "Linear SDE": dynamics.sample(gmm, x1, "linear", steps=20, sde=True, generator=torch.Generator().manual_seed(2), record=True),
    "VP SDE": dynamics.sample(u_vp, x1, "vp", steps=20, sde=True, generator=torch.Generator().manual_seed(2), record=True),
}
viz.trajectories_2d(trajs, n_show=64, gmm=gmm, title="exact flow, 20 steps, $g_t = 3t^2$ in each path's own time")

# %% [markdown]
# ## Does VP widen the search space?
#
# The paper argues that the VP SDE gives search more room: the predictions $\hat x_0$ of the
# proposals drawn **from the same state** are more diverse. We can measure it directly: SVDD draws
# its proposals from the current particle, and `record=True` keeps them all
# (`history.proposals_x0[k]`, shape (runs, M, 2)). The diversity of one step's proposals is their
# mean pairwise distance (`metrics.diversity`); `history.proposal_diversity()` averages it over
# the runs, one value per grid step.

# %%
task_gmm, reward = rewards.task("rare-mode")
runs = 32 if FULL else 16
settings = [("square", 3.0), ("square", 10.0)]
diversity = {}
for diffusion, eta in settings:
    for mode in ("linear-sde", "vp-sde"):
        res = search.run("svdd", task_gmm, reward, mode=mode, budget=200, steps=10, runs=runs, shape=(2,),
                         generator=torch.Generator().manual_seed(0), record=True, diffusion=diffusion, eta=eta)
        diversity[(mode, eta)] = res.history.proposal_diversity()[1:10].tolist()  # steps k = 1 .. 9
        print(f"eta = {eta:4g}, {viz.mode_label(mode)}: mean reward {res.rewards.mean():.3f}")

# %%
vp_t_lin = conv.source_time_and_scale(torch.linspace(1, 0, 11, dtype=torch.float64)[1:-1])[0].numpy()
lin_t = np.linspace(1, 0, 11)[1:-1]
fig, axs = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained", sharey=True)
for (mode, eta), d in diversity.items():
    style = {"color": "C0" if mode == "linear-sde" else "C3", "ls": "-" if eta == 3.0 else "--", "marker": "o"}
    axs[0].plot(range(1, 10), d, label=f"{viz.mode_label(mode)}, η = {eta:g}", **style)
    axs[1].plot(lin_t if mode == "linear-sde" else vp_t_lin, d, **style)
axs[0].set(xlabel="grid step k (uniform grid, 10 steps)", ylabel="diversity of the proposals' $\\hat x_0$",
           title="per step index")
axs[1].set(xlabel="Linear-equivalent time $t$ of the step (same SNR)", title="per noise level", xlim=(1.02, -0.02))
axs[0].legend(fontsize="small")
fig.suptitle("SVDD on the rare-mode task (exact flow): spread of the proposals drawn from one state");

# %% [markdown]
# What this toy shows (with the exact flow, 10 uniform steps): with the paper's $g_t = 3t^2$,
# measured in each path's own clock, the **Linear SDE** proposals are the more diverse ones at
# every step. The VP path spends its first steps at a very low SNR (where $\hat x_0$ is close to
# the data mean whatever the noise) and its $g_t = 3r^2$ is small in the late steps where the
# decisions are made. The VP SDE however **tolerates a much larger $\eta$**: at $\eta = 10$ its
# proposals spread over the modes in the middle steps and its samples stay on the data, while the
# Linear SDE over-diffuses (see the mean rewards printed above). "Wider search" therefore depends
# on the diffusion schedule, the time grid and $\eta$ together: the exercises explore it.
#
# This is a statement about *this* task, not about VP in general. Here the mode is decided in the
# middle of the path, and the oracle's $\hat x_0$ (a posterior mean) is a blur at high noise, where
# the VP SDE injects its noise. When the decision is made at high noise and $\hat x_0$ is sharp
# there (images with a timestep-distilled model, the paper's setting; here the task scaled ×8
# with `models.FlowMapOracle`), the VP SDE's early noise is where the search needs it and VP-SDE
# beats the Linear SDE: notebook 07 walks through both regimes.

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
    raise NotImplementedError  # your code


exercises.check_snr_matched_time(my_linear_time)


# %% [markdown]
# ### Exercise 2 · The scale $s_r$
#
# Write `my_scale(r)` $= \bar\sigma_r/\sigma_{t_r}$. The check verifies that $s_r$ maps *both*
# Linear coefficients at $t_r$ onto the VP ones at $r$ (that is what equal SNR buys).

# %%
def my_scale(r):
    raise NotImplementedError  # your code


exercises.check_scale(my_scale)


# %% [markdown]
# ### Exercise 3 · The VP path's `snr_inverse`
#
# Solve $\bar\alpha_r/\bar\sigma_r = \rho$ for $r$ in closed form: $e^{-T}/(1 - e^{-T}) = \rho^2$ gives
# $T = -\log\big(\rho^2/(1+\rho^2)\big)$, then solve the quadratic
# $T = \tfrac12 r^2(\beta_{\max}-\beta_{\min}) + r\beta_{\min}$ ($\beta_{\min} = 0.1$, $\beta_{\max} = 20$).

# %%
def my_vp_snr_inverse(rho):
    raise NotImplementedError  # your code


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
    raise NotImplementedError  # your code


exercises.check_converted_velocity(my_converted_velocity)


# %% [markdown]
# ### Exercise 5 · $\hat x_0$ does not depend on the path
#
# Since $\bar x_r = s_r x_{t_r}$ is the same noisy data up to a scale, $\mathbb E[x_0 \mid \bar x_r = x]$
# on the VP path equals $\mathbb E[x_0 \mid x_{t_r} = x/s_r]$ on the Linear one. Write
# `my_x0_vp(x, r)` with the Linear oracle `gmm` only; the check compares with the VP oracle.

# %%
def my_x0_vp(x, r):
    raise NotImplementedError  # your code


exercises.check_x0_across_paths(my_x0_vp)

# %% [markdown]
# ### Going further
#
# Open questions, without a check:
#
# - **Equal footing.** Compare Linear SDE and VP SDE at the same *noise level*: choose the VP grid so
#   that its Linear-equivalent times are uniform (`vp.snr_inverse` of the Linear SNR). Which path gives
#   more diverse proposals now?
# - **The η sweep.** For η in (1, 3, 5, 10, 20), plot SVDD's mean reward and realism
#   (`metrics.realism`) for both modes. Where does each one break?
# - **Another target path.** Convert to `interpolants.Cosine()` and repeat the exactness check.
# - **β_max.** How does the diversity curve move with `interpolants.VP(beta_max=5)`, 10, 20?
