"""Regenerate every figure the README shows: ``toyflow figures --out figures``.

    from toyflow.figures import make_all
    paths = make_all("figures")      # list of the PNGs written

Everything is seeded (``torch.Generator`` per figure, fixed seeds below) and drawn on one torch
thread in matplotlib's default style, so the same install on the same machine gives the same
bytes run to run; PNGs are written without a software/date stamp, atomically (a temporary file
in the same folder, then ``os.replace``). The 2D figures use the exact Gaussian-mixture
oracle of the toy tasks (no training, no data files); the MNIST figures are drawn only when the
shipped MNIST weights are installed (``"mnist-flow"`` in :func:`toyflow.pretrained.available`).

Figures (file name: what it shows):

- ``trajectories.png``: the same noise through the Linear ODE, the Linear SDE and the VP SDE
  (x_t and x0_hat(x_t), coloured by time).
- ``densities.png``: exact marginals p_t for the Linear and the VP path, with SDE samples on top.
- ``tilted_target.png``: the reward-tilted target p* of the rare-mode task and each method's samples.
- ``budget_allocation.png``: NFE spent per denoising step by each method (one budget).
- ``rbf_steps.png``: RBF step by step (candidates, acceptances, quota and rollover).
- ``smc_ess.png``: SMC's effective sample size per step.
- ``scaling.png``: mean reward vs NFE budget, three toy tasks, three generation modes.
- ``realism_reward.png``: realism (log p_0) vs reward from the same grid.
- ``eta_ratio.png``: how stochastic each generation mode is at each noise level (g^2 / g^2_DDPM).
- ``scaling_2d.png``: the committed 2D benchmark table (``bench/results_regime_a.csv``, grid (a) of
  ``bench/RESULTS.md``: oracle and MLP, seven methods, three modes) drawn again, nothing rerun;
  drawn only from a clone of the repository, where ``bench/`` is.
- ``mnist_samples.png``, ``mnist_strip.png``: MNIST search samples (one method per row) and one
  sample along its path.

The scaling figures have one panel per task and mode (the methods as curves), few enough curves
to read on a slide.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Union

import torch

from toyflow import tasks

__all__ = [
    "make_all",
    "save_figure",
    "small_batch_threads",
    "forced_threads",
    "pinned_style",
    "FIGURES_2D",
    "FIGURES_MNIST",
    "FIGURES_BENCH",
    "BENCH_CSV",
    "SEARCH_METHODS",
    "SMC_LAM",
    "DPI",
]

log = logging.getLogger(__name__)

DPI = 110
#: gradient-free methods compared in the 2D figures (DPS needs a differentiable reward; it is in notebook 04)
SEARCH_METHODS = ("bon", "sop", "smc", "svdd", "code", "rbf")
#: SMC temperature used in the figures: the 2D rewards live in [0, 1] (or small integers), so the
#: library default lam = 1 barely reweights and SMC would behave like BoN.
SMC_LAM = tasks.get("rare-mode").options("smc")["lam"]  # the toy tasks' recommended lam (toyflow.tasks)
FIGURES_2D = (
    "trajectories.png",
    "densities.png",
    "tilted_target.png",
    "budget_allocation.png",
    "rbf_steps.png",
    "smc_ess.png",
    "scaling.png",
    "realism_reward.png",
    "eta_ratio.png",
)
FIGURES_BENCH = ("scaling_2d.png",)
FIGURES_MNIST = ("mnist_samples.png", "mnist_strip.png", "mnist_x0_along_t.png")
#: the committed benchmark table that scaling_2d.png draws (grid (a) of bench/RESULTS.md); made by
#: toyflow bench search --task rare-mode counting aesthetic --models oracle mlp --methods bon sop smc
#: code svdd rbf rbf-strict --modes linear-ode linear-sde vp-sde --budgets 50 100 200 500 1000 --runs 64
BENCH_CSV = Path(__file__).resolve().parent.parent / "bench" / "results_regime_a.csv"


def save_figure(fig, path: Union[str, Path], dpi: int = DPI) -> Path:
    """Write a matplotlib Figure to a PNG atomically (temporary file, then ``os.replace``) with
    no software/date metadata, so the same figure gives the same bytes. Returns the path."""
    from toyflow.checkpoint import atomic_write_bytes

    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())
    log.info("wrote %s", path)
    return path


_forced_threads: Optional[int] = None  # set by forced_threads(): what small_batch_threads uses instead of its n


@contextlib.contextmanager
def small_batch_threads(n: int = 1):
    """Run tiny 2D workloads on ``n`` intra-op threads (restored afterwards): batches of a few
    hundred 2D points gain nothing from more threads, and lose a lot when cores are busy.
    Inside :func:`forced_threads` the count given there wins (the command line's ``--threads``)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(_forced_threads or n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


@contextlib.contextmanager
def forced_threads(n: Optional[int]):
    """Every :func:`small_batch_threads` block inside runs on ``n`` threads (``None``: on its own count)."""
    global _forced_threads
    before, _forced_threads = _forced_threads, (n or _forced_threads)
    try:
        yield
    finally:
        _forced_threads = before


@contextlib.contextmanager
def pinned_style():
    """matplotlib's default style whatever the user's matplotlibrc or style says, so that the figures
    (and their bytes) do not depend on who draws them; fonts are matplotlib's own DejaVu."""
    import matplotlib

    with matplotlib.rc_context():
        matplotlib.rcdefaults()  # undone when the context ends
        matplotlib.rcParams["svg.hashsalt"] = "toyflow"
        yield


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# 2D figures
# --------------------------------------------------------------------------------------------
def _trajectory_set(model, *, n: int, steps: int, seed: int, schedule_model: str = "linear") -> dict:
    """The same initial noise through the Linear ODE, the Linear SDE and the VP SDE (recorded)."""
    from toyflow import dynamics, interpolants

    x1 = torch.randn(n, 2, generator=_gen(seed))
    vp_model = interpolants.convert(model, source=schedule_model, target="vp")
    return {
        "Linear ODE": dynamics.sample(model, x1, "linear", steps=steps, record=True),
        "Linear SDE": dynamics.sample(model, x1, "linear", steps=steps, sde=True, generator=_gen(seed + 1), record=True),
        "VP SDE": dynamics.sample(vp_model, x1, "vp", steps=steps, sde=True, generator=_gen(seed + 1), record=True),
    }


def _fig_trajectories(out: Path) -> list[Path]:
    from toyflow import viz
    from toyflow.data.toy2d import eight_gaussians_gmm

    gmm = eight_gaussians_gmm()
    trajs = _trajectory_set(gmm, n=48, steps=20, seed=0)
    fig = viz.trajectories_2d(
        trajs, n_show=48, gmm=gmm,
        title="same noise, three samplers (exact 8-Gaussian flow, 20 steps; SDE: $g_t = 3t^2$)",
    )
    return [save_figure(fig, out / "trajectories.png")]


def _fig_densities(out: Path) -> list[Path]:
    from matplotlib.figure import Figure

    from toyflow import viz
    from toyflow.data.toy2d import eight_gaussians_gmm

    gmm = eight_gaussians_gmm()
    trajs = _trajectory_set(gmm, n=400, steps=50, seed=10)  # fine steps: the comparison is about marginals
    times = (1.0, 0.8, 0.5, 0.2, 0.0)  # on the 50-step grid
    fig = Figure(figsize=(13.4, 6.0), layout="constrained")
    axs = fig.subplots(2, len(times), sharex=True, sharey=True)
    viz.density_panels(gmm, times, traj=trajs["Linear SDE"], n_show=300, axes=axs[0])
    viz.density_panels(gmm.with_schedule("vp"), times, traj=trajs["VP SDE"], n_show=300, axes=axs[1])
    for row, name in zip(axs, ("Linear path", "VP path")):
        row[0].set_ylabel(f"{name}\n$x[1]$")
    for a in axs[0]:
        a.set_xlabel("")
    fig.suptitle("exact marginals $p_t$ of the 8-Gaussian mixture (heatmap) and SDE samples at the same t: "
                 "the SDE keeps the marginals (50 steps)")
    return [save_figure(fig, out / "densities.png")]


def _search_results(model, reward, *, mode: str, budget: int, steps: int, runs: int, seed: int,
                    methods=SEARCH_METHODS, record: bool = True) -> dict:
    from toyflow import search

    out = {}
    for i, m in enumerate(methods):
        opts = tasks.get("rare-mode").options(m)
        out[m] = search.run(m, model, reward, mode=mode, budget=budget, steps=steps, runs=runs, shape=(2,),
                            generator=_gen(seed + 100 * i), record=record, **opts)
    return out


def _fig_search(out: Path) -> list[Path]:
    from matplotlib.figure import Figure

    from toyflow import metrics, rewards, viz

    gmm, reward = rewards.task("rare-mode")
    # the tilted target: every method's final samples (one per run)
    res = _search_results(gmm, reward, mode="linear-sde", budget=200, steps=10, runs=96, seed=1, record=False)
    oracle = metrics.tilted_oracle(gmm, reward, lam=0.1, grid_size=200)
    fig = Figure(figsize=(11.5, 7.6), layout="constrained")
    axs = fig.subplots(2, 3, sharex=True, sharey=True)
    for ax, (m, r) in zip(axs.ravel(), res.items()):
        viz.tilted_target(oracle, {m: r.samples}, ax=ax, max_points=96)
        mean = float(r.rewards.mean())
        ax.set_title(f"{viz.method_label(m)}: mean reward {mean:.2f}", fontsize="medium")
        if ax not in axs[-1]:
            ax.set_xlabel("")
        if ax not in axs[:, 0]:
            ax.set_ylabel("")
    fig.colorbar(axs[0, 0].collections[0], ax=axs, shrink=0.6, label="$p^*$ density")
    fig.suptitle("rare-mode task: tilted target $p^* \\propto p_0\\,e^{r/\\lambda}$ ($\\lambda$ = 0.1; purple: heatmap "
                 "and the regions holding 50/90/99 % of its mass)\nand one sample per run "
                 "of each method (Linear SDE, 200 NFE per run, 96 runs); "
                 f"$E_{{p^*}}[r]$ = {oracle.expected_reward:.2f},  $E_{{p_0}}[r]$ = {oracle.base_expected_reward:.3f}")
    paths = [save_figure(fig, out / "tilted_target.png")]

    # budget allocation and the per-method internals (recorded runs)
    rec = _search_results(gmm, reward, mode="linear-sde", budget=200, steps=10, runs=32, seed=2,
                          methods=("bon", "smc", "svdd", "code", "rbf"))
    fig = viz.budget_allocation(rec, title="rare-mode task, Linear SDE: NFE per denoising step "
                                           "(budget 200 per run, mean ± std over 32 runs)")
    paths.append(save_figure(fig, out / "budget_allocation.png"))
    fig = viz.rbf_steps(rec["rbf"], run=int(rec["rbf"].rewards.argsort()[rec["rbf"].runs // 2]))  # a median run
    paths.append(save_figure(fig, out / "rbf_steps.png"))
    fig = viz.smc_ess(rec["smc"], title=f"SMC (Linear SDE, rare-mode task, $\\lambda$ = {SMC_LAM:g}): "
                                        "effective sample size per step")
    paths.append(save_figure(fig, out / "smc_ess.png"))
    return paths


def _fig_scaling(out: Path, *, runs: int, budgets, progress: bool) -> list[Path]:
    from toyflow import benchmark, search, viz

    rows = []
    cells = [(t, m, mode, b) for t in benchmark.TASKS_2D for m in SEARCH_METHODS
             for mode in search.MODES for b in budgets]
    built = {t: benchmark.make_task(t, "oracle") for t in benchmark.TASKS_2D}
    from tqdm.auto import tqdm

    for t, m, mode, b in tqdm(cells, desc="scaling grid", disable=not progress):
        opts = tasks.get(t).options(m) or None
        row = benchmark.run_cell(built[t], m, mode, b, steps=10, runs=runs, seed=0, options=opts)
        if row.get("status") == "ok":
            rows.append(row)
        else:
            log.warning("scaling grid: %s %s %s %s %s", t, m, mode, b, row.get("status"))
    fig = viz.scaling_curves(rows, facet="mode",
                             title=f"mean reward vs NFE budget: one panel per task and mode (exact oracle, 10 steps, "
                                   f"{runs} runs; bands: ± standard error)")
    paths = [save_figure(fig, out / "scaling.png")]
    big = [r for r in rows if r["mode"] != "linear-ode"]
    fig = viz.realism_reward_scatter(big, title="realism vs reward (SDE modes; high reward at low realism "
                                                "would be reward hacking)")
    paths.append(save_figure(fig, out / "realism_reward.png"))
    return paths


def _fig_scaling_2d(out: Path, csv_path: Path) -> list[Path]:
    """scaling_2d.png from the committed benchmark CSV (no cell is rerun)."""
    from toyflow import viz

    rows = [r for r in viz.read_results_csv(csv_path) if r.get("status") == "ok"]
    if not rows:
        raise ValueError(f"{csv_path} holds no finished cells (status ok); rerun the benchmark that writes it "
                         "(bench/run_all.sh)")
    runs = sorted({int(r["runs"]) for r in rows})
    steps = sorted({int(r["steps"]) for r in rows})
    fig = viz.scaling_curves(
        rows, facet="mode",
        title=f"2D benchmark (bench/{csv_path.name}): mean reward vs NFE budget; rows: task, panels: mode and model "
              f"({'/'.join(map(str, steps))} steps, {'/'.join(map(str, runs))} runs per cell; bands: ± standard error)",
    )
    return [save_figure(fig, out / "scaling_2d.png")]


def _fig_eta_ratio(out: Path) -> list[Path]:
    from toyflow import viz

    fig = viz.eta_ratio_plot(
        None, steps=10, time_grid="uniform",  # every mode of toyflow.search.MODES
        title="how stochastic each mode is at each noise level: $\\eta$ ratio $g^2/g^2_{\\mathrm{DDPM}}$ "
              "(10-step uniform grids)",
    )
    return [save_figure(fig, out / "eta_ratio.png")]


# --------------------------------------------------------------------------------------------
# MNIST figures (only with the shipped MNIST weights)
# --------------------------------------------------------------------------------------------
def _fig_mnist(out: Path, digit: int = 7) -> list[Path]:
    from toyflow import dynamics, pretrained, rewards, search, viz

    flow = pretrained.load("mnist-flow")
    reward = rewards.mnist_digit(digit)
    shape = (1, 28, 28)
    rows, labels, names, row_names = [], [], [], []
    for i, m in enumerate(("bon", "smc", "svdd", "rbf")):
        opts = tasks.get("mnist-digit").options(m)
        res = search.run(m, flow, reward, mode="linear-sde", budget=100, steps=10, runs=8, shape=shape,
                         generator=_gen(30 + i), **opts)
        rows.append(res.samples)
        labels += [f"{float(v):.2f}" for v in res.rewards.exp()]
        names.append(m)
        row_names.append(f"{viz.method_label(m)}\nmean {float(res.rewards.exp().mean()):.2f}")
    fig = viz.image_grid(torch.cat(rows), nrow=8, labels=labels, row_labels=row_names,
                         title=f"steering to digit {digit}: one method per row (Linear SDE, 100 NFE per sample)\n"
                               f"label: p({digit} | x) under the reward model; mean: over the row")
    paths = [save_figure(fig, out / "mnist_samples.png")]
    x1 = torch.randn((4,) + shape, generator=_gen(40))
    traj = dynamics.sample(flow, x1, "linear", steps=20, record=True)
    fig = viz.trajectory_strip(traj, index=0, n_cols=11, title="one MNIST sample along its Linear ODE path")
    paths.append(save_figure(fig, out / "mnist_strip.png"))
    flows = {"20-step flow": flow}
    if "mnist-flow-fewstep" in pretrained.available():
        flows["few-step student"] = pretrained.load("mnist-flow-fewstep")
    paths.append(_fig_mnist_x0_along_t(out, flows))
    return paths


def _fig_mnist_x0_along_t(out: Path, flows: dict, n: int = 32, steps: int = 20, seed: int = 41) -> Path:
    """x0_hat = x_t - t u(x_t, t) along the Linear ODE path, one row per flow, one sample; above each
    column the evaluator's mean confidence (max softmax probability) over ``n`` paths: a
    posterior-mean x0_hat is a blur at high noise (low confidence), a flow map's is a digit."""
    from toyflow import dynamics, pretrained, viz

    evaluator = pretrained.load("mnist-evaluator")
    shape = (1, 28, 28)
    cols = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]  # grid indices: t = 1.0, 0.9, ..., 0.1
    rows, labels, row_names = [], [], []
    x1 = torch.randn((n,) + shape, generator=_gen(seed))
    for name, flow in flows.items():
        traj = dynamics.sample(flow, x1, "linear", steps=steps, record=True)
        x0s = traj.x0s[cols].clamp(-1, 1)  # (C, n, 1, 28, 28)
        with torch.no_grad():
            conf = torch.stack([torch.softmax(evaluator(x0s[c]), 1).max(1).values.mean() for c in range(len(cols))])
        rows.append(x0s[:, 0])
        labels += [f"t={float(traj.times[c]):.1f} {float(v):.2f}" for c, v in zip(cols, conf)]
        row_names.append(name)
    fig = viz.image_grid(torch.cat(rows), nrow=len(cols), labels=labels, row_labels=row_names,
                         title="x0_hat along the Linear ODE path (one sample; label: t and the evaluator's mean "
                               f"confidence over {n} paths)")
    return save_figure(fig, out / "mnist_x0_along_t.png")


# --------------------------------------------------------------------------------------------
def make_all(out: Union[str, Path] = "figures", *, progress: bool = True, quick: bool = False,
             threads: Optional[int] = None, bench_csv: Optional[Union[str, Path]] = BENCH_CSV) -> list[Path]:
    """Regenerate every README figure into ``out``; returns the paths written (in order).

    ``quick=True`` shrinks the scaling grid (fewer runs and budgets) for smoke tests; the README
    figures use the default. MNIST figures are skipped (logged) without the shipped MNIST weights,
    ``scaling_2d.png`` without the benchmark CSV ``bench_csv`` (in a clone: ``bench/results_regime_a.csv``;
    None skips it).
    ``progress``: a line on stderr per figure group (with its time) and a bar for the scaling grid.

    Every figure is drawn on one torch thread unless ``threads`` says otherwise: the 2D ones are
    tiny batches, and a fixed count keeps the floating-point sums, hence the bytes, the same from
    run to run (a different count may move a sample, and a pixel). The style is matplotlib's
    default (:func:`pinned_style`) and the PNGs carry no software or date stamp, so the same
    install on the same machine writes the same bytes.
    """
    from toyflow import pretrained

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs: list[tuple[str, Callable[[], list[Path]]]] = [
        ("trajectories", lambda: _fig_trajectories(out)),
        ("densities", lambda: _fig_densities(out)),
        ("search internals", lambda: _fig_search(out)),
        ("scaling", lambda: _fig_scaling(out, runs=16 if quick else 64,
                                         budgets=(50, 200) if quick else (50, 100, 200, 500), progress=progress)),
        ("eta ratio", lambda: _fig_eta_ratio(out)),
    ]
    csv_path = Path(bench_csv) if bench_csv is not None else None
    if csv_path is not None and csv_path.is_file():
        jobs.append(("benchmark table", lambda: _fig_scaling_2d(out, csv_path)))
    elif csv_path is not None:
        log.info("scaling_2d.png skipped: no benchmark table at %s", csv_path)
        if progress:
            print(f"figures: scaling_2d.png skipped (no benchmark table at {csv_path}; it is drawn from a clone "
                  "of the repository)", file=sys.stderr, flush=True)
    have = pretrained.available()
    if "mnist-flow" in have and "mnist-reward" in have:
        jobs.append(("mnist", lambda: _fig_mnist(out)))
    else:
        log.info("MNIST figures skipped: the shipped MNIST weights are not installed")
        if progress:
            print("figures: MNIST figures skipped (the shipped MNIST weights are not installed)",
                  file=sys.stderr, flush=True)
    paths: list[Path] = []
    t_all = time.perf_counter()
    with pinned_style(), forced_threads(threads), small_batch_threads(1):
        for i, (name, job) in enumerate(jobs, 1):
            if progress:
                print(f"figures [{i}/{len(jobs)}] {name} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            new = job()
            paths += new
            took = time.perf_counter() - t0
            log.info("%s: %.1f s", name, took)
            if progress:
                print(f"figures [{i}/{len(jobs)}] {name}: {', '.join(p.name for p in new)} ({took:.1f} s)",
                      file=sys.stderr, flush=True)
    if progress:
        print(f"figures: {len(paths)} PNGs in {out} ({time.perf_counter() - t_all:.0f} s)", file=sys.stderr, flush=True)
    return paths


def main(argv: Optional[list] = None) -> int:  # pragma: no cover - convenience: python -m toyflow.figures
    import argparse

    p = argparse.ArgumentParser(description="regenerate the README figures (the command: toyflow figures)")
    p.add_argument("--out", default="figures", help="output folder (default figures)")
    args = p.parse_args(argv)
    for path in make_all(args.out):
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
