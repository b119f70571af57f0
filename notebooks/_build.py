"""Write (and optionally execute) the toyflow notebooks from the cell lists below.

    python notebooks/_build.py                 # write all notebooks, without outputs
    python notebooks/_build.py --execute       # write and execute them (outputs saved in place)
    python notebooks/_build.py 02 04 --execute # only the notebooks whose names start with 02 or 04

The notebooks are thin on purpose: prose, a few toyflow calls, plots. Library code lives in the
package; the one exception is notebook 06, whose point is to write an allocation scheme.
Execution uses nbclient with the "python3" kernel, the notebooks folder as working directory,
and prints each notebook's wall time and file size.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

FULL_CELL = "FULL = False  # True: longer, better settings"

SETUP = """\
%matplotlib inline
%config InlineBackend.figure_format = 'png'
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets: plain progress bars
import matplotlib.pyplot as plt
import numpy as np
import torch

plt.rcParams["figure.dpi"] = 80  # also the resolution of toyflow.viz figures shown inline
"""


def md(text: str):
    return new_markdown_cell(textwrap.dedent(text).strip("\n"))


def code(text: str):
    return new_code_cell(textwrap.dedent(text).strip("\n"))


ONE_THREAD = "torch.set_num_threads(1)  # tiny 2D batches: one thread is fastest, and robust on a busy machine\n"


def setup(imports: str, one_thread: bool = True):
    """The second cell of every notebook: inline PNG figures at a moderate resolution, then imports."""
    return new_code_cell(SETUP + (ONE_THREAD if one_thread else "") + "\n" + textwrap.dedent(imports).strip("\n"))


# =============================================================================================
# 01 flow matching in 2D
# =============================================================================================
NB01 = [
    md(r"""
    # 01 · Flow matching in 2D

    A **flow model** turns noise into data by integrating a velocity field. toyflow follows the
    convention of Kim et al. (2025): **t = 0 is data, t = 1 is noise**,

    $$x_t = \alpha_t x_0 + \sigma_t x_1, \qquad x_1 \sim \mathcal N(0, I),$$

    and sampling integrates $\dot x = u_t(x)$ from $t = 1$ down to $t = 0$. For the *Linear*
    (rectified-flow) interpolant $\alpha_t = 1 - t$, $\sigma_t = t$. The velocity is the
    conditional expectation $u_t(x) = \mathbb E[\dot\alpha_t x_0 + \dot\sigma_t x_1 \mid x_t = x]$,
    and flow matching learns it by regression:

    $$\mathcal L = \mathbb E_{t, x_0, x_1}\,\big\|u_\theta(x_t, t) - (\dot\alpha_t x_0 + \dot\sigma_t x_1)\big\|^2 .$$

    On a Gaussian mixture every one of these quantities is available in closed form
    (`toyflow.models.GaussianMixtureFlow`), so we can check the learned model against the truth.
    """),
    code(FULL_CELL),
    setup("""
    from toyflow import dynamics, metrics, pretrained, viz
    from toyflow.data import toy2d
    from toyflow.models import VelocityMLP
    from toyflow.train import TrainConfig, train_flow
    """),
    md("""
    ## The data and its exact flow

    Eight Gaussians on a circle of radius 2 (std 0.1). `toy2d.eight_gaussians_gmm()` is the same
    distribution as a `GaussianMixtureFlow`: the *oracle*.
    """),
    code("""
    g = torch.Generator().manual_seed(0)
    data = toy2d.sample("8gaussians", 20_000, generator=g)
    gmm = toy2d.eight_gaussians_gmm()  # exact velocity, x0-prediction, score, log-density

    fig, ax = plt.subplots(figsize=(3.6, 3.6), layout="constrained")
    ax.scatter(data[:2000, 0], data[:2000, 1], s=2, alpha=0.5)
    ax.set(aspect="equal", xlim=(-3, 3), ylim=(-3, 3), xlabel="$x[0]$", ylabel="$x[1]$",
           title="2000 training points (8 Gaussians)");
    """),
    md("""
    ## Train a small MLP for a few seconds

    `train_flow` does conditional flow matching with Adam, a cosine learning rate and EMA weights.
    With `FULL = False` we train only a few hundred steps to see the loss go down, and then use the
    shipped model (`pretrained.load("2d-8gaussians")`, trained with the command printed below) for
    the figures.
    """),
    code("""
    cfg = TrainConfig(steps=3000 if FULL else 500, batch_size=256, lr=2e-3, seed=0, progress=False)
    result = train_flow(VelocityMLP(dim=2, hidden=128, depth=3), data, "linear", cfg)
    print(f"{result.steps} steps in {result.wall_time:.1f} s on {result.device}; "
          f"mean loss over the last 50 steps: {np.mean(result.losses[-50:]):.3f}")

    fig, ax = plt.subplots(figsize=(5, 2.8), layout="constrained")
    ax.plot(result.losses, lw=0.6)
    ax.set(xlabel="optimiser step", ylabel="flow-matching loss", title="training loss");
    """),
    code("""
    model = result.model if FULL else pretrained.load("2d-8gaussians")
    print("model used below:", "just trained" if FULL else "shipped: " + pretrained.info("2d-8gaussians")["command"])
    """),
    md(r"""
    ## The velocity field at several times

    Sampling runs *backwards* in t, so a particle moves along $-u_t(x)$. `viz.velocity_field` draws
    $-u_t$ on a 15 x 15 grid for the MLP (top) and for the exact flow (bottom); any callable
    `f(x, t)` works. At $t = 1$ every point is pushed toward the data mean; as $t \to 0$ the field
    splits toward the eight modes.
    """),
    code("""
    viz.velocity_field({"MLP": model, "exact": gmm.velocity}, times=(1.0, 0.7, 0.4, 0.1),
                       title="velocity fields: arrow = direction of motion while sampling, colour = speed |u| (per panel)")
    """),
    md(r"""
    ## ODE trajectories from the same noise

    `dynamics.sample(model, x1, steps=..., record=True)` integrates with Euler steps and records the
    states $x_t$ and the predictions $\hat x_0(x_t) = x_t - t\,u_t(x_t)$ (Tweedie's formula for the
    Linear interpolant). The paths of the MLP and of the exact flow nearly coincide.
    """),
    code("""
    x1 = torch.randn(256, 2, generator=torch.Generator().manual_seed(1))
    trajs = {
        "MLP": dynamics.sample(model, x1, "linear", steps=20, record=True),
        "exact flow": dynamics.sample(gmm, x1, "linear", steps=20, record=True),
    }
    viz.trajectories_2d(trajs, n_show=64, gmm=gmm, title="Linear ODE, 20 Euler steps, the same 64 noises")
    """),
    md(r"""
    ## How good is the model? Compare with the oracle

    Two checks: the relative velocity error on exact samples of $p_t$ (they come from
    `gmm.sample_marginal`), and the **energy distance** between generated samples and exact
    samples. We use its unbiased estimate, which is 0 on average for two sets from the same
    distribution; the "floor" line shows how much it fluctuates between two independent exact sets
    of the same size. Values within a couple of floor standard deviations of 0 are
    indistinguishable from exact sampling at this sample size.
    """),
    code("""
    g = torch.Generator().manual_seed(2)
    for t in (0.9, 0.5, 0.2, 0.05):
        x = gmm.sample_marginal(2000, t, generator=g)
        with torch.no_grad():
            u_mlp = model(x, torch.full((2000,), t))
        u_true = gmm.velocity(x, t)
        rel = ((u_mlp - u_true).norm(dim=1) / u_true.norm(dim=1)).median()
        print(f"t = {t:4.2f}: median relative velocity error {rel:.3f}")
    """),
    code("""
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
    """),
    md(r"""
    With 2 Euler steps both the MLP and the exact flow are far off: that is discretisation, not the
    model. From about 20 steps on, both are indistinguishable from exact samples at this sample
    size: velocity errors of a few percent barely move the distribution of the samples (the
    energy distance with more samples, `FULL = True`, is more sensitive).

    ## Exercises

    1. **Another data set.** Train on `"moons"` or `"checkerboard"` (`toy2d.sample`). There is no
       oracle there: measure the energy distance against fresh data samples instead, and find how
       many training steps it takes to reach the floor.
    2. **Solvers.** `dynamics.sample(..., solver="heun")` costs two velocity evaluations per step.
       At equal NFE (e.g. 10 Euler steps vs 5 Heun steps), which is closer to the exact samples?
    3. **Another interpolant.** Train with `"cosine"` or `"vp"` instead of `"linear"` (the loss
       target changes, the code does not) and plot the ODE trajectories. Why are they more curved,
       and what does that mean for a 5-step sampler?
    4. **One Gaussian by hand.** For $p_0 = \mathcal N(\mu, s^2 I)$ derive $u_t(x)$ for the Linear
       interpolant and check your formula against `GaussianMixtureFlow([mu], s).velocity`.
    5. **Where is the model worst?** Plot the relative velocity error against t on a fine grid.
       Why does it grow near t = 0, and why does that matter less for sampling than it seems?
    """),
]

# =============================================================================================
# 02 ODE -> SDE
# =============================================================================================
NB02 = [
    md(r"""
    # 02 · From the ODE to an SDE with the same marginals

    Inference-time search needs **randomness**: to choose among several continuations of a
    particle, the sampler must be able to propose different ones. A flow model gives a
    deterministic ODE, but for any diffusion coefficient $g_t \ge 0$ the SDE

    $$dx = \Big[u_t(x) - \frac{g_t^2}{2}\,\nabla\log p_t(x)\Big]\,dt + g_t\,d\bar w
    \quad\text{(integrated from } t = 1 \text{ to } 0)$$

    has the **same marginals** $p_t$ (Kim et al. 2025, Sec. 3.1). One Euler–Maruyama step from
    $t$ to $t - h$ is

    $$x \leftarrow x - h\,u + h\,\frac{g_t^2}{2}\,\nabla\log p_t(x) + g_t\sqrt h\,z .$$

    The score is not a new network: it follows from the velocity,
    $\nabla\log p_t(x) = -\hat x_1/\sigma_t$ with $\hat x_1 = (\dot\alpha_t x - \alpha_t u)/(\dot\alpha_t\sigma_t - \dot\sigma_t\alpha_t)$.
    """),
    code(FULL_CELL),
    setup("""
    from toyflow import dynamics, metrics, pretrained, viz
    from toyflow.data import toy2d

    gmm = toy2d.eight_gaussians_gmm()          # exact flow of the 8 Gaussians
    model = pretrained.load("2d-8gaussians")   # shipped MLP trained on the same data
    """),
    md(r"""
    ## The score from the velocity

    `dynamics.score_from_velocity(x, u, t, schedule)` applies the formula above. With the *exact*
    velocity it must give the exact score (`gmm.score`) to round-off; with the MLP's velocity it
    inherits the model's error, amplified by $1/\sigma_t$ as $t \to 0$.
    """),
    code("""
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
    """),
    md(r"""
    ## Diffusion schedules $g_t$

    `dynamics.diffusion_schedule(name, eta, schedule)` returns $g(t)$. The paper's default is
    `"square"`, $g_t = \eta t^2$ with $\eta = 3$: a lot of noise early (where the sample is still
    undecided), none at the end (so the last steps only sharpen the sample).
    """),
    code("""
    t = torch.linspace(0, 1, 201)
    fig, ax = plt.subplots(figsize=(5.5, 3.4), layout="constrained")
    for name in ("square", "linear", "constant", "sigma"):
        gt = dynamics.diffusion_schedule(name, eta=1.0, schedule="linear")(t)
        ax.plot(t, gt, label=name + (" (Linear path: = linear)" if name == "sigma" else ""),
                ls=":" if name == "sigma" else "-", lw=2.5 if name == "sigma" else 1.5)
    ax.plot(t, dynamics.diffusion_schedule("sigma", eta=1.0, schedule="vp")(t), ls="--", label="sigma (VP path)")
    ax.set(xlabel="t (1 = noise, 0 = data)", ylabel="$g_t$ for $\\\\eta = 1$", title="diffusion schedules")
    ax.legend(title="diffusion");
    """),
    md(r"""
    ## ODE vs SDE from the same noise

    $\eta = 0$ is the ODE. With $\eta = 1$ and $\eta = 3$ the paths wander, and so do the
    predictions $\hat x_0(x_t)$ (bottom row): early on, an SDE particle can still change mode.
    """),
    code("""
    x1 = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    trajs = {
        f"η = {eta:g}": dynamics.sample(model, x1, "linear", steps=20, sde=eta > 0, eta=eta,
                                        generator=torch.Generator().manual_seed(2), record=True)
        for eta in (0.0, 1.0, 3.0)
    }
    viz.trajectories_2d(trajs, n_show=64, gmm=gmm, title="shipped MLP, Linear path, 20 steps, $g_t = \\\\eta t^2$")
    """),
    md(r"""
    ## Same marginals? Check it with the energy distance

    We sample the **exact** flow (so only the discretisation error is left) with the ODE and the
    SDE at several step counts, and compare to exact data with the (unbiased) energy distance,
    next to its fluctuation between two exact sample sets (the floor, see notebook 01). Values
    within a couple of floor standard deviations of 0 mean "indistinguishable from exact samples".
    """),
    code("""
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
    """),
    md(r"""
    The marginals at intermediate times agree too: the heatmaps are the exact $p_t$, the dots are
    SDE particles ($\eta = 3$, 50 steps) at the same times.
    """),
    code("""
    traj = dynamics.sample(gmm, x1[:300], "linear", steps=50, sde=True, eta=3.0,
                           generator=torch.Generator().manual_seed(5), record=True)
    viz.density_panels(gmm, times=(1.0, 0.6, 0.3, 0.1, 0.0), traj=traj)
    """),
    md(r"""
    ## Why this matters for search: proposals from one state

    Take **one** particle at $t = 0.6$ and make 64 one-step proposals to $t = 0.5$. Their
    predictions $\hat x_0$ are all identical for the ODE (nothing to choose from), and spread out
    for the SDE, for $\eta = 3$ towards the neighbouring modes: a search method can pick the one
    with the best reward.
    """),
    code("""
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
        ax.scatter(x0_hat[:, 0], x0_hat[:, 1], s=12, alpha=0.6, label="$\\\\hat x_0$ of proposals")
        ax.scatter(state[:1, 0], state[:1, 1], marker="x", c="k", s=60, label="current state $x_{0.6}$")
        ax.set(aspect="equal", xlim=(-3, 3), ylim=(-3, 3), xlabel="$x[0]$",
               title=f"η = {eta:g}: diversity {metrics.diversity(x0_hat):.2f}")
    axs[0].set_ylabel("$x[1]$")
    axs[0].legend(loc="upper left", fontsize="small");
    """),
    md(r"""
    ## Exercises

    1. **Stiffness.** For $\eta = 10$, find the number of steps the SDE needs to reach the noise
       floor. Which term of the update becomes large, and where in t?
    2. **Other schedules.** Repeat the energy-distance table with `diffusion="constant"` and
       `diffusion="sigma"`. Which schedule gives the most proposal diversity at $t = 0.6$ for the
       same energy distance at 50 steps?
    3. **The last step.** `dynamics.step` replaces the final step to $t = 0$ by $\hat x_0$. Show
       that for the Linear interpolant this equals the Euler step, and explain why the score term
       cannot be used at $t = 0$.
    4. **A wrong score.** Replace the score by half of it in the update (implement the step by hand
       with `dynamics.score_from_velocity`). What happens to the marginals? Measure it.
    5. **Model error.** Use the MLP instead of `gmm` in the energy-distance table. Does the SDE
       hide or amplify the model's error compared with the ODE?
    """),
]

# =============================================================================================
# 03 Linear -> VP
# =============================================================================================
NB03 = [
    md(r"""
    # 03 · From the Linear to the VP interpolant

    A model trained on the Linear path ($\alpha_t = 1 - t$, $\sigma_t = t$) can be used on any other
    path with the same data, e.g. the **variance-preserving** (VP) path of diffusion models,
    $\bar\alpha_r = e^{-T(r)/2}$, $\bar\sigma_r = \sqrt{1 - e^{-T(r)}}$ with
    $T(r) = \tfrac12 r^2(\beta_{\max} - \beta_{\min}) + r\beta_{\min}$. Two paths with the same
    **signal-to-noise ratio** $\alpha/\sigma$ describe the same noisy data up to a scale, so
    (Kim et al. 2025, Sec. 3.2) for target time $r$:

    $$t_r = \mathrm{snr}^{-1}_{\text{Linear}}\!\big(\bar\alpha_r/\bar\sigma_r\big),\quad s_r = \bar\sigma_r/\sigma_{t_r},\quad
    \bar u_r(x) = \frac{\dot s_r}{s_r}\,x + s_r\,\dot t_r\,u_{t_r}\!\big(x/s_r\big).$$

    `interpolants.convert(model, source="linear", target="vp")` is this formula.
    """),
    code(FULL_CELL),
    setup("""
    from toyflow import dynamics, interpolants, metrics, pretrained, rewards, search, viz
    from toyflow.data import toy2d

    lin, vp = interpolants.Linear(), interpolants.VP()
    gmm = toy2d.eight_gaussians_gmm()  # the exact Linear-path flow
    """),
    md("""
    ## Matching the signal-to-noise ratio

    Left: $\\alpha/\\sigma$ of both paths (log scale). The VP path stays close to pure noise for a
    long time (SNR < 0.2 until $r \\approx 0.6$) and then rushes to the data. Right: the Linear time
    $t_r$ with the same SNR, and the scale $s_r$ between the two states.
    """),
    code("""
    r = torch.linspace(0.005, 0.995, 199, dtype=torch.float64)
    conv = interpolants.ConvertedVelocity(gmm, source=lin, target=vp)
    t_r, s_r, dt_r, ds_r = conv.source_time_and_scale(r)

    fig, axs = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for sched, name in ((lin, "Linear"), (vp, "VP")):
        c = sched(r)
        axs[0].plot(r, c.alpha / c.sigma, label=name)
    axs[0].set(yscale="log", xlabel="time (1 = noise, 0 = data)", ylabel="SNR  $\\\\alpha/\\\\sigma$",
               title="signal-to-noise ratio")
    axs[0].legend()
    axs[1].plot(r, t_r, label="Linear time $t_r$ with the same SNR")
    axs[1].plot(r, s_r, label="scale $s_r = \\\\bar\\\\sigma_r / \\\\sigma_{t_r}$")
    axs[1].plot(r, r, c="0.7", ls=":", label="identity")
    axs[1].set(xlabel="VP time r", title="the scale-time map")
    axs[1].legend(fontsize="small");
    """),
    md("""
    `snr_inverse` inverts the SNR in closed form; a round trip recovers the time:
    """),
    code("""
    for sched in (lin, vp):
        c = sched(r)
        print(f"{sched!r:32s} max |snr_inverse(alpha/sigma) - t| = {(sched.snr_inverse(c.alpha / c.sigma) - r).abs().max():.1e}")
    """),
    md(r"""
    ## The conversion is exact

    For a Gaussian mixture we know the VP-path velocity in closed form
    (`gmm.with_schedule("vp")`). Converting the exact Linear velocity must give it to float64
    round-off, at every time and everywhere in space.
    """),
    code("""
    gmm_vp = gmm.with_schedule("vp")
    u_vp = interpolants.convert(gmm, source="linear", target="vp")
    g = torch.Generator().manual_seed(0)
    for rr in (0.95, 0.7, 0.4, 0.1, 0.01):
        x = gmm_vp.sample_marginal(1000, rr, generator=g, dtype=torch.float64)
        rt = torch.full((1000,), rr, dtype=torch.float64)
        err = (u_vp(x, rt) - gmm_vp.velocity(x, rt)).abs().max()
        print(f"r = {rr:4.2f}: max |converted - exact VP velocity| = {err:.1e}")
    """),
    md(r"""
    With a *learned* model the formula still holds, but only the second term carries the model (and
    its error, multiplied by $s_r\dot t_r$); the first term $(\dot s_r/s_r)\,x$ is exact. Where the
    two terms nearly cancel, the converted velocity is small and its *relative* error is much larger
    than the model's own error at $t_r$. Worth knowing before running VP-SDE search with an
    imperfect model:
    """),
    code("""
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
    """),
    md("""
    ## Sampling on the VP path

    The converted model is sampled like any other: `dynamics.sample(u_vp, x1, "vp", ...)`. From the
    same noise, the VP SDE's predictions $\hat x_0$ (bottom right) stay near the centre for longer
    and then go almost straight to a mode: on a uniform grid in its own time, the VP path spends
    its first steps at a very low SNR, where all its noise is injected.
    """),
    code("""
    x1 = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    trajs = {
        "Linear SDE": dynamics.sample(gmm, x1, "linear", steps=20, sde=True, generator=torch.Generator().manual_seed(2), record=True),
        "VP SDE": dynamics.sample(u_vp, x1, "vp", steps=20, sde=True, generator=torch.Generator().manual_seed(2), record=True),
    }
    viz.trajectories_2d(trajs, n_show=64, gmm=gmm, title="exact flow, 20 steps, $g_t = 3t^2$ in each path's own time")
    """),
    md(r"""
    ## Does VP widen the search space?

    The paper argues that the VP SDE gives search more room: the predictions $\hat x_0$ of the
    proposals drawn **from the same state** are more diverse. We can measure it directly: SVDD draws
    its proposals from the current particle, and `record=True` keeps them all
    (`history.proposals_x0[k]`, shape (runs, M, 2)). The diversity of one step's proposals is their
    mean pairwise distance (`metrics.diversity`); `history.proposal_diversity()` averages it over
    the runs, one value per grid step.
    """),
    code("""
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
    """),
    code("""
    vp_t_lin = conv.source_time_and_scale(torch.linspace(1, 0, 11, dtype=torch.float64)[1:-1])[0].numpy()
    lin_t = np.linspace(1, 0, 11)[1:-1]
    fig, axs = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained", sharey=True)
    for (mode, eta), d in diversity.items():
        style = {"color": "C0" if mode == "linear-sde" else "C3", "ls": "-" if eta == 3.0 else "--", "marker": "o"}
        axs[0].plot(range(1, 10), d, label=f"{viz.mode_label(mode)}, η = {eta:g}", **style)
        axs[1].plot(lin_t if mode == "linear-sde" else vp_t_lin, d, **style)
    axs[0].set(xlabel="grid step k (uniform grid, 10 steps)", ylabel="diversity of the proposals' $\\\\hat x_0$",
               title="per step index")
    axs[1].set(xlabel="Linear-equivalent time $t$ of the step (same SNR)", title="per noise level", xlim=(1.02, -0.02))
    axs[0].legend(fontsize="small")
    fig.suptitle("SVDD on the rare-mode task (exact flow): spread of the proposals drawn from one state");
    """),
    md(r"""
    What this toy shows (with the exact flow, 10 uniform steps): with the paper's $g_t = 3t^2$,
    measured in each path's own clock, the **Linear SDE** proposals are the more diverse ones at
    every step. The VP path spends its first steps at a very low SNR (where $\hat x_0$ is close to
    the data mean whatever the noise) and its $g_t = 3r^2$ is small in the late steps where the
    decisions are made. The VP SDE however **tolerates a much larger $\eta$**: at $\eta = 10$ its
    proposals spread over the modes in the middle steps and its samples stay on the data, while the
    Linear SDE over-diffuses (see the mean rewards printed above). "Wider search" therefore depends
    on the diffusion schedule, the time grid and $\eta$ together: the exercises explore it.

    This is a statement about *this* task, not about VP in general. Here the mode is decided in the
    middle of the path, and the oracle's $\hat x_0$ (a posterior mean) is a blur at high noise, where
    the VP SDE injects its noise. When the decision is made at high noise and $\hat x_0$ is sharp
    there (images with a timestep-distilled model, the paper's setting; here the task scaled ×8
    with `models.FlowMapOracle`), the VP SDE's early noise is where the search needs it and VP-SDE
    beats the Linear SDE: notebook 07 walks through both regimes.

    ## Exercises

    1. **Equal footing.** Compare Linear SDE and VP SDE at the same *noise level*: choose the VP
       grid so that its Linear-equivalent times are uniform (hint: `vp.snr_inverse` of the Linear
       SNR). Which path gives more diverse proposals now?
    2. **The η sweep.** For η in (1, 3, 5, 10, 20), plot SVDD's mean reward and realism
       (`metrics.realism`) for both modes. Where does each one break?
    3. **Another target path.** Convert to the `Cosine()` interpolant instead of VP and repeat the
       exactness check. What changes in $s_r$ and $t_r$?
    4. **β_max.** `interpolants.VP(beta_max=...)` changes how long the VP path stays near noise.
       How does the diversity curve move with β_max = 5, 10, 20?
    5. **Derive it.** Show that $x \mapsto s_r x$ maps $p^{\text{Linear}}_{t_r}$ to $p^{\text{VP}}_r$, and
       derive the converted velocity by differentiating $\bar x_r = s_r\,x_{t_r}$ in $r$.
    """),
]

# =============================================================================================
# 04 inference-time scaling in 2D
# =============================================================================================
NB04 = [
    md(r"""
    # 04 · Inference-time scaling on 2D toy tasks

    We want samples that are both **realistic** (likely under the model) and **rewarded**: the
    ideal is the tilted distribution $p^*(x) \propto p_0(x)\,e^{r(x)/\lambda}$. Search methods spend
    a budget of **NFE** (number of function evaluations: one velocity evaluation of one particle)
    per sample to approach it. toyflow implements the paper's baselines and its method:

    | method | idea |
    | --- | --- |
    | BoN | N = budget / steps full samples, keep the best |
    | SoP | search over paths: re-noise and re-denoise a few paths, keep the best |
    | SMC | N particles, weights $e^{\Delta r/\lambda}$, resample when the ESS drops |
    | SVDD | at every step, M proposals from the current particle, keep the best |
    | CoDe | SVDD over blocks of L steps |
    | RBF | a batch of initial noises; then proposals one at a time, accept the first that beats the best so far; unused NFE roll over, everything left is spent at the last step (the official code) |
    | RBF-strict | the paper's text: one initial noise, the first improvement accepted at every step |

    Rewards are evaluated on $\hat x_0$ of a state. Every method runs in the three generation modes
    `linear-ode`, `linear-sde`, `vp-sde`.
    """),
    code(FULL_CELL),
    setup("""
    from toyflow import benchmark, metrics, rewards, search, viz
    from toyflow.demo import format_table

    RUNS = 128 if FULL else 48
    METHODS = ("bon", "sop", "smc", "svdd", "code", "rbf")
    SMC = {"lam": 0.05}  # the rewards are O(1): SMC needs a small temperature to reweight at all
    """),
    md(r"""
    ## RBF as the paper writes it

    The search engine runs all runs together in packed tensors, which is fast but hard to read.
    Every method also exists as the paper's pseudo-code, one run at a time:
    `search.run(..., engine="textbook")` (`toyflow/search/textbook/`). The tests check that the two
    engines give the same samples where their random numbers line up, and the same distributions
    otherwise. Here is RBF:
    """),
    code("""
    import inspect

    from toyflow.search.textbook import rbf as textbook_rbf

    print(inspect.getsource(textbook_rbf.rbf))
    gmm, reward = rewards.task("rare-mode")
    for engine in ("fast", "textbook"):
        res = search.run("rbf", gmm, reward, mode="linear-sde", budget=60, runs=1, shape=(2,), engine=engine,
                         generator=torch.Generator().manual_seed(0), proposals_per_tick=1)
        print(f"{engine:8s} NFE per step {res.nfe_per_step[0].tolist()}, sample {res.samples[0].tolist()}")
    """),
    md(r"""
    ## The three toy tasks and their tilted targets

    Each task is a base mixture (the "pretrained model", here the *exact* flow so that only the
    search is being tested) and a reward: `rare-mode` (a bump on a mode with 2 % of the mass,
    differentiable), `counting` (minus a grid-cell count error, piecewise constant), `aesthetic`
    (a smooth tanh of a projection; two modes tie). `metrics.tilted_oracle` computes $p^*$ on a grid.
    """),
    code("""
    fig, axs = plt.subplots(1, 3, figsize=(13, 4.2), layout="constrained", sharey=True)
    for ax, name in zip(axs, rewards.TASKS):
        gmm, reward = rewards.task(name)
        oracle = metrics.tilted_oracle(gmm, reward, lam=0.1, grid_size=160)
        base = gmm.sample(300, generator=torch.Generator().manual_seed(0))
        viz.tilted_target(oracle, {"base": base}, ax=ax, max_points=300)
        ax.set_title(f"{name}: $E_{{p^*}}[r]$ = {oracle.expected_reward:.2f}, $E_{{p_0}}[r]$ = {oracle.base_expected_reward:.2f}",
                     fontsize="medium")
    fig.suptitle("tilted targets $p^*$ (grey, $\\\\lambda$ = 0.1) and samples of the base model");
    """),
    md("""
    ## Every method on the rare-mode task

    `search.run(method, model, reward, mode=..., budget=..., steps=..., runs=...)` runs `runs`
    independent searches at once and returns a `SearchResult` (samples, rewards, NFE per step and,
    with `record=True`, the full history).
    """),
    code("""
    gmm, reward = rewards.task("rare-mode")
    results = {}
    for i, m in enumerate(METHODS):
        results[m] = search.run(m, gmm, reward, mode="linear-sde", budget=200, steps=10, runs=RUNS, shape=(2,),
                                generator=torch.Generator().manual_seed(i), record=True, **(SMC if m == "smc" else {}))
    for m, res in results.items():
        print(f"{viz.method_label(m):5s} mean reward {res.rewards.mean():.3f}   realism {metrics.realism(res.samples, gmm):6.2f}"
              f"   NFE spent {res.nfe.double().mean():6.1f} of {res.budget}")
    """),
    md(r"""
    ### Where the samples land

    One sample per run, over the tilted target. BoN can only reweight what the base model
    produces; the step-wise methods steer towards the rare mode.
    """),
    code("""
    oracle = metrics.tilted_oracle(gmm, reward, lam=0.1, grid_size=160)
    fig, axs = plt.subplots(2, 3, figsize=(11, 7.4), sharex=True, sharey=True, layout="constrained")
    for ax, (m, res) in zip(axs.ravel(), results.items()):
        viz.tilted_target(oracle, {m: res.samples}, ax=ax)
        ax.set_title(f"{viz.method_label(m)}: mean reward {res.rewards.mean():.2f}")
        if ax in axs[0]:
            ax.set_xlabel("")
    fig.suptitle("rare-mode task: $p^*$ ($\\\\lambda$ = 0.1, grey) and one sample per run (Linear SDE, 200 NFE)");
    """),
    md(r"""
    ### Particle trajectories

    The history holds every held particle: `history.states` (runs, K + 1, N, 2), and
    `history.trajectory(run)` returns them as a `Trajectory` to plot. For the single-path methods
    (SVDD, RBF) `history.trajectory()` gives one path per run; for BoN we take the N parallel
    samples of one run; the chosen one ends on the rare mode only if one of them happened to go there.
    """),
    code("""
    trajs = {
        "BoN, run 0 (N = 20 samples)": results["bon"].history.trajectory(run=0),  # xs: (K + 1, N, 2)
        f"SVDD ({RUNS} runs)": results["svdd"].history.trajectory(),  # xs: (K + 1, R, 2)
        f"RBF ({RUNS} runs)": results["rbf"].history.trajectory(),
    }
    viz.trajectories_2d(trajs, show_x0=False, gmm=gmm, title="held particles of the search, Linear SDE")
    """),
    md(r"""
    ### Budget allocation per step

    BoN and SMC spend N NFE at every step. SVDD and CoDe spend a fixed quota per step. RBF stops a
    step at the first improving proposal and **rolls the unused quota over** to later steps; its
    per-step spending varies from run to run (error bars: std across runs).
    """),
    code("""
    viz.budget_allocation({m: results[m] for m in ("bon", "smc", "svdd", "code", "rbf")})
    """),
    md("""
    RBF step by step for a typical run (the one with the median final reward): every proposal's
    reward (grey circles: rejected, stars: accepted), and below, the quota each step received (its
    own share plus what rolled over) and what it spent. Try other runs: some find the rare mode at
    the first steps and spend almost nothing; some get stuck on another mode and spend their whole
    rollover at the last step.
    """),
    code("""
    median_run = int(results["rbf"].rewards.argsort()[RUNS // 2])
    viz.rbf_steps(results["rbf"], run=median_run)
    """),
    md(r"""
    SMC's effective sample size: when the rewards of the particles start to differ, the weights
    concentrate, the ESS drops below the threshold and the particles are resampled.
    """),
    code("""
    viz.smc_ess(results["smc"])
    """),
    md("""
    ## The three tasks, three modes

    One budget (100 NFE), every method and mode; `toyflow.benchmark.run_cell` returns a tidy row
    and `toyflow.demo.format_table` prints them. In the Linear ODE the step-wise methods have
    nothing to choose from (every proposal is the same), which is the paper's motivation for the SDE.
    """),
    code("""
    rows = []
    for name in rewards.TASKS:
        task = benchmark.make_task(name, "oracle")
        for m in ("bon", "smc", "svdd", "rbf"):
            for mode in search.MODES:
                rows.append(benchmark.run_cell(task, m, mode, 100, steps=10, runs=RUNS,
                                               options=SMC if m == "smc" else None))
    for name in rewards.TASKS:
        print(format_table([r for r in rows if r["task"] == name], title=f"task: {name}, budget 100"), end="\\n\\n")
    """),
    md("""
    Two more things to read in these tables. On the aesthetic task SVDD in the Linear SDE reaches
    the highest reward at a much lower realism: it pushes the samples off the modes along the
    reward direction (**reward hacking**; the reward keeps growing outside the data). And on these
    toys as defined, with 10 uniform steps and $g_t = 3t^2$, the VP SDE does not beat the Linear SDE
    for the step-wise methods: the mode is decided at mid noise, where the Linear SDE injects its
    noise, and the oracle's $\hat x_0$ is blurry at high noise, where the VP SDE injects its own.
    Notebook 07 shows the other regime (the task ×8 with a sharp $\hat x_0$), where VP-SDE and RBF win
    as in the paper.
    """),
    md("""
    ## A small scaling curve

    Mean reward against the budget (bands: ± standard error over the runs). The command
    `toyflow bench search` runs the same grid from the shell and writes a CSV.
    """),
    code("""
    budgets = (25, 50, 100, 200, 400) if FULL else (50, 100, 200)
    task = benchmark.make_task("rare-mode", "oracle")
    rows = [benchmark.run_cell(task, m, mode, b, steps=10, runs=RUNS, options=SMC if m == "smc" else None)
            for m in ("bon", "smc", "svdd", "rbf") for mode in ("linear-sde", "vp-sde") for b in budgets]
    fig = viz.scaling_curves(rows, title="rare-mode task, exact flow: mean reward vs NFE budget")
    fig.set_size_inches(7.5, 4.2)
    fig
    """),
    md(r"""
    ## Gradient guidance: DPS

    The rare-mode reward is differentiable, so DPS can add $(1/\lambda)\nabla_x r(\hat x_0)$ to the
    drift, and RBF+DPS combines it with RBF. On the counting task (piecewise constant) they refuse
    with an explanation.
    """),
    code("""
    for m in ("dps", "rbf+dps"):
        res = search.run(m, gmm, reward, mode="linear-sde", budget=200, steps=10, runs=RUNS, shape=(2,),
                         generator=torch.Generator().manual_seed(0))  # lam = 1 (default)
        print(f"{viz.method_label(m):8s} mean reward {res.rewards.mean():.3f}  realism {metrics.realism(res.samples, gmm):.2f}")
    counting_gmm, counting_reward = rewards.task("counting")
    try:
        search.run("dps", counting_gmm, counting_reward, budget=200, shape=(2,))
    except ValueError as e:
        print("counting + DPS:", e)
    """),
    md(r"""
    ## Exercises

    1. **A learned model.** Replace the exact flow by the shipped MLP,
       `toyflow.pretrained.load("2d-rare-mode")`, and rerun the table. Which method and mode lose
       the most? (Notebook 03 explains one reason for VP.)
    2. **RBF's options.** `"rbf"` runs as the official code does (a batch of `max(1, budget // 20)`
       initial noises, everything left spent at the last step); `"rbf-strict"` is the literal
       reading of the paper's text (one initial noise, the first improvement accepted at every step).
       Compare them, and `"rbf"` with `initial_particles=1`, at budgets 50 to 400: where does the
       difference come from?
    3. **SMC's temperature.** Sweep `lam` from 0.01 to 1 and plot the mean reward and the diversity
       (`metrics.diversity`) of the samples. Relate the result to the tilted target $p^*$ with the
       same $\lambda$.
    4. **Reward hacking.** Define a reward with a sharp peak just *off* the data (between two modes).
       Which methods find it, and what does `metrics.realism` say? Plot
       `viz.realism_reward_scatter` for your grid.
    5. **Fair budgets.** SoP and RBF-strict may not spend their whole budget (see `res.nfe`). Re-plot the
       scaling curve against the NFE actually spent (`x="nfe_mean"` in `viz.scaling_curves`).
    """),
]

# =============================================================================================
# 05 MNIST
# =============================================================================================
NB05 = [
    md(r"""
    # 05 · Steering an MNIST flow model to a digit

    The same search methods, on images: a small UNet flow model trained on MNIST (shipped as
    `pretrained.load("mnist-flow")`), a **reward classifier** (`"mnist-reward"`) whose log
    probability of the target digit is the reward, and a **held-out evaluator** (`"mnist-evaluator"`,
    another classifier trained on other images) that judges the results. Judging with the reward
    model itself would reward adversarial images; the evaluator does not share its blind spots.
    """),
    code(FULL_CELL),
    setup("""
    from toyflow import dynamics, metrics, pretrained, rewards, search, viz

    DIGIT = 7
    flow = pretrained.load("mnist-flow")
    classifier = pretrained.load("mnist-reward")
    evaluator = pretrained.load("mnist-evaluator")
    reward = rewards.mnist_digit(DIGIT, classifier)  # log p(7 | x0_hat), differentiable
    SHAPE = (1, 28, 28)
    STEPS = 10
    MODE = "linear-sde"           # try "vp-sde" (exercise 1)
    RUNS = 16 if FULL else 8      # images per method
    BUDGET = 200 if FULL else 60  # NFE per image (a UNet evaluation costs ~10-50 ms on a laptop CPU)
    METHODS = ("bon", "sop", "smc", "svdd", "code", "rbf") if FULL else ("bon", "smc", "svdd", "rbf")
    """, one_thread=False),
    md("""
    ## The base model

    Plain samples (Linear ODE, 20 steps) and one sample along its path: $x_t$ on top, the
    prediction $\\hat x_0(x_t)$ below.
    """),
    code("""
    x1 = torch.randn((16 if FULL else 8,) + SHAPE, generator=torch.Generator().manual_seed(0))
    traj = dynamics.sample(flow, x1, "linear", steps=20, record=True)
    base = traj.x
    print(f"base samples classified as {DIGIT} by the evaluator: {metrics.evaluator_accuracy(base, evaluator, DIGIT):.0%}")
    viz.image_grid(base, nrow=8, title="base samples (Linear ODE, 20 steps)")
    """),
    code("""
    viz.trajectory_strip(traj, index=0)
    """),
    md("""
    ## Each method, steered to the digit

    Every method gets the same NFE budget per image; we report the reward, the **evaluator's**
    accuracy on the target digit, and the NFE actually spent.
    """),
    code("""
    results = {}
    for i, m in enumerate(METHODS):
        opts = {"lam": 1.0} if m == "smc" else {}
        results[m] = search.run(m, flow, reward, mode=MODE, budget=BUDGET, steps=STEPS, runs=RUNS, shape=SHAPE,
                                generator=torch.Generator().manual_seed(10 + i), record=(m in ("rbf", "svdd", "bon")), **opts)
    print(f"{'method':8s} {'p(digit) by reward model':>24s} {'evaluator accuracy':>19s} {'NFE':>6s}")
    for m, res in results.items():
        acc = metrics.evaluator_accuracy(res.samples, evaluator, DIGIT)
        print(f"{viz.method_label(m):8s} {res.rewards.exp().mean():24.2f} {acc:19.0%} {res.nfe.double().mean():6.1f}")
    """),
    code("""
    grid = torch.cat([results[m].samples for m in METHODS])
    labels = [f"{p:.2f}" for m in METHODS for p in results[m].rewards.exp()]
    viz.image_grid(grid, nrow=RUNS, labels=labels,
                   title=f"{viz.mode_label(MODE)}, {BUDGET} NFE per image\\nrows: " + ", ".join(viz.method_label(m) for m in METHODS)
                         + f"\\nlabel: p({DIGIT} | x), reward model")
    """),
    md("""
    ## Where the budget goes

    NFE per denoising step (mean over runs), and RBF step by step for one image.
    """),
    code("""
    viz.budget_allocation({m: results[m] for m in METHODS if m != "sop"})
    """),
    code("""
    viz.rbf_steps(results["rbf"], run=0)
    """),
    md("""
    ## Exercises

    1. **Modes.** Rerun the table with `MODE = "linear-ode"` and `MODE = "vp-sde"`. Which methods
       need the SDE? With 10 uniform steps, does the VP SDE help here? Which of notebook 07's regimes
   is this flow in (is its $\hat x_0$ at t = 0.9 a sharp digit or a blur)?
    2. **Gradient guidance.** The digit reward is differentiable: add `"dps"` and `"rbf+dps"` with a
       few values of `lam`. Compare the reward model's confidence with the evaluator's accuracy: is
       gradient guidance fooling the reward model?
    3. **A non-differentiable reward.** Use `rewards.mnist_digit_thick(DIGIT)` (digit *and* thick
       strokes). Which methods still work, and what do the images look like?
    4. **Scaling.** Plot the evaluator accuracy against the budget (30 to 500 NFE) for BoN and RBF.
       `toyflow bench search --task mnist-digit` does this from the shell.
    5. **Diversity.** `metrics.feature_diversity(samples, evaluator)` measures how different the
       steered digits are. Which method collapses to one style of 7?
    """),
]

# =============================================================================================
# 06 custom allocation
# =============================================================================================
NB06 = [
    md(r"""
    # 06 · Prototype your own budget allocation

    SVDD, CoDe and RBF ask an **allocation scheme** how many proposals (NFE) each search step may
    use. toyflow ships `Uniform` (the paper's), `LinearDecay` and `Rollover` (RBF: a base scheme
    plus everything earlier steps left unused). A new scheme is a small subclass of
    `toyflow.search.AllocationScheme` with one method:

    ```python
    def quota(self, step, steps, budget_left, spent) -> int or (R,) tensor   # counters only
    def quota(self, state) -> int or (R,) tensor                             # the search state
    ```

    `step` runs over the *search steps* 0 … steps − 1, `budget_left` and `spent` are (R,) tensors
    per run (their sum is the run's whole search budget). The second form receives a frozen
    `search.AllocationState` with, per run, also the grid time `t`, the best reward so far, and
    what the previous step drew and whether it improved: a scheme can react to the search.
    Whatever you return is clamped so that every later step keeps at least one NFE: no run can
    exceed its budget.

    This notebook is the one place where we write code that could live in the library: the scheme
    is the experiment.
    """),
    code(FULL_CELL),
    setup("""
    from toyflow import benchmark, metrics, rewards, search, viz
    from toyflow.demo import format_table
    from toyflow.search import AllocationScheme, Rollover, Uniform

    RUNS = 128 if FULL else 64
    """),
    md(r"""
    ## A scheme: spend most in the middle

    On the toy tasks the mode of a sample is decided in the middle of the trajectory: early
    $\hat x_0$ are all near the data mean (proposals look alike) and late proposals can only
    polish. `MiddleHeavy` gives step $s$ a share proportional to $\sin(\pi (s + \tfrac12)/S)^p$.
    """),
    code("""
    class MiddleHeavy(AllocationScheme):
        \"\"\"Share of search step s proportional to sin(pi (s + 1/2) / steps) ** power.\"\"\"

        def __init__(self, power: float = 2.0):
            self.power = power

        def quota(self, step, steps, budget_left, spent):
            w = torch.sin(torch.pi * (torch.arange(steps) + 0.5) / steps) ** self.power
            total = budget_left + spent  # (R,) each run's search budget
            return torch.floor(total * w[step] / w.sum()).long()

        def __repr__(self):
            return f"MiddleHeavy(power={self.power:g})"


    total = torch.tensor([199])  # budget 200 minus the initial draw at t = 1
    print("Uniform      plan:", Uniform().plan(9, total)[0].tolist())
    print("MiddleHeavy  plan:", MiddleHeavy().plan(9, total)[0].tolist())
    """),
    md("""
    `plan(steps, total)` shows what each search step would get if it spent exactly its quota.
    The scheme plugs into SVDD directly, and into RBF wrapped in `Rollover` (so that what RBF
    leaves unused still rolls over).
    """),
    md("""
    ## Compare it with the built-in schemes

    Four variants on the rare-mode task (exact flow, Linear SDE), at three budgets: SVDD with
    `Uniform` and with `MiddleHeavy`; RBF with `Rollover(Uniform())` (the paper) and with
    `Rollover(MiddleHeavy())`. `benchmark.run_cell` gives one tidy row per setting; we rename the
    method column so the table and the plot tell the variants apart.
    """),
    code("""
    task = benchmark.make_task("rare-mode", "oracle")
    variants = {
        "svdd": ("svdd", {"allocation": Uniform()}),
        "SVDD, MiddleHeavy": ("svdd", {"allocation": MiddleHeavy()}),
        "rbf": ("rbf", {"allocation": Rollover(Uniform())}),
        "RBF, MiddleHeavy": ("rbf", {"allocation": Rollover(MiddleHeavy())}),
    }
    budgets = (25, 50, 100, 200, 400) if FULL else (30, 60, 120)
    rows = []
    for name, (method, options) in variants.items():
        for b in budgets:
            row = benchmark.run_cell(task, method, "linear-sde", b, steps=10, runs=RUNS, options=options)
            rows.append({**row, "method": name})
    print(format_table(rows, title=f"rare-mode task, exact flow, Linear SDE, {RUNS} runs"))
    """),
    md("""
    Read the table per budget: the reward column says whether moving proposals to the middle
    steps helps, the realism column whether it costs sample quality, and the NFE column what each
    variant spent (RBF, run as the official code does, spends all of it: whatever the quotas leave
    is drawn at the last search step).

    On this task `MiddleHeavy` does not help: SVDD does about as well as with `Uniform` (slightly
    worse, partly because it spends a few NFE less, see below), and RBF does clearly worse: RBF
    already moves unused budget to later steps by rolling it over, and a single proposal at the
    first steps removes its early exploration. Note also that `MiddleHeavy` rounds its quotas
    down and leaves a few NFE unused (27 of 30); `StaticAllocation` distributes the remainder
    (exercise 4). A negative result is still a result: exercises 1 and 2 look for better schemes.
    """),
    code("""
    fig = viz.scaling_curves(rows, title="rare-mode task: allocation schemes, Linear SDE")
    fig.set_size_inches(7.5, 4.2)
    fig
    """),
    md("""
    ## Where the budget goes

    One recorded search per variant at the middle budget. Left: the built-in schemes; right: the
    same methods with `MiddleHeavy`.
    """),
    code("""
    b = budgets[len(budgets) // 2]
    recorded = {
        name: search.run(method, task.model, task.reward, mode="linear-sde", budget=b, steps=10, runs=RUNS, shape=(2,),
                         generator=torch.Generator().manual_seed(0), record=True, **options)
        for name, (method, options) in variants.items()
    }
    fig, axs = plt.subplots(1, 2, figsize=(14, 4.2), sharey=True, layout="constrained")
    viz.budget_allocation({"svdd": recorded["svdd"], "rbf": recorded["rbf"]}, ax=axs[0],
                          title=f"built-in: Uniform / Rollover(Uniform), budget {b}")
    viz.budget_allocation({"svdd": recorded["SVDD, MiddleHeavy"], "rbf": recorded["RBF, MiddleHeavy"]}, ax=axs[1],
                          title=f"MiddleHeavy / Rollover(MiddleHeavy), budget {b}");
    """),
    code("""
    viz.rbf_steps(recorded["RBF, MiddleHeavy"], run=0)
    """),
    md(r"""
    ## A scheme that reacts to the search

    `quota(self, state)` sees the rewards: `StallBoost` gives a run an even share of what it has
    left, doubled after a step whose kept proposal did not improve on the best reward so far, and
    halved after one that did (the last step takes what is left). Every run gets its own quota.
    """),
    code("""
    class StallBoost(AllocationScheme):
        \"\"\"Even share of the budget left, x boost after a stalled step, / boost after an improving one.\"\"\"

        def __init__(self, boost: float = 2.0):
            self.boost = boost

        def quota(self, state):  # state: search.AllocationState, every field (R,)
            share = state.budget_left.double() / (state.steps - state.step).double()
            factor = torch.where(state.accepted, 1 / self.boost, self.boost).double()
            factor = torch.where(state.step == 0, torch.ones_like(factor), factor)
            q = torch.floor(share * factor).long()
            return torch.where(state.step == state.steps - 1, state.budget_left, q)


    b = budgets[len(budgets) // 2]
    for name, (method, options) in {"SVDD, Uniform": ("svdd", {}), "SVDD, StallBoost": ("svdd", {"allocation": StallBoost()}),
                                    "RBF, Rollover(Uniform)": ("rbf", {}),
                                    "RBF, Rollover(StallBoost)": ("rbf", {"allocation": Rollover(StallBoost())})}.items():
        res = search.run(method, task.model, task.reward, mode="linear-sde", budget=b, steps=10, runs=RUNS, shape=(2,),
                         generator=torch.Generator().manual_seed(0), **options)
        se = res.rewards.std() / RUNS**0.5
        print(f"{name:26s} budget {b}: mean reward {res.rewards.mean():.3f} ± {se:.3f}, NFE {res.nfe.double().mean():.0f}")
    """),
    md(r"""
    On this task `StallBoost` does not beat the uniform share, for SVDD or for RBF: writing a scheme
    that reacts to the search takes a dozen lines, finding one that helps is exercise 2.

    ## A search method of your own

    Methods are open in the same way: a small class on `search.SearchContext` (noise, velocity at a
    grid index charged to the NFE ledger, $\hat x_0$, the step, the reward), registered with
    `search.register`, then run by name like a built-in one (`examples/beam_search.py` is a fuller
    beam search; `toyflow bench search --methods examples/beam_search.py:BeamSearch` runs it from
    the shell). Here a greedy search keeps the best of `width` children at every step.
    """),
    code("""
    from dataclasses import dataclass


    @dataclass(frozen=True)
    class GreedyOptions:
        width: int = 4


    @search.register
    class Greedy(search.Method):
        \"\"\"Keep the best of `width` children at every grid step (1 + width (steps - 1) NFE).\"\"\"

        name, options = "greedy", GreedyOptions

        def minimum_budget(self, steps, opts):
            return 1 + opts.width * (steps - 1)

        def run(self, ctx, opts):
            R, W = ctx.runs, opts.width
            x = ctx.noise(R)
            u = ctx.velocity(x, 0)
            for k in range(ctx.steps - 1):
                z = ctx.noise(R * W) if ctx.needs_noise(k) else None
                y = ctx.step(x.repeat_interleave(W, 0), u.repeat_interleave(W, 0), k, z)  # (R W, 2) children
                uy = ctx.velocity(y, k + 1)
                best = ctx.reward(ctx.x0(y, uy, k + 1)).view(R, W).argmax(1) + torch.arange(R) * W
                x, u = y[best], uy[best]
            x_final = ctx.step(x, u, ctx.steps - 1)  # the last step is x0_hat: free
            return x_final, ctx.reward(x_final)


    for m, opts in (("svdd", {}), ("greedy", {"width": 8})):
        res = search.run(m, task.model, task.reward, mode="linear-sde", budget=1 + 8 * 9, steps=10, runs=RUNS,
                         shape=(2,), generator=torch.Generator().manual_seed(0), **opts)
        print(f"{m:7s} budget {1 + 8 * 9}: mean reward {res.rewards.mean():.3f}, NFE {res.nfe.double().mean():.0f}")
    """),
    md(r"""
    ## Exercises

    1. **Tune it.** Sweep `power` in (0.5, 1, 2, 4). Is there a best value, and does it depend on
       the budget?
    2. **Adaptive schemes.** `quota(self, state)` sees the rewards, the draws and the acceptances
       per run: write a scheme that beats `Uniform()` for SVDD or `Rollover(Uniform())` for RBF on
       the same budget (ideas: spend more where `state.best_reward` is still low, or at the grid
       times `state.t` where the last steps improved). Which task and mode make it easiest?
    3. **Another task.** Repeat the comparison on `counting` (piecewise-constant reward) and in the
       `vp-sde` mode. Does the middle still matter most?
    4. **Static schemes.** Re-implement `MiddleHeavy` as a `StaticAllocation` (define
       `weights(steps)` only). Check with `plan` that both give the same quotas, and read
       `StaticAllocation.cumulative` to see how rounding keeps the whole budget.
    5. **CoDe.** Pass your scheme to `"code"` (`block=2`): the scheme then sees blocks as steps.
       What does that change?
    """),
]

# =============================================================================================
# 07 regimes
# =============================================================================================
NB07 = [
    md(r"""
    # 07 · When does VP-SDE help, and why does RBF win?

    The paper's three ideas (ODE → SDE, Linear → VP, Rollover Budget Forcing) were shown on image
    models. On toyflow's 2D tasks *as first defined* two of them seem not to work: the VP-SDE is
    worse than the Linear SDE, and RBF is not the best method. This notebook shows that both
    outcomes are right, for two different **regimes**, and walks the mechanism step by step with
    the exact oracle:

    1. **where the decision is made** (the noise level at which a particle's mode is settled);
    2. **where each mode injects fresh noise** (the η ratio $g^2/g^2_{\text{DDPM}}$);
    3. **what $\hat x_0$ sees there** (a blurry posterior mean, or a sharp flow-map endpoint);
    4. proposal **diversity** and reward **headroom** per step, which follow from 1–3;
    5. the search results and **RBF's budget use**.

    Two tasks: `rare-mode` as defined (8 Gaussians of radius 2, std 0.1; a 2 % mode carries the
    reward), and the same task scaled ×8 (`rewards.task("rare-mode", scale=8)`: data and reward ×8,
    noise unchanged), whose modes separate at much higher noise, as the objects of an image do.
    """),
    code(FULL_CELL),
    setup("""
    from toyflow import benchmark, dynamics, metrics, rewards, search, viz
    from toyflow.demo import format_table
    from toyflow.models import FlowMapOracle

    RUNS = 64 if FULL else 24
    tasks = {"x1": rewards.task("rare-mode"), "x8": rewards.task("rare-mode", scale=8)}
    """),
    md(r"""
    ## 1. Where is the mode decided?

    Take $x_t \sim p_t$ and ask how well $x_t$ already determines its component: the posterior
    purity $D(t) = \mathbb E_{x_t}\big[\sum_k \pi_k(x_t)^2\big]$, with $\pi_k(x) = P(k \mid x_t = x)$
    from the oracle (`gmm.posterior_weights`). $D$ runs from $\sum_k w_k^2$ (nothing decided, pure
    noise) to 1 (the component is fixed). A search step can only change the outcome where $D$ is
    still rising: that is where the **decision** is made. The x axis is the noise level
    $\log(\sigma_t/\alpha_t)$, noise on the left, as sampling runs.
    """),
    code("""
    t = torch.linspace(0.02, 0.998, 70, dtype=torch.float64)
    level = torch.log(t / (1 - t))  # log(sigma / alpha) on the Linear path
    g = torch.Generator().manual_seed(0)
    purity = {}
    for name, (gmm, _) in tasks.items():
        vals = []
        for tk in t.tolist():
            x = gmm.sample_marginal(1000, tk, generator=g, dtype=torch.float64)
            vals.append(float((gmm.posterior_weights(x, tk) ** 2).sum(1).mean()))
        purity[name] = np.array(vals)

    fig, axs = plt.subplots(2, 1, figsize=(9, 7.5), layout="constrained", sharex=True)
    for name, style in (("x1", dict(color="0.35", ls="-")), ("x8", dict(color="C2", ls="-"))):
        axs[0].plot(level, purity[name], lw=2.2, label=f"rare-mode {name}", **style)
        half = float(level[np.argmin(np.abs(purity[name] - (purity[name].min() + purity[name].max()) / 2))])
        axs[0].axvline(half, **style, lw=0.8)
        print(f"rare-mode {name}: half-way decided at log(sigma/alpha) = {half:+.2f} (Linear t = {1 / (1 + np.exp(-half)):.3f})")
    axs[0].set(ylabel="posterior purity $D(t)$", title="where the mode is decided (thin lines: half-way)")
    axs[0].legend()
    viz.eta_ratio_plot(ax=axs[1], title="where each mode injects fresh noise (η ratio, 10-step grids)")
    axs[0].set_xlim(axs[1].get_xlim());
    """),
    md(r"""
    The decision window is where $D$ rises from 20 % to 90 % of its range. Which grid steps of each
    mode fall into it, and how much fresh noise do they carry?
    """),
    code("""
    from toyflow import interpolants

    grids = {}
    for mode, path in (("linear-sde", interpolants.Linear()), ("vp-sde", interpolants.VP())):
        tk = dynamics.time_grid("uniform", 10, dtype=torch.float64)[:-1]  # the grid times with a step after them
        c = path(tk)
        eta = dynamics.eta_ratio(path, dynamics.diffusion_schedule("square", 3.0, path), tk)
        grids[mode] = (torch.log(c.sigma / c.alpha).numpy(), eta.numpy())
    for name in ("x1", "x8"):
        d = purity[name]
        lo, hi = d.min(), d.max()
        inside = (d > lo + 0.2 * (hi - lo)) & (d < lo + 0.9 * (hi - lo))
        top, bottom = float(level[inside].max()), float(level[inside].min())
        print(f"rare-mode {name}: decision window log(sigma/alpha) from {top:+.1f} down to {bottom:+.1f}")
        for mode, (lvl, eta) in grids.items():
            sel = (lvl <= top) & (lvl >= bottom)
            print(f"   {viz.mode_label(mode):10s} {int(sel.sum())} grid steps inside, eta ratios "
                  + ", ".join(f"{e:.2f}" for e in eta[sel]))
    """),
    md(r"""
    Read the panels and the counts together. In the task as defined the mode is decided in the
    middle of the path, where the Linear SDE ($g = 3t^2$) takes several steps with a large η ratio
    and the VP SDE ($g = 3r^2$ in VP time) almost none: its fresh noise comes at high noise, where
    nothing is decided yet. Scaled ×8, the window moves to higher noise. Inside it both modes take
    two steps (the Linear ones even noisier), but *before* it the VP SDE's grid, uniform in its own
    time and so dense at high noise, takes three noisy steps (η from .45 down to .23) where the
    Linear SDE takes a single jump from pure noise. Those early steps can only help a search if
    $\hat x_0$ already tells where a particle will land, long before the data's posterior has
    settled: that is the next section. What makes a mode good for search is **the schedule with
    its grid, and what $\hat x_0$ can see at those steps**. Notebook 03's "VP widens the search
    space" holds in that setting, as in images with a distilled model; here, only for the ×8 task
    with the flow map.

    The η ratio is a property of the **schedule**, not of the path: it is unchanged when the SDE is
    moved between paths at equal noise levels (`dynamics.transport_diffusion`). `search.run(...,
    diffusion_path="vp")` runs the Linear path with the VP schedule, and the results follow the
    schedule (bench/RESULTS.md §2a, table (d)).

    ## 2. What $\hat x_0$ sees at high noise

    Per-step search ranks proposals by the reward of $\hat x_0$. For the flow-matching oracle
    $\hat x_0$ is the posterior mean $\mathbb E[x_0 \mid x_t]$: at high noise a blur between the
    modes, so the reward cannot tell the proposals apart even when they differ. A
    timestep-distilled model (the paper's FLUX.1-schnell) predicts instead the **endpoint of the
    ODE**, a sharp sample at every $t$. `models.FlowMapOracle(gmm)` is that exact flow map as a
    velocity model: $\hat x_0 = x - t\,u = \Phi(x, t)$ (one call = 1 NFE by convention).
    """),
    code("""
    gmm8, reward8 = tasks["x8"]
    flowmap8 = FlowMapOracle(gmm8)
    tt = 0.95  # high noise for the x8 task: log(sigma / alpha) = 2.9
    x = gmm8.sample_marginal(400, tt, generator=torch.Generator().manual_seed(1))
    x0_mean = gmm8.x0(x, tt)            # the oracle's x0_hat: the posterior mean
    x0_map = flowmap8.flow_map(x, tt)   # the flow map's x0_hat: where the ODE lands
    fig, axs = plt.subplots(1, 2, figsize=(9.5, 4.6), layout="constrained", sharex=True, sharey=True)
    for ax, x0, name in ((axs[0], x0_mean, "posterior mean"), (axs[1], x0_map, "flow map")):
        r = reward8(x0)
        sc = ax.scatter(x0[:, 0], x0[:, 1], c=r, cmap="viridis", vmin=0, vmax=1, s=9)
        ax.scatter(gmm8.means[:, 0], gmm8.means[:, 1], marker="x", c="C3", s=40)
        ax.set(title=f"$\\\\hat x_0$ = {name} at t = {tt}\\nreward spread (std) {float(r.std()):.3f}", aspect="equal")
    fig.colorbar(sc, ax=axs, label="reward of $\\\\hat x_0$");
    """),
    md(r"""
    ## 3. Proposal diversity and reward headroom, step by step

    SVDD draws its proposals from one state and keeps the best, so per step we can measure
    (`record=True`) the **diversity** of the proposals' $\hat x_0$ (mean pairwise distance,
    `history.proposal_diversity()`) and the **reward headroom**: how much the best proposal beats an
    average one, $\mathbb E[\max_j r_j - \operatorname{mean}_j r_j]$. Headroom is what a search step
    can gain; it needs both diversity *and* an $\hat x_0$ whose reward tells the proposals apart.
    """),
    code("""
    def headroom(history):
        out = []
        for r, mask in zip(history.proposal_rewards[1:-1], history.proposal_mask[1:-1]):
            r = torch.where(mask, r, torch.nan)
            out.append(float((r.nan_to_num(-torch.inf).max(1).values - r.nanmean(1)).mean()))
        return out

    settings = {"x1, oracle": (tasks["x1"][0], tasks["x1"][1]), "x8, oracle": (gmm8, reward8),
                "x8, flow map": (flowmap8, reward8)}
    fig, axs = plt.subplots(2, 3, figsize=(12, 6.2), layout="constrained", sharex=True)
    for j, (name, (model, reward)) in enumerate(settings.items()):
        for mode in ("linear-sde", "vp-sde"):
            res = search.run("svdd", model, reward, mode=mode, budget=100, steps=10, runs=RUNS, shape=(2,),
                             generator=torch.Generator().manual_seed(2), record=True)
            steps = np.arange(1, 10)
            st = viz.mode_style(mode)
            color = {"linear-sde": "C0", "vp-sde": "C3"}[mode]
            axs[0, j].plot(steps, res.history.proposal_diversity()[1:10], color=color, marker=st["marker"],
                           ls=st["linestyle"], label=viz.mode_label(mode))
            axs[1, j].plot(steps, headroom(res.history), color=color, marker=st["marker"], ls=st["linestyle"])
            print(f"{name:13s} {viz.mode_label(mode):10s} SVDD mean reward {res.rewards.mean():.3f}")
        axs[0, j].set(title=name, ylabel="diversity of $\\\\hat x_0$" if j == 0 else None)
        axs[1, j].set(xlabel="search step k (1 = noisiest)", ylabel="reward headroom" if j == 0 else None)
    axs[0, 0].legend();
    """),
    md(r"""
    In the task as defined the Linear SDE has more diverse proposals and more headroom in the
    middle steps, where the mode is decided; the VP SDE's noise comes early, where the posterior
    mean is still a blur. Scaled ×8 with the posterior mean, both modes find headroom, at different
    steps: the posterior mean still hides the decision at the noisiest steps. With the flow map,
    $\hat x_0$ is sharp from the first step, so the VP SDE's early diversity becomes reward headroom
    at its first four steps, far more than the Linear SDE's: this is the regime of the paper.

    ## 4. The search results, both regimes

    BoN, SVDD, RBF (as the official code runs it: `max(1, budget // 20)` initial draws, the whole
    budget spent) and RBF-strict (one initial draw, the first improvement accepted at every step)
    in the three modes, budget 100.
    """),
    code("""
    cells = []
    for name, model_name, scale in (("rare-mode x1, oracle", "oracle", 1), ("rare-mode x8, flow map", "flowmap", 8)):
        task = benchmark.make_task("rare-mode", model_name, scale=scale)
        rows = [benchmark.run_cell(task, m, mode, 100, steps=10, runs=RUNS, scale=scale)
                for m in ("bon", "svdd", "rbf", "rbf-strict") for mode in search.MODES]
        cells += rows
        print(format_table(rows, title=name), end="\\n\\n")
    """),
    md(r"""
    ## 5. RBF's budget

    RBF spends its budget in three places: the **initial draws** at $t = 1$ (the best $\hat x_0$
    reward is kept), the **per-step quota** (the first proposal that beats the best so far is
    accepted and the unused quota rolls over), and, as the official code does, **everything left
    at the last search step**. With a posterior mean the initial draws are worthless (every
    $\hat x_0$ at $t = 1$ is the data mean, so all of them score alike); with a sharp $\hat x_0$ they
    are a Best-of-N over real samples, and the best of them is a better place to start the search
    from, even when it is not yet on the rewarded mode.
    """),
    code("""
    fig, axs = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained", sharey=True)
    for ax, (name, (model, reward)) in zip(axs, (("x1, oracle", settings["x1, oracle"]),
                                                 ("x8, flow map", settings["x8, flow map"]))):
        results = {m: search.run(m, model, reward, mode="vp-sde", budget=100, steps=10, runs=RUNS, shape=(2,),
                                 generator=torch.Generator().manual_seed(3), record=True)
                   for m in ("svdd", "rbf", "rbf-strict")}
        viz.budget_allocation(results, ax=ax, title=f"{name}, VP SDE, budget 100: NFE per step")
        for m, res in results.items():
            first = res.history.rewards[:, 0, 0]
            print(f"{name:12s} {viz.method_label(m):13s} NFE spent {res.nfe.double().mean():5.1f} of 100; "
                  f"reward after the initial draws {first.mean():.3f}, final {res.rewards.mean():.3f}")
    """),
    md(r"""
    What to take away:

    - **ODE → SDE** holds in both regimes: without fresh noise, SVDD and RBF have nothing to choose.
    - **Linear → VP** is not a property of the path: it moves the stochasticity to high noise
      (section 1). It helps where the reward-relevant decision is made at high noise and
      $\hat x_0$ can see it there (sections 2–3): the ×8 task with the flow map, like images with
      a timestep-distilled model. It hurts where the decision is made at mid noise.
    - **RBF** as the official code runs it spends its whole budget and gains from the VP SDE in the
      paper's regime. Its initial draws rarely land on the 2 % mode themselves (their reward is low
      in the printout), but with a sharp $\hat x_0$ they choose a good *start*: the same RBF with a
      single initial draw falls from 0.75 to 0.41 here (VP SDE, budget 100; bench/RESULTS.md §2a),
      about where RBF-strict is. With a posterior-mean $\hat x_0$ the initial draws cannot choose
      anything. Whether RBF beats SVDD depends on the task and the budget (RESULTS §2a).

    The full tables (3 tasks, 2 models per regime, budgets 50–1000, 64 runs) are in
    bench/RESULTS.md §2a.

    ## Exercises

    1. **Move the schedule, keep the path.** Rerun section 4 with `diffusion_path="vp"` on
       `mode="linear-sde"` and `diffusion_path="linear"` on `mode="vp-sde"` (both with
       `time_grid="vp-snr"`, the same noise levels). Does the result follow the path or the schedule?
    2. **Find the crossover.** For scales 1, 2, 4, 8, 16, compute where the mode is half-way decided
       (section 1) and SVDD's reward in linear-SDE and VP-SDE at budget 100. At which scale does
       VP-SDE start to win?
    3. **Blur the flow map.** Build a model whose $\hat x_0$ interpolates between the posterior
       mean and the flow map, $\hat x_0 = (1-\lambda)\,\mathbb E[x_0\mid x_t] + \lambda\,\Phi(x_t, t)$
       (write its velocity with `dynamics.velocity_from_x0`), and plot RBF's reward against λ.
    4. **Where RBF's gain comes from.** With the flow map, compare `rbf` with
       `initial_particles=1` and with the default batch. How much of the gain do the initial draws
       carry at budgets 50, 100 and 500?
    """),
]

NOTEBOOKS = {
    "01_flow_matching_2d.ipynb": NB01,
    "02_ode_to_sde.ipynb": NB02,
    "03_linear_to_vp.ipynb": NB03,
    "04_inference_time_scaling_2d.ipynb": NB04,
    "05_mnist_sampler.ipynb": NB05,
    "06_custom_allocation.ipynb": NB06,
    "07_regimes.ipynb": NB07,
}


def build(name: str):
    nb = new_notebook(cells=NOTEBOOKS[name])
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    nbformat.validate(nb)
    return nb


def execute(nb, cwd: Path, timeout: int = 600):
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("only", nargs="*", help="notebook name prefixes (default: all)")
    p.add_argument("--execute", action="store_true", help="execute with nbclient and save the outputs")
    args = p.parse_args(argv)
    names = [n for n in NOTEBOOKS if not args.only or any(n.startswith(o) for o in args.only)]
    if not names:
        print(f"no notebook matches {args.only}", file=sys.stderr)
        return 2
    for name in names:
        nb = build(name)
        path = HERE / name
        if args.execute:
            t0 = time.perf_counter()
            execute(nb, HERE)
            print(f"{name}: executed in {time.perf_counter() - t0:.1f} s", flush=True)
        nbformat.write(nb, path)
        print(f"{name}: {path.stat().st_size / 1024:.0f} KiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
