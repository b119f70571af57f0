"""``toyflow demo``: the paper's experiment in one minute on a laptop CPU, in two regimes.

    from toyflow.demo import run_demo
    folder = run_demo("toyflow-demo", quick=True)

The rare-mode toy task (8 Gaussians, the target mode has 2 % of the mass; reward = a bump on it,
in [0, 1]) in two regimes, each searched by BoN, SMC, SVDD and RBF in the three generation modes
(Linear ODE, Linear SDE, VP SDE) at a few NFE budgets:

1. **the paper's regime** first: the task ×8 (``rewards.task("rare-mode", scale=8)``: the mode is
   chosen at high noise, as in images) with the shipped flow-map MLP (``2d-rare-mode-x8-flowmap``,
   distilled to predict the ODE's endpoint, so x̂0 is sharp at every t, like the paper's
   timestep-distilled FLUX model);
2. **the contrast**: the task as defined with the shipped flow-matching MLP (``2d-rare-mode``,
   x̂0 a posterior mean, blurry at high noise; the mode is chosen at mid noise).

It prints a table per regime (mean reward ± standard error, realism = mean log p_0, NFE spent)
with a few "what to notice" lines computed from the numbers, and writes into the folder:

- ``table.txt`` (the printed tables) and ``results.csv`` (tidy rows, as ``toyflow bench search``),
- ``trajectories.png``: the same noise through the Linear ODE, the Linear SDE and the VP SDE,
- ``budget_allocation.png``: NFE per denoising step of each method, and RBF step by step,
- ``scaling.png``: mean reward vs NFE budget, one panel per regime.

Everything is seeded: the same install prints the same table and draws the same figures.
No data files and no network are needed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import torch

__all__ = ["DemoConfig", "Regime", "REGIMES", "QUICK", "FULL", "run_demo", "format_table", "notice_lines"]

log = logging.getLogger(__name__)

MODES = ("linear-ode", "linear-sde", "vp-sde")


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs: methods x modes x budgets, ``runs`` independent runs per cell."""

    methods: tuple[str, ...] = ("bon", "smc", "svdd", "rbf")
    modes: tuple[str, ...] = MODES
    budgets: tuple[int, ...] = (50, 100, 200, 400)
    runs: int = 64
    steps: int = 10
    seed: int = 0
    figure_budget: int = 200  # budget of the recorded runs in budget_allocation.png
    figure_mode: str = "linear-sde"


@dataclass(frozen=True)
class Regime:
    """One block of the demo: a task at a scale, a shipped model, and why it behaves as it does."""

    title: str
    task: str
    scale: float
    model: str  # a 2D model name of toyflow.benchmark.make_task
    mechanism: str  # one line: what x0_hat is and where the decision is made


REGIMES = (
    Regime("the paper's regime: rare-mode x8, flow-map MLP", "rare-mode", 8.0, "flowmap-mlp",
           "the mode is chosen at high noise, where the VP-SDE takes its noisy steps, and x0_hat (the ODE's "
           "endpoint, sharp at every t) lets the search rank those proposals by where they will land"),
    Regime("the contrast: rare-mode x1, flow-matching MLP", "rare-mode", 1.0, "mlp",
           "the mode is chosen at mid noise, where the linear SDE takes its noisy steps; at high noise, where "
           "the VP-SDE takes its own, x0_hat (a posterior mean) is a blur that no reward can rank"),
)

QUICK = DemoConfig()
FULL = DemoConfig(methods=("bon", "sop", "smc", "svdd", "code", "rbf"), budgets=(50, 100, 200, 500, 1000), runs=128)


def _options(method: str, task: str) -> dict:
    """The options toyflow.tasks recommends for ``method`` on ``task`` (SMC's lam for a reward in [0, 1])."""
    from toyflow import tasks

    return tasks.get(task).options(method)


def format_table(rows: Sequence[dict], *, title: str = "") -> str:
    """Plain-text table of benchmark rows: method, mode, budget, reward ± s.e., realism, NFE."""
    from toyflow.viz import method_label, mode_label

    w = max([6] + [len(method_label(r["method"])) for r in rows])
    head = f"{'method':<{w}} {'mode':<11} {'budget':>6}  {'reward ± s.e.':<15} {'realism':>8} {'NFE':>7}"
    lines = ([title] if title else []) + [head, "-" * len(head)]
    prev = None
    for r in rows:
        if prev is not None and r["method"] != prev:
            lines.append("")
        prev = r["method"]
        name = f"{method_label(r['method']):<{w}} {mode_label(r['mode']):<11} {r['budget']:>6}"
        if r.get("status") != "ok":
            lines.append(f"{name}  {r['status']}")
            continue
        se = r.get("reward_se", float("nan"))
        rew = f"{r['reward_mean']:.3f} ± {se:.3f}"
        lines.append(f"{name}  {rew:<15} {r['realism']:>8.2f} {r['nfe_mean']:>7.1f}")
    return "\n".join(lines)


def notice_lines(rows: Sequence[dict], budget: int) -> list[str]:
    """'What to notice' at ``budget``, read off the rows: each per-step method's modes in order, the best
    method in each mode."""
    from toyflow.viz import method_label, mode_label

    ok = {(r["method"], r["mode"]): r for r in rows if r.get("status") == "ok" and r["budget"] == budget}
    lines = []
    for m in ("svdd", "rbf"):
        cells = sorted(((ok[(m, mode)]["reward_mean"], mode) for mode in MODES if (m, mode) in ok), reverse=True)
        if cells:
            lines.append(f"{method_label(m)} at budget {budget}: " + " > ".join(
                f"{mode_label(mode)} {v:.2f}" for v, mode in cells))
    for mode in MODES:
        cells = sorted(((r["reward_mean"], m) for (m, md), r in ok.items() if md == mode), reverse=True)
        if cells:
            lines.append(f"best in {mode_label(mode)}: {method_label(cells[0][1])} ({cells[0][0]:.2f}); "
                         + ", ".join(f"{method_label(m)} {v:.2f}" for v, m in cells[1:]))
    return lines


def _trajectory_figure(model, gmm, cfg: DemoConfig):
    from toyflow import dynamics, interpolants, viz

    g = torch.Generator().manual_seed(cfg.seed + 1)
    x1 = torch.randn(64, 2, generator=g)
    vp_model = interpolants.convert(model, source="linear", target="vp")
    trajs = {
        "Linear ODE": dynamics.sample(model, x1, "linear", steps=20, record=True),
        "Linear SDE": dynamics.sample(model, x1, "linear", steps=20, sde=True,
                                      generator=torch.Generator().manual_seed(cfg.seed + 2), record=True),
        "VP SDE": dynamics.sample(vp_model, x1, "vp", steps=20, sde=True,
                                  generator=torch.Generator().manual_seed(cfg.seed + 2), record=True),
    }
    return viz.trajectories_2d(trajs, n_show=64, gmm=gmm,
                               title=f"{REGIMES[0].title}: the same noise through three samplers "
                                     "(20 steps, SDE $g_t = 3t^2$)")


def _allocation_figure(model, reward, cfg: DemoConfig):
    from matplotlib.figure import Figure

    from toyflow import search, viz

    results = {}
    for i, m in enumerate(cfg.methods):
        g = torch.Generator().manual_seed(cfg.seed + 1000 + i)
        results[m] = search.run(m, model, reward, mode=cfg.figure_mode, budget=cfg.figure_budget, steps=cfg.steps,
                                runs=cfg.runs, shape=(2,), generator=g, record=True, **_options(m, REGIMES[0].task))
    fig = Figure(figsize=(11.0, 10.5), layout="constrained")
    axs = fig.subplots(3, 1, gridspec_kw={"height_ratios": (1.0, 1.0, 0.8)})
    viz.budget_allocation(results, ax=axs[0], title=(
        f"NFE per denoising step ({viz.mode_label(cfg.figure_mode)}, budget {cfg.figure_budget} per run, "
        f"mean ± std over {cfg.runs} runs)"))
    axs[0].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # keep the bars uncovered
    if "rbf" in results:
        median_run = int(results["rbf"].rewards.argsort()[cfg.runs // 2])  # a typical run
        viz.rbf_steps(results["rbf"], run=median_run, axes=axs[1:])
        axs[1].sharex(axs[2])
        axs[1].tick_params(labelbottom=False)
    fig.suptitle(f"where the budget goes: {REGIMES[0].title}")
    return fig, results


def run_demo(out_dir: Union[str, Path] = "toyflow-demo", quick: bool = True) -> Path:
    """Run the demo in both regimes, print the tables and the folder, write the tables, CSV and three figures.

    ``quick=True`` (the default): BoN, SMC, SVDD, RBF x 3 modes x budgets 50/100/200/400, 64 runs,
    in each regime (about a minute on a laptop CPU). ``quick=False``: also SoP and CoDe, budgets up
    to 1000, 128 runs (a few minutes). Returns the output folder.
    """
    from tqdm.auto import tqdm

    from toyflow import benchmark, viz
    from toyflow.figures import save_figure, small_batch_threads

    cfg = QUICK if quick else FULL
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    from toyflow import rewards
    from toyflow.checkpoint import atomic_write_text

    cells = [(m, mode, b) for m in cfg.methods for mode in cfg.modes for b in cfg.budgets]
    rows, texts, tasks = [], [], []
    with small_batch_threads(1):
        for regime in REGIMES:
            task = benchmark.make_task(regime.task, regime.model, scale=regime.scale)  # realism: the exact mixture
            tasks.append(task)
            block = [benchmark.run_cell(task, m, mode, b, steps=cfg.steps, runs=cfg.runs, seed=cfg.seed,
                                        options=_options(m, regime.task) or None, scale=regime.scale)
                     for m, mode, b in tqdm(cells, desc=f"toyflow demo ({regime.task} x{regime.scale:g})", unit="cell")]
            rows += block
            title = (f"{regime.title} ({task.name}, model {regime.model}; reward in [0, 1], 1 = on the rare mode), "
                     f"{cfg.steps} steps, {cfg.runs} runs per cell; realism = mean log p_0(x); NFE = mean spent per run")
            notes = [f"why: {regime.mechanism}"] + notice_lines(block, max(cfg.budgets))
            text = format_table(block, title=title) + "\n\nwhat to notice:\n" + "\n".join(f"  - {n}" for n in notes)
            print(text + "\n")
            texts.append(text)
        benchmark.write_csv(out / "results.csv", rows)
        atomic_write_text(out / "table.txt", "\n\n".join(texts) + "\n")

        paper = tasks[0]
        gmm, _ = rewards.task(REGIMES[0].task, scale=REGIMES[0].scale)
        save_figure(_trajectory_figure(paper.model, gmm, cfg), out / "trajectories.png")
        fig, _ = _allocation_figure(paper.model, paper.reward, cfg)
        save_figure(fig, out / "budget_allocation.png")
        ok = [r for r in rows if r.get("status") == "ok"]
        fig = viz.scaling_curves(ok, title=f"rare-mode task, paper's regime (left) and contrast (right): mean reward "
                                           f"vs NFE budget ({cfg.runs} runs per point, bands ± standard error)")
        fig.set_size_inches(11.0, 4.4)
        save_figure(fig, out / "scaling.png")
    wall = time.perf_counter() - t0
    log.info("demo finished in %.1f s", wall)
    print(f"\nwrote table.txt, results.csv, trajectories.png, budget_allocation.png, scaling.png to:\n{out.resolve()}")
    return out
