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
# # 04 · Inference-time scaling on 2D toy tasks
#
# We want samples that are both **realistic** (likely under the model) and **rewarded**: the
# ideal is the tilted distribution $p^*(x) \propto p_0(x)\,e^{r(x)/\lambda}$. Search methods spend
# a budget of **NFE** (number of function evaluations: one velocity evaluation of one particle)
# per sample to approach it. toyflow implements the paper's baselines and its method:
#
# | method | idea |
# | --- | --- |
# | BoN | N = budget / steps full samples, keep the best |
# | SoP | search over paths: re-noise and re-denoise a few paths, keep the best |
# | SMC | N particles, weights $e^{\Delta r/\lambda}$, resample when the ESS drops |
# | SVDD | at every step, M proposals from the current particle, keep the best |
# | CoDe | SVDD over blocks of L steps |
# | RBF | a batch of initial noises; then proposals one at a time, accept the first that beats the best so far; unused NFE roll over, everything left is spent at the last step (the official code) |
# | RBF-strict | the paper's text: one initial noise, the first improvement accepted at every step |
#
# Rewards are evaluated on $\hat x_0$ of a state. Every method runs in the three generation modes
# `linear-ode`, `linear-sde`, `vp-sde`.

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

RUNS = 128 if FULL else 48
METHODS = ("bon", "sop", "smc", "svdd", "code", "rbf")
SMC = {"lam": 0.05}  # the rewards are O(1): SMC needs a small temperature to reweight at all

# %% [markdown]
# ## RBF as the paper writes it
#
# The search engine runs all runs together in packed tensors, which is fast but hard to read.
# Every method also exists as the paper's pseudo-code, one run at a time:
# `search.run(..., engine="textbook")` (`toyflow/search/textbook/`). The tests check that the two
# engines give the same samples where their random numbers line up, and the same distributions
# otherwise. Here is RBF:
#
# In pseudo-code, for one run with budget $B$, a grid $t_0 = 1 > t_1 > \dots > t_K = 0$ and $S = K - 1$
# search steps (`toyflow/search/textbook/rbf.py`, printed below):
#
# 1. draw $n_0 = \max(1, \lfloor B/20\rfloor)$ noises at $t_0$, keep the one whose $\hat x_0$ has the best
#    reward; `best` $\leftarrow$ its reward ($n_0$ NFE);
# 2. for each search step $j = 0, \dots, S-1$:
#    - quota $Q_j$ = the allocation's share + what earlier steps left unused (at the last step: all
#      that is left), clamped to keep one NFE for each later step;
#    - draw candidates $y \leftarrow$ one SDE step $t_j \to t_{j+1}$ from the held particle, one at a
#      time (1 NFE each: the velocity at $t_{j+1}$, from which $\hat x_0(y)$ and its reward);
#    - accept the first $y$ whose reward beats `best` and stop drawing; if none does within $Q_j$,
#      keep the step's best candidate; the unused $Q_j$ rolls over;
# 3. take the free final step $x_K = \hat x_0(x_{K-1})$.
#
# Run as the official code does (`"rbf"`: the rest is spent at the last step), the NFE per step add
# up to $B$; exercise 1 rebuilds this ledger.

# %%
import inspect

from toyflow.search.textbook import rbf as textbook_rbf

print(inspect.getsource(textbook_rbf.rbf))
gmm, reward = rewards.task("rare-mode")
for engine in ("fast", "textbook"):
    res = search.run("rbf", gmm, reward, mode="linear-sde", budget=60, runs=1, shape=(2,), engine=engine,
                     generator=torch.Generator().manual_seed(0), proposals_per_tick=1)
    print(f"{engine:8s} NFE per step {res.nfe_per_step[0].tolist()}, sample {res.samples[0].tolist()}")

# %% [markdown]
# ## The three toy tasks and their tilted targets
#
# Each task is a base mixture (the "pretrained model", here the *exact* flow so that only the
# search is being tested) and a reward: `rare-mode` (a bump on a mode with 2 % of the mass,
# differentiable), `counting` (minus a grid-cell count error, piecewise constant), `aesthetic`
# (a smooth tanh of a projection; two modes tie). `metrics.tilted_oracle` computes $p^*$ on a grid.

# %%
fig, axs = plt.subplots(1, 3, figsize=(13, 4.2), layout="constrained", sharey=True)
for ax, name in zip(axs, rewards.TASKS):
    gmm, reward = rewards.task(name)
    oracle = metrics.tilted_oracle(gmm, reward, lam=0.1, grid_size=160)
    base = gmm.sample(300, generator=torch.Generator().manual_seed(0))
    viz.tilted_target(oracle, {"base": base}, ax=ax, max_points=300)
    ax.set_title(f"{name}: $E_{{p^*}}[r]$ = {oracle.expected_reward:.2f}, $E_{{p_0}}[r]$ = {oracle.base_expected_reward:.2f}",
                 fontsize="medium")
fig.suptitle("tilted targets $p^*$ (grey, $\\lambda$ = 0.1) and samples of the base model");

# %% [markdown]
# ## Every method on the rare-mode task
#
# `search.run(method, model, reward, mode=..., budget=..., steps=..., runs=...)` runs `runs`
# independent searches at once and returns a `SearchResult` (samples, rewards, NFE per step and,
# with `record=True`, the full history).

# %%
gmm, reward = rewards.task("rare-mode")
results = {}
for i, m in enumerate(METHODS):
    results[m] = search.run(m, gmm, reward, mode="linear-sde", budget=200, steps=10, runs=RUNS, shape=(2,),
                            generator=torch.Generator().manual_seed(i), record=True, **(SMC if m == "smc" else {}))
for m, res in results.items():
    print(f"{viz.method_label(m):5s} mean reward {res.rewards.mean():.3f}   realism {metrics.realism(res.samples, gmm):6.2f}"
          f"   NFE spent {res.nfe.double().mean():6.1f} of {res.budget}")

# %% [markdown]
# ### Where the samples land
#
# One sample per run, over the tilted target. BoN can only reweight what the base model
# produces; the step-wise methods steer towards the rare mode.

# %%
oracle = metrics.tilted_oracle(gmm, reward, lam=0.1, grid_size=160)
fig, axs = plt.subplots(2, 3, figsize=(11, 7.4), sharex=True, sharey=True, layout="constrained")
for ax, (m, res) in zip(axs.ravel(), results.items()):
    viz.tilted_target(oracle, {m: res.samples}, ax=ax)
    ax.set_title(f"{viz.method_label(m)}: mean reward {res.rewards.mean():.2f}")
    if ax in axs[0]:
        ax.set_xlabel("")
fig.suptitle("rare-mode task: $p^*$ ($\\lambda$ = 0.1, grey) and one sample per run (Linear SDE, 200 NFE)");

# %% [markdown]
# ### Particle trajectories
#
# The history holds every held particle: `history.states` (runs, K + 1, N, 2), and
# `history.trajectory(run)` returns them as a `Trajectory` to plot. For the single-path methods
# (SVDD, RBF) `history.trajectory()` gives one path per run; for BoN we take the N parallel
# samples of one run; the chosen one ends on the rare mode only if one of them happened to go there.

# %%
trajs = {
    "BoN, run 0 (N = 20 samples)": results["bon"].history.trajectory(run=0),  # xs: (K + 1, N, 2)
    f"SVDD ({RUNS} runs)": results["svdd"].history.trajectory(),  # xs: (K + 1, R, 2)
    f"RBF ({RUNS} runs)": results["rbf"].history.trajectory(),
}
viz.trajectories_2d(trajs, show_x0=False, gmm=gmm, title="held particles of the search, Linear SDE")

# %% [markdown]
# ### Budget allocation per step
#
# BoN and SMC spend N NFE at every step. SVDD and CoDe spend a fixed quota per step. RBF stops a
# step at the first improving proposal and **rolls the unused quota over** to later steps; its
# per-step spending varies from run to run (error bars: std across runs).

# %%
viz.budget_allocation({m: results[m] for m in ("bon", "smc", "svdd", "code", "rbf")})

# %% [markdown]
# RBF step by step for a typical run (the one with the median final reward): every proposal's
# reward (grey circles: rejected, stars: accepted), and below, the quota each step received (its
# own share plus what rolled over) and what it spent. Try other runs: some find the rare mode at
# the first steps and spend almost nothing; some get stuck on another mode and spend their whole
# rollover at the last step.

# %%
median_run = int(results["rbf"].rewards.argsort()[RUNS // 2])
viz.rbf_steps(results["rbf"], run=median_run)

# %% [markdown]
# SMC's effective sample size: when the rewards of the particles start to differ, the weights
# concentrate, the ESS drops below the threshold and the particles are resampled.

# %%
viz.smc_ess(results["smc"])

# %% [markdown]
# ## The three tasks, three modes
#
# One budget (100 NFE), every method and mode; `toyflow.benchmark.run_cell` returns a tidy row
# and `toyflow.demo.format_table` prints them. In the Linear ODE the step-wise methods have
# nothing to choose from (every proposal is the same), which is the paper's motivation for the SDE.

# %%
rows = []
for name in rewards.TASKS:
    task = benchmark.make_task(name, "oracle")
    for m in ("bon", "smc", "svdd", "rbf"):
        for mode in search.MODES:
            rows.append(benchmark.run_cell(task, m, mode, 100, steps=10, runs=RUNS,
                                           options=SMC if m == "smc" else None))
for name in rewards.TASKS:
    print(format_table([r for r in rows if r["task"] == name], title=f"task: {name}, budget 100"), end="\n\n")

# %% [markdown]
# Two more things to read in these tables. On the aesthetic task SVDD in the Linear SDE reaches
# the highest reward at a much lower realism: it pushes the samples off the modes along the
# reward direction (**reward hacking**; the reward keeps growing outside the data). And on these
# toys as defined, with 10 uniform steps and $g_t = 3t^2$, the VP SDE does not beat the Linear SDE
# for the step-wise methods: the mode is decided at mid noise, where the Linear SDE injects its
# noise, and the oracle's $\hat x_0$ is blurry at high noise, where the VP SDE injects its own.
# Notebook 07 shows the other regime (the task ×8 with a sharp $\hat x_0$), where VP-SDE and RBF win
# as in the paper.

# %% [markdown]
# ## A small scaling curve
#
# Mean reward against the budget (bands: ± standard error over the runs). The command
# `toyflow bench search` runs the same grid from the shell and writes a CSV.

# %%
budgets = (25, 50, 100, 200, 400) if FULL else (50, 100, 200)
task = benchmark.make_task("rare-mode", "oracle")
rows = [benchmark.run_cell(task, m, mode, b, steps=10, runs=RUNS, options=SMC if m == "smc" else None)
        for m in ("bon", "smc", "svdd", "rbf") for mode in ("linear-sde", "vp-sde") for b in budgets]
fig = viz.scaling_curves(rows, title="rare-mode task, exact flow: mean reward vs NFE budget")
fig.set_size_inches(7.5, 4.2)
fig

# %% [markdown]
# ## Gradient guidance: DPS
#
# The rare-mode reward is differentiable, so DPS can add $(1/\lambda)\nabla_x r(\hat x_0)$ to the
# drift, and RBF+DPS combines it with RBF. On the counting task (piecewise constant) they refuse
# with an explanation.

# %%
for m in ("dps", "rbf+dps"):
    res = search.run(m, gmm, reward, mode="linear-sde", budget=200, steps=10, runs=RUNS, shape=(2,),
                     generator=torch.Generator().manual_seed(0))  # lam = 1 (default)
    print(f"{viz.method_label(m):8s} mean reward {res.rewards.mean():.3f}  realism {metrics.realism(res.samples, gmm):.2f}")
counting_gmm, counting_reward = rewards.task("counting")
try:
    search.run("dps", counting_gmm, counting_reward, budget=200, shape=(2,))
except ValueError as e:
    print("counting + DPS:", e)

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
    raise NotImplementedError  # your code: a list of steps ints


exercises.check_rbf_ledger(my_rbf_ledger)


# %% [markdown]
# ### Exercise 2 · SMC's weights and effective sample size
#
# Write `my_smc_weights(r_prev, r_new, lam)` returning the normalised weights
# $w_i \propto e^{(r^{\text{new}}_i - r^{\text{prev}}_i)/\lambda}$ (use a softmax: the exponentials
# overflow for small $\lambda$) and the ESS $1/\sum_i w_i^2$.

# %%
def my_smc_weights(r_prev, r_new, lam):
    raise NotImplementedError  # your code: (w, ess)


exercises.check_smc_weights(my_smc_weights)


# %% [markdown]
# ### Exercise 3 · $\mathbb E_{p^*}[r]$ by importance sampling
#
# Base samples $x_i \sim p_0$ reweighted by $e^{r(x_i)/\lambda}$ (self-normalised) estimate the
# tilted target's expected reward. Write `my_tilted_expectation(samples, reward, lam)`; the check also
# compares it with the grid value of `metrics.tilted_oracle`.

# %%
def my_tilted_expectation(samples, reward, lam):
    raise NotImplementedError  # your code


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
    raise NotImplementedError  # your code


exercises.check_bon_expected_max(my_bon_expected_max)


# %% [markdown]
# ### Exercise 5 · A reward that can be hacked
#
# Write `my_hacking_reward(x)` ((B, 2) → (B,)) with a sharp peak *off* the data of the 8 Gaussians
# (e.g. at the centre of the circle). Then run a few methods on it: which ones find the peak, and what
# does `metrics.realism` say?

# %%
def my_hacking_reward(x):
    raise NotImplementedError  # your code


exercises.check_hacking_reward(my_hacking_reward)

# %% [markdown]
# ### Going further
#
# Open questions, without a check:
#
# - **A learned model.** Replace the exact flow by `toyflow.pretrained.load("2d-rare-mode")` and rerun
#   the table. Which method and mode lose the most?
# - **RBF's options.** Compare `"rbf"`, `"rbf-strict"` and `"rbf"` with `initial_particles=1` at
#   budgets 50 to 400: where does the difference come from?
# - **SMC's temperature.** Sweep `lam` from 0.01 to 1 and plot the mean reward and the diversity of the
#   samples. Relate the result to $p^*$ with the same $\lambda$.
# - **Fair budgets.** SoP and RBF-strict may not spend their whole budget (`res.nfe`): re-plot the
#   scaling curve against the NFE actually spent (`x="nfe_mean"` in `viz.scaling_curves`).
