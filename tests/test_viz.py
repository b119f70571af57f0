"""Tests for toyflow.viz: every figure builds from tiny inputs, is labelled, and uses the method colours."""

import csv
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib import animation
from matplotlib.collections import LineCollection, PathCollection, QuadMesh
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.quiver import Quiver
from PIL import Image

from conftest import eight_gaussians
from toyflow import dynamics, metrics, rewards, search, viz
from toyflow.models import GaussianMixtureFlow

METHODS = ("bon", "sop", "smc", "svdd", "code", "rbf", "rbf-strict", "dps", "rbf+dps")


def same_color(a, b) -> bool:
    return np.allclose(to_rgba(a)[:3], to_rgba(b)[:3], atol=1e-3)


def scatter_colors(ax):
    return [c.get_facecolor()[0] for c in ax.collections if isinstance(c, PathCollection) and len(c.get_facecolor())]


def panel_axes(fig):
    """Axes that are plots (not colorbars)."""
    return [a for a in fig.axes if a.get_label() != "<colorbar>"]


# --------------------------------------------------------------------------------------------
# fixtures: tiny trajectories and search results
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gmm():
    return eight_gaussians()


@pytest.fixture(scope="module")
def trajs(gmm):
    x1 = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    return {
        "linear ODE": dynamics.sample(gmm, x1, "linear", steps=4, record=True),
        "linear SDE": dynamics.sample(gmm, x1, "linear", steps=4, sde=True, generator=g, record=True),
        "VP SDE": dynamics.sample(gmm.with_schedule("vp"), x1, "vp", steps=4, sde=True, generator=g, record=True),
    }


@pytest.fixture(scope="module")
def task():
    return rewards.task("rare-mode")


@pytest.fixture(scope="module")
def results(task):
    base, reward = task
    g = torch.Generator().manual_seed(0)
    return {
        m: search.run(m, base, reward, mode="vp-sde", budget=24, steps=4, runs=3, shape=(2,), generator=g, record=True)
        for m in ("bon", "smc", "svdd", "rbf")
    }


# --------------------------------------------------------------------------------------------
# constants
# --------------------------------------------------------------------------------------------
def test_colors_labels_styles_cover_everything_and_are_read_only():
    assert set(viz.METHOD_COLORS) == set(METHODS) | {"base"}
    assert len(set(viz.METHOD_COLORS.values())) == len(viz.METHOD_COLORS)  # one colour per method
    assert [viz.METHOD_LABELS[m] for m in METHODS] == ["BoN", "SoP", "SMC", "SVDD", "CoDe", "RBF", "RBF (strict)", "DPS", "RBF+DPS"]
    assert set(viz.MODE_STYLES) == set(search.MODES) == set(viz.MODE_LABELS)
    assert len({s["linestyle"] for s in viz.MODE_STYLES.values()}) == 3
    assert len({s["marker"] for s in viz.MODE_STYLES.values()}) == 3
    with pytest.raises(TypeError):
        viz.METHOD_COLORS["rbf"] = "red"
    with pytest.raises(TypeError):
        viz.MODE_STYLES["vp-sde"]["linestyle"] = ":"
    assert viz.method_color("RBF") == viz.METHOD_COLORS["rbf"]
    assert viz.method_color("my-scheme") == viz.method_color("my-scheme")  # stable fallback
    assert viz.method_label("rbf+dps") == "RBF+DPS" and viz.method_label("mine") == "mine"


def test_fallback_colors_avoid_the_builtin_method_colors():
    builtin = {to_rgba(c) for c in viz.METHOD_COLORS.values()}
    assert not builtin & {to_rgba(c) for c in viz._EXTRA_COLORS}
    names = [f"scheme-{i}" for i in range(200)] + ["mine", "Rollover", "linear-decay"]
    assert all(to_rgba(viz.method_color(n)) not in builtin for n in names)


# --------------------------------------------------------------------------------------------
# trajectories and densities
# --------------------------------------------------------------------------------------------
def test_trajectories_2d(trajs, gmm):
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    fig = viz.trajectories_2d(trajs, n_show=3, gmm=gmm, title="three samplers")
    assert isinstance(fig, Figure)
    assert plt.get_fignums() == open_before  # not registered with pyplot (no double display in notebooks)
    axs = np.array(panel_axes(fig)).reshape(2, 3)
    assert [a.get_title() for a in axs[0]] == ["linear ODE: $x_t$", "linear SDE: $x_t$", "VP SDE: $x_t$"]
    assert all(a.get_xlabel() for a in axs[1]) and all(a.get_ylabel() for a in axs[:, 0])
    assert axs[0, 0].get_legend() is not None
    lc = [c for c in axs[0, 1].collections if isinstance(c, LineCollection)]
    assert len(lc) == 1 and len(lc[0].get_segments()) == 4 * 3  # steps x shown particles
    t = lc[0].get_array()
    assert t.min() >= 0 and t.max() <= 1
    assert len(fig.axes) == 7  # 6 panels + the time colorbar


def test_trajectories_2d_errors(gmm):
    x1 = torch.randn(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="record=True"):
        viz.trajectories_2d({"ode": dynamics.sample(gmm, x1, steps=2)})
    with pytest.raises(ValueError, match="non-empty"):
        viz.trajectories_2d({})
    g3 = GaussianMixtureFlow(torch.zeros(1, 3), 1.0)
    tr3 = dynamics.sample(g3, torch.randn(2, 3, dtype=torch.float64), steps=2, record=True)
    with pytest.raises(ValueError, match="2D"):
        viz.trajectories_2d({"3d": tr3})


def test_density_panels(gmm, trajs):
    fig = viz.density_panels(gmm, times=(1.0, 0.6, 0.0), traj=trajs["linear SDE"], grid_size=24)
    axs = panel_axes(fig)
    assert len(axs) == 3
    for a in axs:
        assert a.get_xlabel() and sum(isinstance(c, QuadMesh) for c in a.collections) == 1
        assert same_color(scatter_colors(a)[0], viz.METHOD_COLORS["base"])
    assert "t = 1 (noise)" in axs[0].get_title() and "t = 0 (data)" in axs[2].get_title()
    assert "samples at t = 0.50" in axs[1].get_title()  # 0.6 is not on the 4-step grid: nearest shown
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        viz.density_panels(gmm, times=(1.5,))


def test_density_panels_matches_oracle(gmm):
    """The heatmap is exp(log_prob) of the oracle on the grid."""
    fig = viz.density_panels(gmm, times=(0.5,), grid_size=16, bounds=(-2.0, 2.0))
    mesh = next(c for c in panel_axes(fig)[0].collections if isinstance(c, QuadMesh))
    xs = torch.linspace(-2, 2, 16, dtype=torch.float64)
    gy, gx = torch.meshgrid(xs, xs, indexing="ij")
    want = gmm.log_prob(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1), 0.5).exp().reshape(16, 16)
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(16, 16), want.numpy(), rtol=1e-9)


def test_velocity_field(gmm):
    from toyflow.models import VelocityMLP

    mlp = VelocityMLP(dim=2, hidden=8, depth=1)
    times = (1.0, 0.5, 0.1)
    fig = viz.velocity_field({"MLP": mlp, "exact": gmm.velocity}, times, n=5, title="two fields")
    axs = np.array(panel_axes(fig)).reshape(2, 3)  # one row per field, one column per time
    assert fig.get_suptitle() == "two fields"
    assert axs[0, 0].get_title() == "MLP: $-u_t$ at t = 1" and axs[1, 2].get_title() == "exact: $-u_t$ at t = 0.1"
    assert all(a.get_xlabel() for a in axs[1]) and all(a.get_ylabel() for a in axs[:, 0])
    q = [c for c in axs[1, 1].collections if isinstance(c, Quiver)]
    assert len(q) == 1 and q[0].N == 5 * 5  # one arrow per grid point
    # arrows: unit length along -u_t; colour: the speed |u_t|
    pts = torch.as_tensor(q[0].get_offsets(), dtype=torch.float64)
    u = gmm.velocity(pts, torch.full((25,), 0.5, dtype=torch.float64))
    np.testing.assert_allclose(np.stack([q[0].U, q[0].V], 1), (-u / u.norm(dim=1, keepdim=True)).numpy(), atol=1e-9)
    np.testing.assert_allclose(q[0].get_array(), u.norm(dim=1).numpy(), rtol=1e-9)
    assert pts[:, 0].min() == pytest.approx(-2.8) and pts[:, 1].max() == pytest.approx(2.8)

    # draw into the caller's axes (1 field x 2 times), any model(x, t) callable works
    own = Figure()
    mine = own.subplots(1, 2)
    assert viz.velocity_field({"exact": gmm}, [0.0, 1.0], axes=mine, n=3) is own
    assert sum(isinstance(c, Quiver) for c in mine[1].collections) == 1


def test_velocity_field_errors(gmm):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        viz.velocity_field({"exact": gmm.velocity}, (1.5,))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        viz.velocity_field({"exact": gmm.velocity}, (0.5, -0.1))
    with pytest.raises(ValueError, match=r"'bad'.*\(4, 3\)"):
        viz.velocity_field({"bad": lambda x, t: torch.zeros(x.shape[0], 3)}, (0.5,), n=2)
    with pytest.raises(ValueError, match=r"'nan'.*NaN"):
        viz.velocity_field({"nan": lambda x, t: torch.full_like(x, float("nan"))}, (0.5,), n=2)
    with pytest.raises(ValueError, match="non-empty"):
        viz.velocity_field({}, (0.5,))
    with pytest.raises(TypeError, match="callable"):
        viz.velocity_field({"u": 3.0}, (0.5,))
    with pytest.raises(ValueError, match="axes must hold 2"):
        viz.velocity_field({"exact": gmm.velocity}, (0.5, 0.2), axes=Figure().subplots(1, 3), n=2)


def _np_density(oracle):
    return oracle.density.numpy() if torch.is_tensor(oracle.density) else np.asarray(oracle.density)


def test_mass_levels():
    """The thresholds enclose the asked mass: on a grid density, sum(d >= level) / sum(d) ~ q."""
    g = np.linspace(-6, 6, 601)  # wide enough that the cut-off tails do not count
    d = np.exp(-0.5 * (g[None, :] ** 2 + g[:, None] ** 2))
    levels = viz.mass_levels(d, (0.5, 0.9, 0.99))
    assert np.all(np.diff(levels) > 0)  # increasing, as contour wants
    for q, level in zip((0.99, 0.9, 0.5), levels):
        assert abs(d[d >= level].sum() / d.sum() - q) < 0.005
    # a 2D standard normal: the q region is the disc of radius sqrt(-2 log(1 - q))
    assert np.isclose(levels[1], np.exp(-0.5 * -2 * np.log(0.1)), rtol=0.02)
    assert viz.mass_levels(np.zeros((3, 3))).size == 0
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        viz.mass_levels(d, (0.5, 1.0))


def test_tilted_target(task):
    base, reward = task
    oracle = metrics.tilted_oracle(base, reward, 0.2, grid_size=32)
    g = torch.Generator().manual_seed(0)
    samples = {"rbf": torch.randn(10, 2, generator=g), "bon": torch.randn(7, 2, generator=g)}
    fig = viz.tilted_target(oracle, samples)
    ax = panel_axes(fig)[0]
    assert ax.get_xlabel() and ax.get_ylabel()
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "RBF (n = 10)" in texts and "BoN (n = 7)" in texts
    cols = scatter_colors(ax)
    assert same_color(cols[0], viz.METHOD_COLORS["rbf"]) and same_color(cols[1], viz.METHOD_COLORS["bon"])
    assert "lambda" in fig.get_suptitle()

    fig = viz.tilted_target(oracle, samples, panels=True)
    assert [a.get_title() for a in panel_axes(fig)] == ["RBF", "BoN"]
    # p* is drawn in its own colour, as contours around 50 / 90 / 99 % of its mass, with a legend entry
    ax = panel_axes(fig)[0]
    assert "$p^*$: 50/90/99 % mass" in [t.get_text() for t in ax.get_legend().get_texts()]
    levels = viz.mass_levels(_np_density(oracle))
    contours = [c for c in ax.collections if hasattr(c, "levels") and same_color(c.get_edgecolor()[0], viz.TILTED_COLOR)]
    assert len(contours) == 1 and np.allclose(contours[0].levels, levels)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        viz.tilted_target(oracle, {"rbf": torch.zeros(4, 3)})
    with pytest.raises(TypeError, match="TiltedOracle"):
        viz.tilted_target(object())


# --------------------------------------------------------------------------------------------
# search histories
# --------------------------------------------------------------------------------------------
def test_budget_allocation(results):
    fig = viz.budget_allocation(results)
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_legend() is not None
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    K = results["bon"].steps
    assert len(bars) == K * len(results)
    for i, m in enumerate(results):  # grouped bars, one colour per method, heights = mean NFE per step
        group = bars[i * K : (i + 1) * K]
        assert all(same_color(b.get_facecolor(), viz.METHOD_COLORS[m]) for b in group)
        want = results[m].nfe_per_step.double().mean(0).numpy()
        np.testing.assert_allclose([b.get_height() for b in group], want)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("RBF:") for t in texts) and any("uniform share" in t for t in texts)

    fig = viz.budget_allocation(results, run=1, kind="step")
    lines = [l for l in fig.axes[0].get_lines() if l.get_label().startswith("SMC")]
    assert same_color(lines[0].get_color(), viz.METHOD_COLORS["smc"])
    np.testing.assert_allclose(lines[0].get_ydata(), results["smc"].nfe_per_step[1].numpy())
    with pytest.raises(ValueError, match="run"):
        viz.budget_allocation(results, run=3)
    with pytest.raises(ValueError, match="error"):
        viz.budget_allocation(results, error="var")


def test_budget_allocation_colors_override(results):
    # two results of the same method: same colour by default, told apart with colors=
    two = {"rbf": results["rbf"], "rbf, other seed": results["rbf"], "bon": results["bon"]}
    K = results["rbf"].steps

    def group_colors(fig):
        bars = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
        return [bars[i * K].get_facecolor() for i in range(len(two))]

    c = group_colors(viz.budget_allocation(two))
    assert same_color(c[0], viz.METHOD_COLORS["rbf"]) and same_color(c[1], viz.METHOD_COLORS["rbf"])
    c = group_colors(viz.budget_allocation(two, colors={"rbf, other seed": "tab:red", "BON": "k"}))
    assert same_color(c[0], viz.METHOD_COLORS["rbf"])  # not overridden: the method's colour
    assert same_color(c[1], "tab:red") and same_color(c[2], "k")  # by result name, case-insensitive
    fig = viz.budget_allocation({"mine": results["rbf"]}, colors={"rbf": "C2"}, kind="step")  # by method
    assert same_color(fig.axes[0].get_lines()[0].get_color(), "C2")
    with pytest.raises(ValueError, match="not a matplotlib colour"):
        viz.budget_allocation(two, colors={"rbf": "no-such-colour"})
    with pytest.raises(TypeError, match="mapping"):
        viz.budget_allocation(two, colors=["red"])


def test_rbf_steps(results):
    res = results["rbf"]
    fig = viz.rbf_steps(res, run=1)
    top, bot = fig.axes
    assert top.get_ylabel() and bot.get_xlabel() and bot.get_ylabel()
    assert top.get_legend() is not None and bot.get_legend() is not None
    h = res.history
    # the accepted stars: one per grid time (single path), in RBF's colour, at the accepted rewards
    stars = [c for c in top.collections if isinstance(c, PathCollection)][1]
    assert same_color(stars.get_facecolor()[0], viz.METHOD_COLORS["rbf"])
    acc = torch.cat([h.proposal_rewards[k][1][h.accepted[k][1]] for k in range(len(h.accepted))])
    np.testing.assert_allclose(np.sort(stars.get_offsets()[:, 1]), np.sort(acc.double().numpy()))
    # the spent bars equal the history's NFE per step; quota bars sum fresh + rolled-over
    spent = [p.get_height() for p in bot.patches if math.isclose(p.get_width(), 0.42)]  # the "NFE spent" bars
    np.testing.assert_allclose(spent[-res.steps :], h.nfe[1].numpy())
    assert "run 1" in top.get_title()

    fig = viz.rbf_steps(results["bon"], run=0)  # no quota: NFE bars only
    assert "no per-step quota" in fig.axes[1].get_title()
    with pytest.raises(ValueError, match="run"):
        viz.rbf_steps(res, run=5)


def test_rbf_steps_needs_history(task):
    base, reward = task
    res = search.run("rbf", base, reward, budget=12, steps=3, runs=1, shape=(2,), generator=torch.Generator())
    with pytest.raises(ValueError, match="record=True"):
        viz.rbf_steps(res)


def test_smc_ess(results):
    res = results["smc"]
    fig = viz.smc_ess(res)
    ax = fig.axes[0]
    assert ax.get_xlabel() and "ESS" in ax.get_ylabel() and ax.get_legend() is not None
    mean = [l for l in ax.get_lines() if l.get_label().startswith("mean")][0]
    assert same_color(mean.get_color(), viz.METHOD_COLORS["smc"])
    np.testing.assert_allclose(mean.get_ydata(), res.history.ess.double().mean(0).numpy(), rtol=1e-6)
    thr = [l for l in ax.get_lines() if "resample" in l.get_label()][0]
    N = res.budget // res.steps
    assert thr.get_ydata()[0] == pytest.approx(res.options.ess_threshold * N)
    with pytest.raises(ValueError, match="ESS"):
        viz.smc_ess(results["bon"])


# --------------------------------------------------------------------------------------------
# benchmark tables
# --------------------------------------------------------------------------------------------
COLUMNS = ("task", "model", "method", "mode", "budget", "runs", "reward_mean", "reward_se", "realism",
           "diversity", "nfe_mean", "wall_time_s")


@pytest.fixture
def results_csv(tmp_path):
    rows = []
    for task in ("rare-mode", "counting"):
        for method in ("bon", "rbf"):
            for mode in ("linear-ode", "vp-sde"):
                for b in (20, 40, 80):
                    r = 0.1 * math.log(b) + (0.2 if method == "rbf" else 0.0)
                    se = "" if (method, b) == ("bon", 40) else 0.01  # an empty cell reads as None
                    rows.append(dict(task=task, model="gmm", method=method, mode=mode, budget=b, runs=8,
                                     reward_mean=r, reward_se=se, realism=-1.0 - r, diversity=1.5,
                                     nfe_mean=b - 1.5, wall_time_s=0.25))
    path = tmp_path / "results.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return path


def test_read_results_csv(results_csv, tmp_path):
    rows = viz.read_results_csv(results_csv)
    assert len(rows) == 24 and set(rows[0]) == set(COLUMNS)
    r = rows[0]
    assert isinstance(r["budget"], int) and isinstance(r["reward_mean"], float) and isinstance(r["nfe_mean"], float)
    assert r["task"] == "rare-mode" and r["method"] == "bon" and r["mode"] == "linear-ode"
    assert any(row["reward_se"] is None for row in rows)
    with pytest.raises(FileNotFoundError):
        viz.read_results_csv(tmp_path / "missing.csv")


def test_scaling_curves(results_csv):
    fig = viz.scaling_curves(results_csv)  # a path works as well as rows
    axs = [a for a in fig.axes if a.get_visible()]
    assert [a.get_title() for a in axs] == ["task: rare-mode", "task: counting"]
    assert fig.legends and all(a.get_xlabel() == "NFE budget per run" and a.get_ylabel() for a in axs)
    lines = {l.get_label(): l for l in axs[0].get_lines()}
    assert set(lines) == {"BoN, Linear ODE", "BoN, VP SDE", "RBF, Linear ODE", "RBF, VP SDE"}
    l = lines["RBF, Linear ODE"]
    assert same_color(l.get_color(), viz.METHOD_COLORS["rbf"])
    assert l.get_linestyle() == ":" and l.get_marker() == viz.MODE_STYLES["linear-ode"]["marker"]
    assert list(l.get_xdata()) == [20, 40, 80] and axs[0].get_xscale() == "log"
    assert lines["BoN, VP SDE"].get_linestyle() == "-"

    fig = viz.scaling_curves(viz.read_results_csv(results_csv), metric="diversity", error=None, logx=False)
    assert fig.axes[0].get_ylabel().startswith("diversity")


def _crowded_rows(models=("oracle",)):
    """A grid like the README's: 7 methods x 3 modes per task (21 curves), two tasks."""
    rows = []
    for task in ("rare-mode", "counting"):
        for model in models:
            for method in ("bon", "sop", "smc", "svdd", "code", "rbf", "rbf-strict"):
                for mode in ("linear-ode", "linear-sde", "vp-sde"):
                    for b in (50, 200):
                        rows.append(dict(task=task, model=model, method=method, mode=mode, budget=b,
                                         reward_mean=0.1 * len(method) + b / 1000, reward_se=0.01))
    return rows


def test_scaling_curves_facets_crowded_panels():
    """21 curves in a panel do not read on a slide: "auto" gives one panel per task and mode."""
    fig = viz.scaling_curves(_crowded_rows())
    axs = [a for a in fig.axes if a.get_visible()]
    assert len(axs) == 6  # 2 tasks x 3 modes
    assert [a.get_title() for a in axs[:3]] == ["Linear ODE", "Linear SDE", "VP SDE"]
    assert axs[0].get_ylabel().startswith("task: rare-mode") and axs[3].get_ylabel().startswith("task: counting")
    for a in axs:
        assert len(a.get_lines()) == 7 <= viz.MAX_CURVES_PER_PANEL  # the methods
        assert {l.get_linestyle() for l in a.get_lines()} == {"-"}
    lines = {l.get_label(): l for l in axs[1].get_lines()}
    assert same_color(lines["RBF, Linear SDE"].get_color(), viz.METHOD_COLORS["rbf"])
    assert lines["RBF, Linear SDE"].get_marker() == viz.MODE_STYLES["linear-sde"]["marker"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["BoN", "SoP", "SMC", "SVDD", "CoDe", "RBF", "RBF (strict)"]
    # the panels of one task share their y axis (same reward scale), and so compare at a glance
    assert axs[0].get_shared_y_axes().joined(axs[0], axs[2])

    two = viz.scaling_curves(_crowded_rows(models=("oracle", "mlp")))
    axs = [a for a in two.axes if a.get_visible()]
    assert len(axs) == 12 and axs[3].get_title() == "Linear ODE (model: mlp)"

    by_method = viz.scaling_curves(_crowded_rows(), facet="method")
    axs = [a for a in by_method.axes if a.get_visible()]
    assert len(axs) == 14 and axs[0].get_title() == "BoN" and len(axs[0].get_lines()) == 3
    assert [t.get_text() for t in by_method.legends[0].get_texts()] == ["Linear ODE", "Linear SDE", "VP SDE"]

    flat = viz.scaling_curves(_crowded_rows(), facet=None)  # one panel per task, as before
    assert [len(a.get_lines()) for a in flat.axes if a.get_visible()] == [21, 21]
    with pytest.raises(ValueError, match="facet must be"):
        viz.scaling_curves(_crowded_rows(), facet="task")


def test_scaling_curves_facets_into_your_axes():
    from matplotlib.figure import Figure

    fig = Figure()
    axes = fig.subplots(2, 3)
    assert viz.scaling_curves(_crowded_rows(), facet="mode", axes=axes) is fig
    assert all(len(a.get_lines()) == 7 for a in axes.ravel())
    with pytest.raises(ValueError, match="6 axes"):
        viz.scaling_curves(_crowded_rows(), facet="mode", axes=Figure().subplots(1, 3))


def test_scaling_curves_colors_override(results_csv):
    fig = viz.scaling_curves(results_csv, colors={"rbf": "#123456"})
    ax = [a for a in fig.axes if a.get_visible()][0]
    lines = {l.get_label(): l for l in ax.get_lines()}
    assert same_color(lines["RBF, VP SDE"].get_color(), "#123456")
    assert same_color(lines["BoN, VP SDE"].get_color(), viz.METHOD_COLORS["bon"])
    legend = {t.get_text(): h for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)}
    assert same_color(legend["RBF"].get_color(), "#123456")  # the legend follows the override


def test_scaling_curves_errors(results_csv):
    rows = viz.read_results_csv(results_csv)
    with pytest.raises(ValueError, match="reward_sd"):
        viz.scaling_curves(rows, error="reward_sd")
    with pytest.raises(ValueError, match="same budget"):
        viz.scaling_curves(rows + rows[:1])
    with pytest.raises(ValueError, match="no result rows"):
        viz.scaling_curves([])


def test_realism_reward_scatter(results_csv):
    rows = viz.read_results_csv(results_csv)
    fig = viz.realism_reward_scatter(rows)
    axs = [a for a in fig.axes if a.get_visible()]
    assert len(axs) == 2 and fig.legends
    assert axs[0].get_xlabel() and "realism" in axs[0].get_ylabel()
    pts = [c for c in axs[0].collections if isinstance(c, PathCollection)]
    assert len(pts) == 4  # one per (method, mode)
    assert {tuple(np.round(to_rgba(c.get_facecolor()[0])[:3], 3)) for c in pts} == {
        tuple(np.round(to_rgba(viz.METHOD_COLORS[m])[:3], 3)) for m in ("bon", "rbf")
    }
    sizes = pts[0].get_sizes()
    assert sizes[0] < sizes[-1]  # larger budget, larger marker


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------
def test_image_grid():
    imgs = torch.rand(10, 1, 28, 28) * 2 - 1
    fig = viz.image_grid(imgs, nrow=4, title="ten digits", labels=torch.arange(10))
    ax = fig.axes[0]
    assert ax.get_title() == "ten digits"
    shown = ax.get_images()[0].get_array()
    assert shown.shape == (3 * 30 + 2, 4 * 30 + 2)  # 3 rows x 4 columns of 28 px + 2 px padding
    np.testing.assert_allclose(shown[2:30, 2:30], imgs[0, 0].numpy(), atol=1e-6)
    assert [t.get_text() for t in ax.texts][:3] == ["0", "1", "2"]
    viz.image_grid(torch.full((2, 1, 28, 28), 3.0))  # out of range: clipped, no error


def test_realism_reward_scatter_facets_crowded_panels():
    rows = [dict(r, realism=-r["reward_mean"]) for r in _crowded_rows()]
    fig = viz.realism_reward_scatter(rows)
    axs = [a for a in fig.axes if a.get_visible()]
    assert [a.get_title() for a in axs[:3]] == ["Linear ODE", "Linear SDE", "VP SDE"] and len(axs) == 6
    assert all(len([c for c in a.collections if isinstance(c, PathCollection)]) == 7 for a in axs)
    assert [t.get_text() for t in fig.legends[0].get_texts()][:7] == ["BoN", "SoP", "SMC", "SVDD", "CoDe", "RBF",
                                                                      "RBF (strict)"]
    flat = viz.realism_reward_scatter(rows, facet=None)
    assert len([a for a in flat.axes if a.get_visible()]) == 2
    with pytest.raises(ValueError, match="by mode only"):
        viz.realism_reward_scatter(rows, facet="method")


def test_image_grid_row_labels():
    imgs = torch.zeros(8, 1, 28, 28)
    fig = viz.image_grid(imgs, nrow=4, row_labels=["BoN", "RBF\nmean 0.9"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["BoN", "RBF\nmean 0.9"]
    assert np.allclose(ax.get_yticks(), [2 + 13.5, 32 + 13.5])  # the middle of each row of tiles
    assert ax.get_xticks().size == 0 and not any(s.get_visible() for s in ax.spines.values())
    with pytest.raises(ValueError, match="one name per grid row: 8 images at 4 per row make 2 rows, got 3"):
        viz.image_grid(imgs, nrow=4, row_labels=["a", "b", "c"])


def test_image_grid_errors():
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        viz.image_grid(torch.zeros(4, 28, 28))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        viz.image_grid(torch.zeros(4, 3, 28, 28))
    with pytest.raises(ValueError, match="one entry per image"):
        viz.image_grid(torch.zeros(4, 1, 28, 28), labels=["a"])
    with pytest.raises(ValueError, match="NaN"):
        viz.image_grid(torch.full((1, 1, 28, 28), float("nan")))
    with pytest.raises(ValueError, match="nrow"):
        viz.image_grid(torch.zeros(4, 1, 28, 28), nrow=0)


def test_trajectory_strip():
    g = torch.Generator().manual_seed(0)
    mix = GaussianMixtureFlow(torch.rand(2, 64, dtype=torch.float64) * 2 - 1, 0.2, shape=(1, 8, 8))
    tr = dynamics.sample(mix, torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64), steps=6, record=True)
    fig = viz.trajectory_strip(tr, index=1, n_cols=4)
    axs = np.array(fig.axes).reshape(2, 4)
    assert axs[0, 0].get_ylabel() == "$x_t$" and "hat" in axs[1, 0].get_ylabel()
    assert axs[0, 0].get_title() == "t = 1.00" and axs[0, -1].get_title() == "t = 0.00"
    np.testing.assert_allclose(axs[1, -1].get_images()[0].get_array(), tr.x[1, 0].clamp(-1, 1).numpy())
    with pytest.raises(ValueError, match="index"):
        viz.trajectory_strip(tr, index=2)
    with pytest.raises(ValueError, match="image trajectories"):
        viz.trajectory_strip(dynamics.sample(eight_gaussians(), torch.randn(2, 2, dtype=torch.float64), steps=2,
                                             record=True))


# --------------------------------------------------------------------------------------------
# animation and GIF
# --------------------------------------------------------------------------------------------
def test_particles_animation_gif(trajs, results, gmm, tmp_path):
    anim = viz.particles_animation(trajs["VP SDE"], gmm=gmm)
    assert isinstance(anim, animation.FuncAnimation)
    assert all(a.get_xlabel() for a in anim._fig.axes[:1])
    path = viz.save_gif(anim, tmp_path / "sub" / "traj.gif", fps=5, dpi=40)
    with Image.open(path) as im:
        assert im.format == "GIF" and im.n_frames == 4 + 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["traj.gif"]  # no temporary file left

    anim = viz.particles_animation(results["rbf"], run=2)
    pts = [c for c in anim._fig.axes[0].collections if isinstance(c, PathCollection)][0]
    assert same_color(pts.get_facecolor()[0], viz.METHOD_COLORS["rbf"])
    path = viz.save_gif(anim, tmp_path / "rbf.gif", dpi=40)
    with Image.open(path) as im:
        assert im.n_frames == results["rbf"].steps + 1

    anim = viz.particles_animation(results["smc"].history, tail=2)  # tails follow resampling ancestry
    viz.save_gif(anim, tmp_path / "smc.gif", dpi=30)


def test_save_gif_is_atomic_and_checks(tmp_path, trajs):
    path = tmp_path / "keep.gif"
    path.write_bytes(b"old")
    fig = Figure()
    ax = fig.add_subplot()
    ax.set_xlabel("x")

    def broken(k):
        if k == 1:
            raise RuntimeError("frame failed")
        return ()

    anim = animation.FuncAnimation(fig, broken, frames=3, cache_frame_data=False)
    with pytest.raises(RuntimeError, match="frame failed"):
        viz.save_gif(anim, path)
    assert path.read_bytes() == b"old"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.gif"]  # the temporary file is gone
    with pytest.raises(ValueError, match=r"\.gif"):
        viz.save_gif(anim, tmp_path / "x.png")
    with pytest.raises(TypeError, match="Animation"):
        viz.save_gif(fig, tmp_path / "x.gif")
