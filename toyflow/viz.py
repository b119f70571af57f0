"""Figures for toyflow: trajectories, exact densities, velocity fields, tilted targets, budget allocation,
scaling curves.

Every function returns a :class:`matplotlib.figure.Figure` (or a
:class:`matplotlib.animation.FuncAnimation`) and never calls ``plt.show``. Figures are created with
``matplotlib.figure.Figure`` and are *not* registered with pyplot: a notebook shows the returned
figure once (leave it as the cell's last expression), loops do not pile up open figures, and
scripts save them with ``fig.savefig(path)``. Functions that take ``ax=`` / ``axes=`` draw into
your own axes instead (e.g. from ``plt.subplots``) and return their figure.

One colour per method everywhere (:data:`METHOD_COLORS`, labels in :data:`METHOD_LABELS`) and one
line style / marker / hatch per generation mode (:data:`MODE_STYLES`, labels in :data:`MODE_LABELS`).
Time follows the package convention: t = 1 is noise, t = 0 is data.

Shapes: 2D particles are (B, 2); MNIST images (N, 1, 28, 28) in [-1, 1]; a recorded
:class:`~toyflow.dynamics.Trajectory` holds ``xs`` (K + 1, B, *shape) and ``x0s`` (K, B, *shape);
a :class:`~toyflow.search.SearchResult` holds ``nfe_per_step`` (R, K) and, with ``record=True``,
a :class:`~toyflow.search.SearchHistory`.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import tempfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional, Union

import numpy as np
import torch
from matplotlib import animation
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

__all__ = [
    "METHOD_COLORS",
    "METHOD_LABELS",
    "MODE_STYLES",
    "MODE_LABELS",
    "method_color",
    "method_label",
    "mode_style",
    "mode_label",
    "trajectories_2d",
    "density_panels",
    "velocity_field",
    "tilted_target",
    "mass_levels",
    "budget_allocation",
    "rbf_steps",
    "smc_ess",
    "eta_ratio_plot",
    "read_results_csv",
    "scaling_curves",
    "realism_reward_scatter",
    "image_grid",
    "trajectory_strip",
    "particles_animation",
    "save_gif",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Colours, labels, styles (read-only)
# --------------------------------------------------------------------------------------------
#: One colour per method (Okabe-Ito based, colour-blind friendly). "base" is plain sampling.
METHOD_COLORS: Mapping[str, str] = MappingProxyType(
    {
        "base": "#4d4d4d",
        "bon": "#0072b2",
        "sop": "#56b4e9",
        "smc": "#009e73",
        "svdd": "#e69f00",
        "code": "#cc79a7",
        "rbf": "#d55e00",
        "rbf-strict": "#f4a582",
        "dps": "#a6761d",
        "rbf+dps": "#6a3d9a",
    }
)

#: Display names of the methods.
METHOD_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "base": "Base",
        "bon": "BoN",
        "sop": "SoP",
        "smc": "SMC",
        "svdd": "SVDD",
        "code": "CoDe",
        "rbf": "RBF",
        "rbf-strict": "RBF (strict)",
        "dps": "DPS",
        "rbf+dps": "RBF+DPS",
    }
)

#: Line style, marker and bar hatch of each generation mode.
MODE_STYLES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "linear-ode": MappingProxyType({"linestyle": ":", "marker": "s", "hatch": ".."}),
        "linear-sde": MappingProxyType({"linestyle": "--", "marker": "^", "hatch": "//"}),
        "vp-sde": MappingProxyType({"linestyle": "-", "marker": "o", "hatch": ""}),
    }
)

#: Display names of the generation modes.
MODE_LABELS: Mapping[str, str] = MappingProxyType(
    {"linear-ode": "Linear ODE", "linear-sde": "Linear SDE", "vp-sde": "VP SDE"}
)

# colours for method names outside METHOD_COLORS (your own schemes); chosen by a stable hash.
# None of them is a METHOD_COLORS colour, so a custom scheme never looks like a built-in method.
_EXTRA_COLORS = tuple(
    c
    for c in ("#17becf", "#bcbd22", "#9467bd", "#e377c2", "#393b79", "#637939", "#843c39", "#7b4173")
    if to_rgba(c) not in {to_rgba(m) for m in METHOD_COLORS.values()}
)
_FALLBACK_MODE_STYLE = MappingProxyType({"linestyle": "-.", "marker": "D", "hatch": "xx"})
_TIME_CMAP = "viridis"
_REJECTED_COLOR = "0.55"

_METRIC_LABELS = MappingProxyType(
    {
        "reward_mean": "mean reward of the samples",
        "realism": "realism: mean log $p_0(x)$",
        "diversity": "diversity: mean pairwise distance",
        "nfe_mean": "mean NFE spent per run",
        "wall_time_s": "wall time (s)",
        "budget": "NFE budget per run",
    }
)


def _canon(method: str) -> str:
    if not isinstance(method, str):
        raise TypeError(f"a method name must be a string, got {type(method).__name__}")
    return method.strip().lower()


def _registered_method(name: str):
    """The :class:`toyflow.search.Method` registered under ``name`` (canonical), or None."""
    from toyflow import search

    return search.get_method(name) if name in search.METHODS else None


def method_color(method: str) -> str:
    """Colour of ``method`` (case-insensitive). Names outside :data:`METHOD_COLORS` take the
    ``color`` of the :class:`toyflow.search.Method` registered under that name, or else a fixed
    colour from a stable hash of the name, so your own schemes are consistent across figures; it is
    never one of the built-in methods' colours, but two custom names can share one (there are
    8 fallback colours): pick colours yourself with ``colors=`` in :func:`budget_allocation` and
    :func:`scaling_curves`."""
    m = _canon(method)
    if m in METHOD_COLORS:
        return METHOD_COLORS[m]
    registered = _registered_method(m)
    if registered is not None and registered.color:
        return registered.color
    return _EXTRA_COLORS[zlib.crc32(m.encode()) % len(_EXTRA_COLORS)]


def method_label(method: str) -> str:
    """Display name of ``method`` ("rbf" -> "RBF"; a registered method's ``label``); other names are
    returned unchanged."""
    m = _canon(method)
    if m in METHOD_LABELS:
        return METHOD_LABELS[m]
    registered = _registered_method(m)
    return registered.label if registered is not None and registered.label else method


def mode_style(mode: str) -> Mapping[str, str]:
    """``{"linestyle", "marker", "hatch"}`` of a generation mode (a dash-dot style for unknown ones)."""
    return MODE_STYLES.get(_canon(mode), _FALLBACK_MODE_STYLE)


def mode_label(mode: str) -> str:
    """Display name of a mode ("vp-sde" -> "VP SDE"); other names are returned unchanged."""
    return MODE_LABELS.get(_canon(mode), mode)


def _check_colors(colors: Optional[Mapping[str, str]]) -> dict[str, str]:
    """A ``colors=`` override as {canonical name: colour}, each value checked to be a matplotlib colour."""
    if colors is None:
        return {}
    if not isinstance(colors, Mapping):
        raise TypeError(f"colors must be a mapping name -> matplotlib colour, e.g. {{'mine': 'C3'}}, "
                        f"got {type(colors).__name__}")
    out = {}
    for name, c in colors.items():
        try:
            to_rgba(c)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"colors[{name!r}] = {c!r} is not a matplotlib colour; use e.g. 'C3', 'tab:red' or '#1f77b4'"
            ) from e
        out[_canon(name)] = c
    return out


def _pick_color(colors: Mapping[str, str], *names: str) -> str:
    """The first of ``names`` found in a checked ``colors`` override, else the last name's method colour."""
    for name in names:
        if _canon(name) in colors:
            return colors[_canon(name)]
    return method_color(names[-1])


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def _np(x: Any, name: str = "array") -> np.ndarray:
    """A tensor / array-like as a float64 numpy array (detached, on CPU)."""
    if torch.is_tensor(x):
        return x.detach().to("cpu", torch.float64).numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a tensor or an array of numbers, got {type(x).__name__}") from e


def _np_bool(x: Any) -> np.ndarray:
    if torch.is_tensor(x):
        return x.detach().to("cpu").numpy().astype(bool)
    return np.asarray(x, dtype=bool)


def _new_figure(nrows: int, ncols: int, figsize: tuple[float, float], **subplots_kw):
    """A constrained-layout Figure (not registered with pyplot) and its axes as a (nrows, ncols) array."""
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplots_kw)
    return fig, axes


def _root_figure(ax) -> Figure:
    try:
        return ax.get_figure(root=True)
    except TypeError:  # matplotlib < 3.10
        return ax.figure


def _axes_grid(axes, nrows: int, ncols: int, figsize: tuple[float, float], **subplots_kw):
    """Use the caller's axes (any array-like holding nrows * ncols axes) or make a new figure."""
    if axes is None:
        return _new_figure(nrows, ncols, figsize, **subplots_kw)
    arr = np.asarray(axes, dtype=object).reshape(-1)
    if arr.size != nrows * ncols:
        raise ValueError(f"axes must hold {nrows * ncols} axes ({nrows} x {ncols}) for this figure, got {arr.size}")
    return _root_figure(arr[0]), arr.reshape(nrows, ncols)


def _check_bounds(bounds) -> tuple[tuple[float, float], tuple[float, float]]:
    b = np.asarray(bounds, dtype=np.float64)
    if b.shape == (2,):
        b = np.stack([b, b])
    if b.shape != (2, 2) or not np.all(b[:, 1] > b[:, 0]):
        raise ValueError(f"bounds must be (lo, hi) or ((x_lo, x_hi), (y_lo, y_hi)) with lo < hi, got {bounds!r}")
    return (float(b[0, 0]), float(b[0, 1])), (float(b[1, 0]), float(b[1, 1]))


def _check_gmm_2d(gmm) -> None:
    if not hasattr(gmm, "log_prob"):
        raise TypeError(f"gmm must be a GaussianMixtureFlow (with .log_prob(x, t)), got {type(gmm).__name__}")
    if tuple(getattr(gmm, "shape", (2,))) != (2,):
        raise ValueError(f"this figure draws 2D densities; the mixture has sample shape {gmm.shape}")


def _density_grid(gmm, t: float, bounds, grid_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """p_t of a 2D mixture on a grid: xs (G,), ys (G,), density (G, G) indexed [iy, ix]."""
    (x_lo, x_hi), (y_lo, y_hi) = _check_bounds(bounds)
    xs = torch.linspace(x_lo, x_hi, grid_size, dtype=torch.float64)
    ys = torch.linspace(y_lo, y_hi, grid_size, dtype=torch.float64)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1).to(gmm.means.device)
    with torch.no_grad():
        dens = torch.exp(gmm.log_prob(pts, float(t))).reshape(grid_size, grid_size)
    return xs.numpy(), ys.numpy(), _np(dens)


def _density_fill(ax, gx: np.ndarray, gy: np.ndarray, dens: np.ndarray, alpha: float) -> None:
    """Filled grey contours of a density, leaving the near-zero region unfilled (white)."""
    top = float(dens.max())
    if top > 0:
        ax.contourf(gx, gy, dens, levels=np.linspace(0.03 * top, top, 8), cmap="Greys", alpha=alpha, zorder=0)


def _set_square(ax, bounds) -> None:
    (x_lo, x_hi), (y_lo, y_hi) = _check_bounds(bounds)
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.set_aspect("equal")


def _label_xy(ax, x: bool = True, y: bool = True) -> None:
    if x:
        ax.set_xlabel("$x[0]$")
    if y:
        ax.set_ylabel("$x[1]$")


def _step_ticks(ax, times: Optional[np.ndarray], n: int) -> None:
    """Ticks k = 0 .. n - 1 labelled "k" and, when times are known, "t_k" below (at most ~12 ticks)."""
    stride = max(1, math.ceil(n / 12))
    ks = np.arange(0, n, stride)
    ax.set_xticks(ks)
    if times is not None and len(times) >= n:
        ax.set_xticklabels([f"{k}\n{times[k]:.2f}" for k in ks])
    else:
        ax.set_xticklabels([str(k) for k in ks])


_STEP_XLABEL = "grid step $k$ (time $t_k$ below; 1 = noise, 0 = data)"


def _get_traj_arrays(traj, name: str, need_x0: bool) -> tuple[np.ndarray, Optional[np.ndarray], np.ndarray]:
    """(xs (K+1, B, *shape), x0 path (K+1, B, *shape) or None, times (K+1,)) from a recorded Trajectory."""
    xs = getattr(traj, "xs", None)
    if xs is None:
        raise ValueError(
            f"trajectory {name!r} has no recorded states; sample it with dynamics.sample(..., record=True)"
        )
    xs = _np(xs, name)
    times = _np(traj.times, "times")
    if xs.ndim < 3 or xs.shape[0] != times.shape[0]:
        raise ValueError(
            f"trajectory {name!r}: xs must be (K + 1, B, *shape) with K + 1 = {times.shape[0]}, got {xs.shape}"
        )
    x0 = None
    if need_x0:
        if getattr(traj, "x0s", None) is None:
            raise ValueError(f"trajectory {name!r} has no x0s; sample it with dynamics.sample(..., record=True)")
        x0 = np.concatenate([_np(traj.x0s), xs[-1:]], axis=0)  # x0_hat at t = 0 is the sample itself
    return xs, x0, times


def _path_collection(path: np.ndarray, times: np.ndarray, cmap: str, norm: Normalize, lw: float = 0.8):
    """Segments of particle paths path: (T, B, 2) coloured by the midpoint time of each segment."""
    segs = np.stack([path[:-1], path[1:]], axis=2)  # (T-1, B, 2, 2)
    tmid = np.repeat(0.5 * (times[:-1] + times[1:]), path.shape[1])
    lc = LineCollection(segs.reshape(-1, 2, 2), cmap=cmap, norm=norm, linewidths=lw, alpha=0.85)
    lc.set_array(tmid)
    return lc


# --------------------------------------------------------------------------------------------
# Trajectories and exact densities
# --------------------------------------------------------------------------------------------
def trajectories_2d(
    trajs: Mapping[str, Any],
    *,
    n_show: int = 64,
    show_x0: bool = True,
    gmm=None,
    bounds=(-3.0, 3.0),
    grid_size: int = 150,
    axes=None,
    title: Optional[str] = None,
) -> Figure:
    """One column per sampler: particle paths x_t (top) and x0_hat(x_t) (bottom), coloured by time.

    trajs: name -> recorded Trajectory of 2D particles (``xs`` (K + 1, B, 2), ``x0s`` (K, B, 2)),
    e.g. {"linear ODE": ..., "linear SDE": ..., "VP SDE": ...} from the same initial noise. The first
    ``n_show`` particles are drawn. ``gmm``: draw the data density p_0 underneath.
    """
    if hasattr(trajs, "xs"):
        trajs = {"trajectory": trajs}
    if not isinstance(trajs, Mapping) or not trajs:
        raise ValueError("trajs must be a non-empty mapping name -> recorded Trajectory")
    if n_show < 1:
        raise ValueError(f"n_show must be >= 1, got {n_show}")
    data = {}
    for name, tr in trajs.items():
        xs, x0, times = _get_traj_arrays(tr, name, show_x0)
        if xs.shape[2:] != (2,):
            raise ValueError(f"trajectories_2d draws 2D particles; trajectory {name!r} has sample shape {xs.shape[2:]}")
        data[name] = (xs[:, :n_show], None if x0 is None else x0[:, :n_show], times)
    nrows, ncols = (2 if show_x0 else 1), len(data)
    fig, axs = _axes_grid(axes, nrows, ncols, (3.3 * ncols + 1.0, 3.3 * nrows + 0.6), sharex=True, sharey=True)
    norm = Normalize(0.0, 1.0)
    background = None
    if gmm is not None:
        _check_gmm_2d(gmm)
        background = _density_grid(gmm, 0.0, bounds, grid_size)
    for j, (name, (xs, x0, times)) in enumerate(data.items()):
        rows = [(xs, f"{name}: $x_t$")]
        if show_x0:
            rows.append((x0, f"{name}: $\\hat{{x}}_0(x_t)$"))
        for i, (path, ttl) in enumerate(rows):
            ax = axs[i, j]
            if background is not None:
                gx, gy, dens = background
                _density_fill(ax, gx, gy, dens, alpha=0.45)
            ax.add_collection(_path_collection(path, times, _TIME_CMAP, norm))
            ax.scatter(path[0, :, 0], path[0, :, 1], s=6, c="0.6", marker="x", linewidths=0.6, zorder=2)
            ax.scatter(path[-1, :, 0], path[-1, :, 1], s=10, c="k", zorder=3)
            ax.set_title(ttl)
            _set_square(ax, bounds)
            _label_xy(ax, x=(i == nrows - 1), y=(j == 0))
    handles = [
        Line2D([], [], color=to_rgba("0.6"), marker="x", ls="none", label="start (t = 1)"),
        Line2D([], [], color="k", marker="o", ms=4, ls="none", label="end (t = 0)"),
        Line2D([], [], color=ScalarMappable(norm, _TIME_CMAP).to_rgba(0.5), lw=1.5, label="path (colour = t)"),
    ]
    if background is not None:
        handles.append(Patch(color="0.7", label="data density $p_0$"))
    axs[0, 0].legend(handles=handles, loc="upper left", fontsize="x-small", framealpha=0.85)
    fig.colorbar(ScalarMappable(norm, _TIME_CMAP), ax=list(axs.ravel()), shrink=0.8, label="t  (1 = noise, 0 = data)")
    if title:
        fig.suptitle(title)
    return fig


def density_panels(
    gmm,
    times: Sequence[float] = (1.0, 0.75, 0.5, 0.25, 0.0),
    *,
    traj=None,
    n_show: int = 256,
    bounds=(-3.0, 3.0),
    grid_size: int = 150,
    axes=None,
    title: Optional[str] = None,
) -> Figure:
    """Heatmaps of the exact marginal p_t of a 2D mixture (``gmm.log_prob`` on a grid), one per time.

    ``traj`` (a recorded Trajectory, xs (K + 1, B, 2)): overlay its particles at the grid time
    nearest to each t (the panel says which time if it differs). Remember that ``gmm``'s schedule
    must match the sampler's (``gmm.with_schedule("vp")`` for VP samples).
    """
    _check_gmm_2d(gmm)
    times = [float(t) for t in times]
    if not times or any(not 0.0 <= t <= 1.0 for t in times):
        raise ValueError(f"times must be a non-empty sequence of values in [0, 1], got {times}")
    xs = ttimes = None
    if traj is not None:
        xs, _, ttimes = _get_traj_arrays(traj, "traj", need_x0=False)
        if xs.shape[2:] != (2,):
            raise ValueError(f"density_panels overlays 2D particles; traj has sample shape {xs.shape[2:]}")
        xs = xs[:, :n_show]
    n = len(times)
    fig, axs = _axes_grid(axes, 1, n, (2.6 * n + 0.4, 3.0), sharex=True, sharey=True)
    for j, t in enumerate(times):
        ax = axs[0, j]
        gx, gy, dens = _density_grid(gmm, t, bounds, grid_size)
        ax.pcolormesh(gx, gy, dens, cmap="Blues", shading="auto", rasterized=True)
        where = " (noise)" if t == 1.0 else " (data)" if t == 0.0 else ""
        ttl = f"$p_t$, t = {t:g}{where}"
        if xs is not None:
            k = int(np.argmin(np.abs(ttimes - t)))
            ax.scatter(xs[k, :, 0], xs[k, :, 1], s=5, color=METHOD_COLORS["base"], edgecolors="white",
                       linewidths=0.2, label="samples $x_t$")
            if abs(ttimes[k] - t) > 1e-6:
                ttl += f"\nsamples at t = {ttimes[k]:.2f}"
        ax.set_title(ttl, fontsize="medium")
        _set_square(ax, bounds)
        _label_xy(ax, y=(j == 0))
    if xs is not None:
        axs[0, 0].legend(loc="upper left", fontsize="x-small", markerscale=2)
    sched = type(getattr(gmm, "schedule", None)).__name__
    fig.suptitle(title or f"exact marginals $p_t$ of the mixture ({sched} interpolant)")
    return fig


def _field_dtype_device(f) -> tuple[torch.dtype, torch.device]:
    """dtype / device of a velocity callable's weights (a module, or a bound method of one such as
    ``gmm.velocity``); float32 on the CPU for a plain function."""
    owner = f if isinstance(f, torch.nn.Module) else getattr(f, "__self__", None)
    if isinstance(owner, torch.nn.Module):
        for t in (*owner.parameters(), *owner.buffers()):
            if torch.is_floating_point(t):
                return t.dtype, t.device
    return torch.float32, torch.device("cpu")


def velocity_field(
    fields: Mapping[str, Callable],
    times: Sequence[float],
    *,
    bounds=(-2.8, 2.8),
    n: int = 15,
    axes=None,
    title: Optional[str] = None,
) -> Figure:
    """2D velocity fields on an n x n grid: one row per field, one column per time.

    fields: name -> callable ``f(x, t)`` returning the velocity u_t(x) (B, 2) for x (B, 2) and t (B,),
    e.g. {"MLP": model, "exact": gmm.velocity}. Sampling runs from t = 1 to t = 0, so a particle
    moves along -u_t: the arrows show -u_t at unit length (the direction of motion while sampling)
    and their colour the speed |u_t| (colour scale per panel). Evaluated under ``torch.no_grad()``
    in the dtype / device of the field's weights (float32 on the CPU for plain functions).
    ``axes``: (len(fields), len(times)) axes to draw into.
    """
    if not isinstance(fields, Mapping) or not fields:
        raise ValueError("fields must be a non-empty mapping name -> velocity callable f(x, t), e.g. {'MLP': model}")
    for name, f in fields.items():
        if not callable(f):
            raise TypeError(f"fields[{name!r}] must be callable as f(x, t) -> velocity, got {type(f).__name__}")
    try:
        times = [float(t) for t in times]
    except (TypeError, ValueError) as e:
        raise TypeError(f"times must be a sequence of numbers in [0, 1], got {times!r}") from e
    if not times or any(not 0.0 <= t <= 1.0 for t in times):
        raise ValueError(f"times must be a non-empty sequence of values in [0, 1] (1 = noise, 0 = data), got {times}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n (grid points per axis) must be an integer >= 2, got {n!r}")
    (x_lo, x_hi), (y_lo, y_hi) = _check_bounds(bounds)
    gx = torch.linspace(x_lo, x_hi, int(n), dtype=torch.float64)
    gy = torch.linspace(y_lo, y_hi, int(n), dtype=torch.float64)
    grid = torch.cartesian_prod(gx, gy)  # (n * n, 2)
    # arrow length 1/scale in data units: 5/6 of the grid spacing (scale = 3 for the defaults)
    scale = 1.2 / min((x_hi - x_lo) / (n - 1), (y_hi - y_lo) / (n - 1))
    pad = 1.0 / scale
    nrows, ncols = len(fields), len(times)
    fig, axs = _axes_grid(axes, nrows, ncols, (3.0 * ncols + 0.4, 3.0 * nrows + 0.6), sharex=True, sharey=True)
    pts = grid.numpy()
    for i, (name, f) in enumerate(fields.items()):
        dtype, device = _field_dtype_device(f)
        x = grid.to(device=device, dtype=dtype)
        for j, t in enumerate(times):
            with torch.no_grad():
                u = f(x, torch.full((x.shape[0],), t, dtype=dtype, device=device))
            if not torch.is_tensor(u):
                raise TypeError(f"fields[{name!r}] must return a tensor (B, 2), got {type(u).__name__}")
            if tuple(u.shape) != (x.shape[0], 2):
                raise ValueError(
                    f"fields[{name!r}] returned shape {tuple(u.shape)} for x of shape {tuple(x.shape)} at t = {t:g}; "
                    "velocity_field needs a 2D velocity (B, 2) per point"
                )
            u = _np(u)
            if not np.isfinite(u).all():
                raise ValueError(f"fields[{name!r}] returned NaN or inf at t = {t:g}; check the model on this grid")
            speed = np.linalg.norm(u, axis=1)
            direction = -u / np.where(speed > 0, speed, 1.0)[:, None]  # unit arrows (zero where u = 0)
            ax = axs[i, j]
            ax.quiver(pts[:, 0], pts[:, 1], direction[:, 0], direction[:, 1], speed, cmap="viridis",
                      angles="xy", scale_units="xy", scale=scale, width=0.007)
            ax.set_xlim(x_lo - pad, x_hi + pad)
            ax.set_ylim(y_lo - pad, y_hi + pad)
            ax.set_aspect("equal")
            ax.set_title(f"{name}: $-u_t$ at t = {t:g}", fontsize="medium")
            _label_xy(ax, x=(i == nrows - 1), y=(j == 0))
    if axes is None or title:
        default = "velocity fields: arrow = direction of motion while sampling, colour = speed |u| (per panel)"
        fig.suptitle(title or default)
    return fig


#: the tilted target p* in :func:`tilted_target`: heatmap colormap, contour colour, and the
#: probability masses its contours enclose (highest-density regions)
TILTED_CMAP = "Purples"
TILTED_COLOR = "#3f007d"
TILTED_MASSES = (0.5, 0.9, 0.99)


def mass_levels(density, masses: Sequence[float] = TILTED_MASSES) -> np.ndarray:
    """Density thresholds of the highest-density regions of a gridded density: the region where
    ``density >= level`` holds the fraction ``q`` of the total, for each ``q`` in ``masses``.
    Returned increasing (as ``contour`` wants: the largest mass first) and without repeats."""
    d = np.sort(np.asarray(density, dtype=np.float64).ravel())[::-1]
    d = d[np.isfinite(d) & (d > 0)]
    if d.size == 0:
        return np.array([])
    cum = np.cumsum(d) / d.sum()
    qs = sorted(float(q) for q in masses)
    if not all(0.0 < q < 1.0 for q in qs):
        raise ValueError(f"masses must lie strictly between 0 and 1, got {list(masses)}")
    levels = [d[min(int(np.searchsorted(cum, q)), d.size - 1)] for q in reversed(qs)]
    return np.unique(np.array(levels))


def tilted_target(
    oracle,
    samples: Optional[Mapping[str, Any]] = None,
    *,
    panels: bool = False,
    max_points: int = 400,
    show_base: bool = True,
    ax=None,
    title: Optional[str] = None,
) -> Figure:
    """Heatmap of the tilted target p*(x) ∝ p_0(x) exp(r(x)/λ) (a :class:`~toyflow.metrics.TiltedOracle`)
    with each method's samples (name -> (n, 2)) on top in its colour.

    ``panels=True``: one panel per method (clearer with many methods). ``show_base``: contours of p_0.
    p* is drawn as a light heatmap (:data:`TILTED_CMAP`) with solid contours (:data:`TILTED_COLOR`)
    around the regions holding :data:`TILTED_MASSES` of its mass, listed in each panel's legend.
    """
    for field in ("xs", "ys", "density", "base_density", "lam"):
        if not hasattr(oracle, field):
            raise TypeError(f"oracle must be a TiltedOracle from toyflow.metrics.tilted_oracle (missing {field!r})")
    samples = dict(samples or {})
    pts = {}
    for name, x in samples.items():
        x = _np(x, f"samples[{name!r}]")
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"samples[{name!r}] must have shape (n, 2), got {x.shape}")
        pts[name] = x[:max_points]
    if panels and ax is not None:
        raise ValueError("panels=True draws one panel per method; it cannot draw into a single ax")
    names = list(pts) if panels and pts else [None]
    if ax is None:
        fig, axs = _new_figure(1, len(names), (3.6 * len(names) + 1.2, 4.0), sharex=True, sharey=True)
        axs = list(axs[0])
    else:
        fig, axs = _root_figure(ax), [ax]
    gx, gy = _np(oracle.xs), _np(oracle.ys)
    dens, base = _np(oracle.density), _np(oracle.base_density)
    levels = mass_levels(dens, TILTED_MASSES)
    mass_text = "/".join(f"{100 * q:g}" for q in TILTED_MASSES)
    mesh = None
    for j, (a, only) in enumerate(zip(axs, names)):
        # p* is often a few tight blobs: a light heatmap, and solid contours around the regions that
        # hold 50 / 90 / 99 % of its mass, so the target stays visible under the samples
        mesh = a.pcolormesh(gx, gy, dens, cmap=TILTED_CMAP, shading="auto", rasterized=True)
        handles = []
        if levels.size:
            a.contour(gx, gy, dens, levels=levels, colors=TILTED_COLOR, linewidths=(0.8, 1.2, 1.8)[-levels.size:],
                      zorder=2)
            handles.append(Line2D([], [], color=TILTED_COLOR, lw=1.5,
                                  label=f"$p^*$: {mass_text} % mass"))
        if show_base:
            a.contour(gx, gy, base, levels=4, colors="0.35", linewidths=0.6, linestyles="dashed")
            handles.append(Line2D([], [], color="0.35", lw=0.8, ls="--", label="$p_0$ contours"))
        for name, x in pts.items():
            if only is not None and name != only:
                continue
            a.scatter(x[:, 0], x[:, 1], s=9, color=method_color(name), edgecolors="white", linewidths=0.3,
                      alpha=0.9, label=f"{method_label(name)} (n = {len(x)})", zorder=3)
        h, _ = a.get_legend_handles_labels()
        a.legend(handles=h + handles, loc="upper left", fontsize="x-small", framealpha=0.85, markerscale=1.5)
        a.set_aspect("equal")
        a.set_xlim(gx[0], gx[-1])
        a.set_ylim(gy[0], gy[-1])
        _label_xy(a, y=(j == 0))
        if only is not None:
            a.set_title(method_label(only))
    lam = float(oracle.lam)
    head = title or f"tilted target $p^*(x) \\propto p_0(x)\\,e^{{r(x)/\\lambda}}$, $\\lambda$ = {lam:g}"
    sub = ""
    if hasattr(oracle, "expected_reward"):
        sub = f"$E_{{p^*}}[r]$ = {oracle.expected_reward:.3f},  $E_{{p_0}}[r]$ = {oracle.base_expected_reward:.3f}"
    if ax is None:
        fig.colorbar(mesh, ax=axs, shrink=0.8, label="$p^*$ density")
        fig.suptitle(head + ("\n" + sub if sub else ""))
    else:
        ax.set_title(head + ("\n" + sub if sub else ""), fontsize="medium")
    return fig


# --------------------------------------------------------------------------------------------
# Search histories: budget allocation, RBF step by step, SMC's ESS
# --------------------------------------------------------------------------------------------
def _check_result(res, name: str = "result") -> None:
    for field in ("nfe_per_step", "method", "mode", "budget", "steps"):
        if not hasattr(res, field):
            raise TypeError(
                f"{name} must be a toyflow.search.SearchResult (missing {field!r}), got {type(res).__name__}"
            )


def _history(res, name: str = "result"):
    _check_result(res, name)
    if res.history is None:
        raise ValueError(f"{name} has no history; run the search with search.run(..., record=True)")
    return res.history


def _result_times(res) -> Optional[np.ndarray]:
    """Grid times t_0 .. t_K of a result (from its history, else rebuilt from its sampler options)."""
    if getattr(res, "history", None) is not None:
        return _np(res.history.times)
    grid = getattr(getattr(res, "sampler", None), "time_grid", None)
    if isinstance(grid, str):
        from toyflow.dynamics import time_grid

        try:
            return _np(time_grid(grid, int(res.steps), dtype=torch.float64))
        except ValueError:
            return None
    return None


def _check_run(run: int, runs: int) -> int:
    if isinstance(run, bool) or not isinstance(run, (int, np.integer)) or not 0 <= int(run) < runs:
        raise ValueError(f"run must be an integer in [0, {runs}), got {run!r}")
    return int(run)


def budget_allocation(
    results: Mapping[str, Any],
    *,
    run: Optional[int] = None,
    error: Optional[str] = "std",
    kind: Optional[str] = None,
    show_uniform: bool = True,
    colors: Optional[Mapping[str, str]] = None,
    ax=None,
    title: Optional[str] = None,
) -> Figure:
    """NFE spent at each grid step by each method: mean over runs with error bars (``error``:
    "std" across runs, "se", or None), or a single ``run``.

    results: name -> SearchResult (a name that is a method, e.g. "rbf", gets its label; others are
    shown as given). Colour = the result's method (:func:`method_color`); ``colors`` (name ->
    matplotlib colour, keyed by result name or by method, the name winning) overrides it, e.g. to
    tell apart two results of the same method. Bars are hatched by mode when modes differ.
    ``kind``: "bar" (grouped bars, default up to 20 steps) or "step" (lines, default beyond).
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty mapping name -> SearchResult")
    if error not in ("std", "se", None):
        raise ValueError(f"error must be 'std', 'se' or None, got {error!r}")
    for name, res in results.items():
        _check_result(res, f"results[{name!r}]")
    colors = _check_colors(colors)
    K = max(int(r.nfe_per_step.shape[1]) for r in results.values())
    kind = kind or ("bar" if K <= 20 else "step")
    if kind not in ("bar", "step"):
        raise ValueError(f"kind must be 'bar' or 'step', got {kind!r}")
    modes = {r.mode for r in results.values()}
    if ax is None:
        fig, axs = _new_figure(1, 1, (min(14.0, max(6.5, 0.3 * K * len(results) ** 0.5 + 3.5)), 4.2))
        ax = axs[0, 0]
    else:
        fig = _root_figure(ax)
    n = len(results)
    width = 0.8 / n
    for i, (name, res) in enumerate(results.items()):
        nfe = _np(res.nfe_per_step, "nfe_per_step")
        if run is not None:
            r = _check_run(run, nfe.shape[0])
            y, e = nfe[r], None
        else:
            y = nfe.mean(0)
            e = None
            if error is not None and nfe.shape[0] > 1:
                sd = nfe.std(0, ddof=1) / (math.sqrt(nfe.shape[0]) if error == "se" else 1.0)
                e = np.stack([np.minimum(sd, y), sd])  # NFE >= 0: the lower bar stops at zero
        k = np.arange(len(y))
        color = _pick_color(colors, name, res.method)
        known = _canon(name) in METHOD_LABELS or _registered_method(_canon(name)) is not None
        label = method_label(name) if known else name
        if len(modes) > 1 and known:
            label += f" ({mode_label(res.mode)})"
        label += f": {y.sum():.0f} NFE"
        if kind == "bar":
            ax.bar(k - 0.4 + width * (i + 0.5), y, width=width, color=color, edgecolor="white", linewidth=0.5,
                   hatch=mode_style(res.mode)["hatch"] if len(modes) > 1 else None, label=label,
                   yerr=e, error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "0.2"})
        else:
            ls = mode_style(res.mode)["linestyle"] if len(modes) > 1 else "-"
            ax.step(k, y, where="mid", color=color, ls=ls, lw=1.6, label=label)
            if e is not None:
                ax.fill_between(k, y - e[0], y + e[1], step="mid", color=color, alpha=0.15, linewidth=0)
    budgets = {int(r.budget) for r in results.values()}
    steps = {int(r.steps) for r in results.values()}
    if show_uniform and len(budgets) == 1 and len(steps) == 1:
        b, s = budgets.pop(), steps.pop()
        ax.axhline(b / s, color="0.3", ls="--", lw=0.9, label=f"uniform share: budget / steps = {b / s:g}")
        budget_txt = f"budget {b} NFE per run"
    else:
        budget_txt = "budgets " + ", ".join(str(int(r.budget)) for r in results.values())
    _step_ticks(ax, _result_times(next(iter(results.values()))), K)
    ax.set_xlim(-0.6, K - 0.4)
    ax.set_xlabel(_STEP_XLABEL)
    ax.set_ylabel("NFE spent at the step" + (f" (run {run})" if run is not None else " (mean over runs)"))
    ax.legend(fontsize="small", loc="best", framealpha=0.9)
    err_txt = ""
    if run is None and error is not None:
        err_txt = ", bars: " + ("std across runs" if error == "std" else "standard error")
    ax.set_title(title or f"NFE per denoising step, {budget_txt}{err_txt}", fontsize="medium")
    return fig


def _spread(n: int, center: float, half_width: float = 0.33) -> np.ndarray:
    """x positions of n candidates in draw order around ``center``."""
    if n <= 1:
        return np.full(n, center)
    return center - half_width + 2 * half_width * np.arange(n) / (n - 1)


def rbf_steps(result, run: int = 0, *, axes=None, title: Optional[str] = None) -> Figure:
    """RBF (or any recorded search) step by step for one run.

    Top: every candidate's reward r(x0_hat) per grid step in draw order (left to right), the accepted
    ones highlighted, the held particle's reward and the running best. Bottom: NFE quota vs NFE spent
    per step; for a rollover allocation the quota is split into the step's fresh share and what
    earlier steps left unused (the leftover above each bar rolls over to the next step).
    """
    h = _history(result)
    R = int(result.nfe_per_step.shape[0])
    run = _check_run(run, R)
    color = method_color(result.method)
    times = _np(h.times)
    K = len(h.proposal_rewards) - 1
    fig, axs = _axes_grid(axes, 2, 1, (max(6.5, 0.75 * (K + 1) + 2.5), 6.2), sharex=True,
                          gridspec_kw={"height_ratios": (1.3, 1.0)})
    top, bot = axs[0, 0], axs[1, 0]

    # -- top: candidates and rewards -----------------------------------------------------------
    rej_x, rej_y, acc_x, acc_y = [], [], [], []
    for k in range(K + 1):
        r = _np(h.proposal_rewards[k])[run]
        m = _np_bool(h.proposal_mask[k])[run]
        a = _np_bool(h.accepted[k])[run] & m
        xk = _spread(int(m.sum()), k)
        rk, ak = r[m], a[m]
        rej_x.append(xk[~ak]), rej_y.append(rk[~ak]), acc_x.append(xk[ak]), acc_y.append(rk[ak])
    top.scatter(np.concatenate(rej_x), np.concatenate(rej_y), s=18, facecolors="none", edgecolors=_REJECTED_COLOR,
                linewidths=0.8, label="rejected candidate", zorder=2)
    top.scatter(np.concatenate(acc_x), np.concatenate(acc_y), s=90, marker="*", color=color, edgecolors="k",
                linewidths=0.5, label="accepted candidate", zorder=4)
    held = _np(h.rewards)[run]  # (K + 1, N)
    with np.errstate(all="ignore"):
        held_best = np.where(np.isnan(held).all(1), np.nan, np.nanmax(np.where(np.isnan(held), -np.inf, held), 1))
    ks = np.arange(K + 1)
    ok = ~np.isnan(held_best)
    held_label = "reward of the held particle" if held.shape[1] == 1 else "best reward among held particles"
    top.plot(ks[ok], held_best[ok], color=color, lw=1.2, alpha=0.8, label=held_label, zorder=3)
    running = np.fmax.accumulate(np.where(ok, held_best, -np.inf))
    running[np.isinf(running)] = np.nan
    top.step(ks, running, where="post", color="k", ls="--", lw=1.0, label="best reward so far", zorder=3)
    top.set_ylabel("reward $r(\\hat{x}_0)$")
    top.legend(fontsize="x-small", loc="best", framealpha=0.9)
    final = float(_np(result.rewards)[run])
    spent = int(_np(result.nfe)[run]) if hasattr(result, "nfe") else int(_np(result.nfe_per_step)[run].sum())
    top.set_title(
        title
        or f"{method_label(result.method)} ({mode_label(result.mode)}), run {run}: "
        f"{spent} of {result.budget} NFE spent, final reward {final:.3f}",
        fontsize="medium",
    )

    # -- bottom: quota vs spent ----------------------------------------------------------------
    nfe = _np(h.nfe)[run]
    kk = np.arange(len(nfe))
    if h.quota is not None:
        quota = _np(h.quota)[run]
        alloc = getattr(getattr(result, "options", None), "allocation", None)
        rolls = type(alloc).__name__ == "Rollover"
        left = np.clip(quota - nfe, 0, None)
        carried = np.zeros_like(quota)
        if rolls:
            # step 0 holds the initial draws (spent in full); leftovers of search steps roll over
            carried[2:] = np.minimum(left[1:-1], quota[2:])
        fresh = quota - carried
        bot.bar(kk, fresh, width=0.8, color=to_rgba(color, 0.18), edgecolor=color, linewidth=0.8,
                label="quota: this step's share")
        if rolls and carried.any():
            bot.bar(kk, carried, bottom=fresh, width=0.8, color=to_rgba(color, 0.08), edgecolor=color,
                    linewidth=0.8, hatch="///", label="quota: rolled over from earlier steps")
        bot.bar(kk, nfe, width=0.42, color=color, label="NFE spent")
        top_of = quota.max() if quota.size else 1
        for k in kk:
            if left[k] > 0 and k < len(kk) - 1:
                txt = f"{left[k]:.0f}→" if rolls else f"{left[k]:.0f} unused"
                bot.annotate(txt, (k, quota[k]), xytext=(0, 2), textcoords="offset points", ha="center",
                             va="bottom", fontsize=7, color="0.25")
        bot.set_ylim(0, top_of * 1.18 + 1)
        what = "quota (granted) vs NFE spent" + ("; n→ = unused NFE rolled over to the next step" if rolls else "")
    else:
        bot.bar(kk, nfe, width=0.6, color=color, label="NFE spent")
        what = "NFE spent (this method has no per-step quota)"
    bot.set_title(what, fontsize="small")
    bot.set_ylabel("NFE")
    bot.legend(fontsize="x-small", loc="upper left", framealpha=0.9)
    _step_ticks(bot, times, K + 1)
    bot.set_xlim(-0.6, K + 0.6)
    bot.set_xlabel(_STEP_XLABEL)
    return fig


def smc_ess(result, *, ax=None, show_runs: int = 20, title: Optional[str] = None) -> Figure:
    """SMC's effective sample size per grid step (before resampling): mean over runs, and up to
    ``show_runs`` individual runs as thin lines; the resampling threshold as a dashed line."""
    h = _history(result)
    if getattr(h, "ess", None) is None:
        raise ValueError(f"this history has no ESS (only SMC records it); got a {result.method!r} result")
    ess = _np(h.ess)  # (R, K)
    N = int(h.states.shape[2])
    color = method_color(result.method)
    if ax is None:
        fig, axs = _new_figure(1, 1, (6.5, 3.8))
        ax = axs[0, 0]
    else:
        fig = _root_figure(ax)
    k = np.arange(ess.shape[1])
    for i in range(min(show_runs, ess.shape[0])):
        ax.plot(k, ess[i], color=color, lw=0.6, alpha=0.3, label="single runs" if i == 0 else None)
    with np.errstate(all="ignore"):
        ax.plot(k, np.nanmean(ess, 0), color=color, lw=2.0, marker="o", ms=4, label=f"mean over {ess.shape[0]} runs")
    thr = getattr(getattr(result, "options", None), "ess_threshold", None)
    if thr is not None:
        ax.axhline(thr * N, color="0.3", ls="--", lw=1.0, label=f"resample below {thr:g} N = {thr * N:g}")
    ax.set_ylim(0, N * 1.08)
    _step_ticks(ax, _np(h.times), ess.shape[1])
    ax.set_xlabel(_STEP_XLABEL)
    ax.set_ylabel(f"ESS (of N = {N} particles)")
    ax.legend(fontsize="small", loc="lower left", framealpha=0.9)
    ax.set_title(title or f"{method_label(result.method)} ({mode_label(result.mode)}): effective sample size",
                 fontsize="medium")
    return fig


# --------------------------------------------------------------------------------------------
# Stochasticity of the generation modes: the eta ratio g^2 / g^2_DDPM against the noise level
# --------------------------------------------------------------------------------------------
_MODE_COLORS = MappingProxyType({"linear-ode": "#4d4d4d", "linear-sde": "#0072b2", "vp-sde": "#d55e00"})


def _eta_ratio_curve(mode: str, diffusion_path, diffusion, eta: float, steps: int, time_grid: str, x_lo: float,
                     x_hi: float):
    """(x fine, ratio fine, x at the grid times t_0 .. t_{K-1}, ratio there) of one mode, x = log(sigma/alpha)."""
    from toyflow import dynamics
    from toyflow.search import Sampler

    sampler = Sampler.preset(mode)  # the mode's sampling path and whether it is an SDE (toyflow.search.PRESETS)
    path, sde = sampler.path, sampler.sde
    if sde:
        g_path = dynamics.check_diffusion_path(diffusion_path)
        g_path = path if g_path is None else g_path
        g = dynamics.transport_diffusion(dynamics.diffusion_schedule(diffusion, eta, g_path), g_path, path)
    else:
        g = dynamics.diffusion_schedule("zero")
    # fine curve: noise levels x = log(sigma / alpha) = logit(t_lin), mapped to the path's times
    xs = torch.linspace(x_lo, x_hi, 600, dtype=torch.float64)
    t = path.snr_inverse(torch.exp(-xs)).clamp(0.0, 1.0)
    c = path(t)
    keep = torch.isclose(torch.log(c.sigma / c.alpha), xs, atol=1e-6)  # inside the path's noise range
    t, xs = t[keep], xs[keep]
    if sde and bool((path(t).alpha == 0).any()):
        t, xs = t[path(t).alpha > 0], xs[path(t).alpha > 0]
    fine = dynamics.eta_ratio(path, g, t)
    grid = dynamics.time_grid(time_grid, steps, dtype=torch.float64, schedule=path)[:-1]  # g is used at t_0..t_{K-1}
    gc = path(grid)
    with np.errstate(divide="ignore"):
        xg = np.log(_np(gc.sigma) / _np(gc.alpha))  # +inf at Linear t = 1
    rg = _np(dynamics.eta_ratio(path, g, grid))
    return _np(xs), _np(fine), xg, rg


def eta_ratio_plot(
    modes: Optional[Sequence] = None,
    *,
    steps: int = 10,
    time_grid: str = "uniform",
    diffusion: str = "square",
    eta: float = 3.0,
    x_range: tuple[float, float] = (-3.5, 5.8),
    ax=None,
    title: Optional[str] = None,
) -> Figure:
    """How stochastic each generation mode is, at each noise level: the eta ratio g_t^2 / g^2_DDPM(t)
    (0 = the ODE, 1 = the ancestral DDPM SDE of the path; :func:`toyflow.dynamics.eta_ratio`) against
    the noise level log(sigma_t / alpha_t) = logit(t_lin), the same for every path, noise on the left.

    ``modes``: mode names (default: all of ``toyflow.search.MODES``) or ``(mode, diffusion_path)`` pairs for
    a diffusion given in another path's time (``("linear-sde", "vp")``: vp-sde's g on the Linear path;
    use ``time_grid="vp-snr"`` then). Each mode's ``steps``-step ``time_grid`` points t_0 .. t_{K-1}
    (where g is used; the last step to t = 0 is deterministic) are marked; the Linear grid's t_0 = 1
    (log(sigma/alpha) = inf, ratio 0) is drawn at the noisy edge with an arrow.
    """
    from toyflow import dynamics

    if ax is None:
        fig, axs = _new_figure(1, 1, (8.6, 4.8))
        ax = axs[0, 0]
    else:
        fig = _root_figure(ax)
    x_lo, x_hi = float(x_range[0]), float(x_range[1])
    if not x_lo < x_hi:
        raise ValueError(f"x_range must be (low, high) with low < high, got {x_range!r}")
    from toyflow.search import MODES, Sampler

    entries = []
    for m in (MODES if modes is None else modes):
        mode, dpath = (m, None) if isinstance(m, str) else tuple(m)
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(map(repr, MODES))}")
        entries.append((mode, dynamics.check_diffusion_path(dpath)))
    at_edge = False  # a grid point at Linear t = 1 (log(sigma/alpha) = inf)
    for mode, dpath in entries:
        xf, rf, xg, rg = _eta_ratio_curve(mode, dpath, diffusion, eta, steps, time_grid, x_lo, x_hi)
        st, color = mode_style(mode), _MODE_COLORS.get(mode, "0.3")
        if not Sampler.preset(mode).sde:
            g_txt = "g = 0"
        else:
            own = Sampler.preset(mode).path.name
            gp = own if dpath is None else getattr(dpath, "name", repr(dpath))
            var = "t" if gp == "linear" else ("r" if gp == "vp" else "\\tau")
            g_txt = f"g = {eta:g}${var}^2$" if diffusion == "square" else f"g: {diffusion}, eta {eta:g}"
            g_txt += f" in {'Linear' if gp == 'linear' else ('VP' if gp == 'vp' else gp)} time"
        label = f"{mode_label(mode)} ({g_txt})"
        ax.plot(xf, rf, color=color, ls=st["linestyle"], lw=2.2, label=label)
        inside = np.isfinite(xg)
        ax.plot(xg[inside], rg[inside], color=color, ls="none", marker=st["marker"], ms=8, mec="white", mew=0.8,
                zorder=3)
        at_edge |= not bool(inside.all())
        for r in rg[~inside]:  # Linear t = 1: infinitely noisy, drawn at the noisy edge
            ax.plot([x_hi], [r], color=color, ls="none", marker="<", ms=9, clip_on=False, zorder=4)
    ax.set_xlim(x_hi, x_lo)  # noise on the left: sampling runs left to right
    ax.set_ylim(bottom=-0.02)
    ax.axhline(0, color="0.7", lw=0.8, zorder=0)
    ax.set_xlabel(r"noise level $\log(\sigma_t/\alpha_t)$   (noise $\leftarrow$ $\rightarrow$ data)", fontsize="large")
    ax.set_ylabel(r"$\eta$ ratio $g_t^2 / g^2_{\mathrm{DDPM}}(t)$" + "\n(0 = ODE, 1 = DDPM SDE)", fontsize="large")
    top = ax.secondary_xaxis(
        "top", functions=(lambda x: 1 / (1 + np.exp(-x)), lambda p: np.log(np.clip(p, 1e-12, 1 - 1e-12) / np.clip(1 - p, 1e-12, 1)))
    )
    ticks = [p for p in (0.05, 0.2, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995) if x_lo < math.log(p / (1 - p)) < x_hi]
    top.set_xticks(ticks)
    top.set_xticklabels([f"{p:g}" for p in ticks])
    top.set_xlabel(r"the same noise level as a Linear time $t_{\mathrm{lin}} = \sigma/(\alpha+\sigma)$")
    ax.tick_params(labelsize="medium")
    ax.text(0.01, 0.97, "noise", transform=ax.transAxes, ha="left", va="top", fontsize="large", color="0.35")
    ax.text(0.99, 0.97, "data", transform=ax.transAxes, ha="right", va="top", fontsize="large", color="0.35")
    if at_edge:
        ax.annotate("$t_0 = 1$\n" + r"($\alpha = 0$)", xy=(x_hi, 0.0), xytext=(6, 14), textcoords="offset points",
                    fontsize="medium", color="0.3", ha="left", va="bottom")
    ax.legend(loc="upper right", bbox_to_anchor=(0.995, 0.9), fontsize="medium", framealpha=0.95,
              title=f"markers: the {steps}-step '{time_grid}' grid of each mode", title_fontsize="medium")
    ax.grid(alpha=0.25)
    ax.set_title(title or "how stochastic each mode is at each noise level", fontsize="large")
    return fig


# --------------------------------------------------------------------------------------------
# Benchmark tables: scaling curves, realism vs reward
# --------------------------------------------------------------------------------------------
def _convert(value: Optional[str]):
    if value is None:
        return None
    v = value.strip()
    if v == "":
        return None
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def read_results_csv(path: Union[str, os.PathLike]) -> list[dict]:
    """Rows of a benchmark CSV as dicts; numbers become int / float, empty cells None."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no results CSV at {p}")
    with p.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            raise ValueError(f"{p} is empty or has no header row")
        return [{k: _convert(v) for k, v in row.items()} for row in reader]


def _rows(rows, needed: Sequence[str]) -> list[Mapping]:
    if isinstance(rows, (str, os.PathLike)):
        rows = read_results_csv(rows)
    rows = list(rows)
    if not rows:
        raise ValueError("no result rows to plot")
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise TypeError(f"row {i} must be a mapping column -> value, got {type(r).__name__}")
        missing = [c for c in needed if c not in r]
        if missing:
            raise ValueError(f"row {i} lacks column(s) {missing}; it has {sorted(r)}")
    return rows


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _panels(rows: list[Mapping]) -> dict[tuple, list[Mapping]]:
    """Rows grouped by task (and by model when a task was run with several models), in first-seen order."""
    models_per_task: dict = {}
    for r in rows:
        models_per_task.setdefault(r["task"], set()).add(r.get("model"))
    out: dict[tuple, list] = {}
    for r in rows:
        key = (r["task"], r.get("model") if len(models_per_task[r["task"]]) > 1 else None)
        out.setdefault(key, []).append(r)
    return out


def _panel_title(key: tuple) -> str:
    task, model = key
    return f"task: {task}" + (f" (model: {model})" if model is not None else "")


def _group_order(rows: list[Mapping]) -> list[tuple[str, str]]:
    method_rank = {m: i for i, m in enumerate(METHOD_COLORS)}
    mode_rank = {m: i for i, m in enumerate(MODE_STYLES)}
    groups = {(str(r["method"]), str(r["mode"])) for r in rows}
    def key(g):
        return method_rank.get(_canon(g[0]), 99), g[0], mode_rank.get(_canon(g[1]), 99), g[1]

    return sorted(groups, key=key)


def _legend_handles(groups: Sequence[tuple[str, str]], *, lines: bool,
                    colors: Optional[Mapping[str, str]] = None) -> list:
    methods = list(dict.fromkeys(g[0] for g in groups))
    modes = list(dict.fromkeys(g[1] for g in groups))
    h = [Line2D([], [], color=_pick_color(colors or {}, m), lw=2.5 if lines else 0,
                marker=None if lines else "o", ms=7, label=method_label(m)) for m in methods]
    h += [Line2D([], [], color="0.3", ls=mode_style(m)["linestyle"] if lines else "none",
                 marker=mode_style(m)["marker"], ms=6, label=mode_label(m)) for m in modes]
    return h


def _panel_axes(axes, n: int, figsize_per: tuple[float, float]):
    if axes is None:
        ncols = min(n, 3)
        nrows = math.ceil(n / ncols)
        fig, axs = _new_figure(nrows, ncols, (figsize_per[0] * ncols + 1.8, figsize_per[1] * nrows))
        flat = list(axs.ravel())
        for extra in flat[n:]:
            extra.set_visible(False)
        return fig, flat[:n], True
    flat = list(np.asarray(axes, dtype=object).reshape(-1))
    if len(flat) < n:
        raise ValueError(f"the rows hold {n} panels (task x model) but only {len(flat)} axes were given")
    return _root_figure(flat[0]), flat[:n], False


def _budget_axis(ax, values: Sequence[float], logx: bool) -> None:
    """Log x axis (if asked) with the budgets themselves as tick labels when there are few."""
    v = np.unique([x for x in values if np.isfinite(x)])
    if logx and v.size and v.min() > 0:
        ax.set_xscale("log")
        if v.size <= 10:
            ax.set_xticks(v, [f"{x:g}" for x in v])
            ax.minorticks_off()


#: at most this many curves in one panel before ``facet="auto"`` splits the panels by mode
MAX_CURVES_PER_PANEL = 8
_FACETS = ("mode", "method")


def _resolve_facet(facet: Optional[str], rows: list[Mapping], panels: Mapping) -> Optional[str]:
    if facet is None or facet in _FACETS:
        return facet
    if facet != "auto":
        raise ValueError(f"facet must be 'auto', 'mode', 'method' or None (one panel per task), got {facet!r}")
    crowded = max(len({(str(r["method"]), str(r["mode"])) for r in prow}) for prow in panels.values())
    several_modes = len({str(r["mode"]) for r in rows}) > 1
    return "mode" if crowded > MAX_CURVES_PER_PANEL and several_modes else None


def _facet_order(values, field: str) -> list[str]:
    rank = {m: i for i, m in enumerate(MODE_STYLES if field == "mode" else METHOD_COLORS)}
    return sorted(dict.fromkeys(values), key=lambda v: (rank.get(_canon(v), 99), v))


def _draw_curve(ax, g: list[Mapping], *, method: str, mode: str, x: str, metric: str, error: Optional[str],
                colors: Mapping[str, str], where: str, color: Optional[str] = None,
                linestyle: Optional[str] = None) -> None:
    """One method-mode curve (sorted by ``x``) with its ±``error`` band (colour: the method's,
    line style and marker: the mode's, unless ``color`` / ``linestyle`` say otherwise)."""
    xv = np.array([_num(r[x]) for r in g])
    if len(np.unique(xv)) != len(xv):
        raise ValueError(
            f"{where}, method {method!r}, mode {mode!r}: several rows share the same {x}; "
            "aggregate them first (one row per budget)"
        )
    order = np.argsort(xv)
    xv = xv[order]
    yv = np.array([_num(g[i][metric]) for i in order])
    st = mode_style(mode)
    c = color or _pick_color(colors, method)
    ax.plot(xv, yv, color=c, ls=linestyle or st["linestyle"], marker=st["marker"], ms=4.5, lw=1.5,
            label=f"{method_label(method)}, {mode_label(mode)}")
    if error:
        ev = np.array([_num(g[i][error]) for i in order])
        ok = np.isfinite(ev) & np.isfinite(yv)
        if ok.any():
            ax.fill_between(xv[ok], (yv - ev)[ok], (yv + ev)[ok], color=c, alpha=0.15, linewidth=0)


def scaling_curves(
    rows,
    *,
    metric: str = "reward_mean",
    error: Optional[str] = "reward_se",
    x: str = "budget",
    logx: bool = True,
    colors: Optional[Mapping[str, str]] = None,
    facet: Optional[str] = "auto",
    axes=None,
    title: Optional[str] = None,
) -> Figure:
    """``metric`` vs ``x`` (NFE budget) from a benchmark table: one colour per method
    (:func:`method_color`, or ``colors``: method -> matplotlib colour), one line style / marker per
    mode, ±``error`` bands.

    ``facet``: None draws one panel per task (and model) holding every method-mode curve;
    ``"mode"`` draws a grid, one row per task and one panel per mode (and model), the methods as
    curves; ``"method"`` the same with one panel per method, the modes as curves. ``"auto"``
    (default) facets by mode when a panel would otherwise hold more than
    :data:`MAX_CURVES_PER_PANEL` curves, so that a figure stays readable on a slide.

    rows: a CSV path or a list of dicts with at least task, method, mode, ``x``, ``metric`` (and
    ``error`` unless None); see :func:`read_results_csv`. Each (task, model, method, mode, x) must
    appear once. ``axes``: your own axes, as many as panels (a faceted grid: rows x columns of them).
    """
    need = ["task", "method", "mode", x, metric] + ([error] if error else [])
    rows = _rows(rows, need)
    colors = _check_colors(colors)
    panels = _panels(rows)
    facet = _resolve_facet(facet, rows, panels)
    if facet is not None:
        return _faceted_scaling_curves(rows, panels, facet=facet, metric=metric, error=error, x=x, logx=logx,
                                       colors=colors, axes=axes, title=title)
    fig, axs, own = _panel_axes(axes, len(panels), (4.4, 3.6))
    groups_all = _group_order(rows)
    for ax, (key, prow) in zip(axs, panels.items()):
        for method, mode in _group_order(prow):
            g = [r for r in prow if str(r["method"]) == method and str(r["mode"]) == mode]
            _draw_curve(ax, g, method=method, mode=mode, x=x, metric=metric, error=error, colors=colors,
                        where=_panel_title(key))
        _budget_axis(ax, [_num(r[x]) for r in prow], logx)
        ax.set_xlabel(_METRIC_LABELS.get(x, x))
        ax.set_ylabel(_METRIC_LABELS.get(metric, metric))
        ax.set_title(_panel_title(key), fontsize="medium")
        ax.grid(alpha=0.3, lw=0.5)
    handles = _legend_handles(groups_all, lines=True, colors=colors)
    if own:
        fig.legend(handles=handles, loc="outside right upper", fontsize="small", title="method / mode")
        band = f" (bands: ±{error})" if error else ""
        fig.suptitle(title or f"{_METRIC_LABELS.get(metric, metric)} vs {_METRIC_LABELS.get(x, x)}{band}")
    else:
        axs[0].legend(handles=handles, fontsize="x-small", title="method / mode")
    return fig


def _faceted_scaling_curves(rows, panels, *, facet: str, metric: str, error: Optional[str], x: str, logx: bool,
                            colors: Mapping[str, str], axes, title: Optional[str]) -> Figure:
    """scaling_curves with one row of panels per task and one panel per (model, ``facet`` value)."""
    curve = "method" if facet == "mode" else "mode"
    tasks = list(dict.fromkeys(str(r["task"]) for r in rows))
    models = list(dict.fromkeys(key[1] for key in panels))  # None when every task has one model
    values = _facet_order((str(r[facet]) for r in rows), facet)
    cols = [(model, v) for model in models for v in values]
    nrows, ncols = len(tasks), len(cols)
    if axes is None:
        fig, grid = _new_figure(nrows, ncols, (3.05 * ncols + 1.7, 2.55 * nrows + 0.5), sharex=True, sharey="row")
        own = True
    else:
        fig, grid = _axes_grid(axes, nrows, ncols, (0, 0))
        own = False
    for i, task in enumerate(tasks):
        for j, (model, v) in enumerate(cols):
            ax = grid[i, j]
            key = (task, model)
            prow = [r for r in panels.get(key, []) if str(r[facet]) == v]
            if not prow:
                ax.set_visible(False)
                continue
            for name in _facet_order((str(r[curve]) for r in prow), curve):
                g = [r for r in prow if str(r[curve]) == name]
                method, mode = (name, v) if facet == "mode" else (v, name)
                _draw_curve(ax, g, method=method, mode=mode, x=x, metric=metric, error=error, colors=colors,
                            where=_panel_title(key),  # one mode per panel: solid lines read best
                            color=None if facet == "mode" else _MODE_COLORS.get(_canon(mode), "0.3"),
                            linestyle="-" if facet == "mode" else None)
            _budget_axis(ax, [_num(r[x]) for r in prow], logx)
            label = mode_label(v) if facet == "mode" else method_label(v)
            ax.set_title(label + (f" (model: {model})" if model is not None else ""), fontsize="medium")
            ax.grid(alpha=0.3, lw=0.5)
            if i == nrows - 1 or not grid[i + 1, j].get_visible():
                ax.set_xlabel(_METRIC_LABELS.get(x, x))
            if j == 0:
                ax.set_ylabel(f"task: {task}\n{_METRIC_LABELS.get(metric, metric)}")
    if facet == "mode":
        methods = _facet_order((str(r["method"]) for r in rows), "method")
        handles = [Line2D([], [], color=_pick_color(colors, m), lw=2.5, label=method_label(m)) for m in methods]
        legend_title = "method"
    else:
        modes = _facet_order((str(r["mode"]) for r in rows), "mode")
        handles = [Line2D([], [], color=_MODE_COLORS.get(_canon(m), "0.3"), ls=mode_style(m)["linestyle"],
                          marker=mode_style(m)["marker"], lw=2, label=mode_label(m)) for m in modes]
        legend_title = "mode"
    if own:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="medium",
                   title=legend_title, frameon=False)
        band = f" (bands: ±{error})" if error else ""
        fig.suptitle(title or f"{_METRIC_LABELS.get(metric, metric)} vs {_METRIC_LABELS.get(x, x)}{band}")
    else:
        first = next(a for a in grid.ravel() if a.get_visible())
        first.legend(handles=handles, fontsize="x-small", title=legend_title)
    return fig


def realism_reward_scatter(
    rows,
    *,
    reward: str = "reward_mean",
    realism: str = "realism",
    size_by: Optional[str] = "budget",
    connect: bool = True,
    facet: Optional[str] = "auto",
    axes=None,
    title: Optional[str] = None,
) -> Figure:
    """Realism (mean log p_0) vs reward per task: colour = method, marker = mode, marker size grows
    with ``size_by`` (the budget); ``connect`` joins one method-mode's points in budget order.
    Points far right but low are reward hacking: high reward, off the data distribution.

    ``facet``: None, one panel per task (and model); ``"mode"``, one row of panels per task and one
    panel per mode (and model); ``"auto"`` (default) facets by mode when a panel would otherwise hold
    more than :data:`MAX_CURVES_PER_PANEL` method-mode series."""
    need = ["task", "method", "mode", reward, realism] + ([size_by] if size_by else [])
    rows = _rows(rows, need)
    panels = _panels(rows)
    facet = _resolve_facet(facet, rows, panels)
    if facet == "method":
        raise ValueError("realism_reward_scatter facets by mode only (facet='mode', 'auto' or None)")
    if facet == "mode":
        tasks = list(dict.fromkeys(str(r["task"]) for r in rows))
        models = list(dict.fromkeys(key[1] for key in panels))
        cols = [(model, m) for model in models for m in _facet_order((str(r["mode"]) for r in rows), "mode")]
        if axes is None:
            fig, grid = _new_figure(len(tasks), len(cols), (3.6 * len(cols) + 0.6, 2.7 * len(tasks) + 1.2),
                                    sharex="row", sharey="row")
            own = True
        else:
            fig, grid = _axes_grid(axes, len(tasks), len(cols), (0, 0))
            own = False
        axs = []
        for i, task in enumerate(tasks):
            for j, (model, m) in enumerate(cols):
                ax = grid[i, j]
                prow = [r for r in panels.get((task, model), []) if str(r["mode"]) == m]
                if not prow:
                    ax.set_visible(False)
                    continue
                _realism_panel(ax, prow, reward=reward, realism=realism, size_by=size_by, connect=connect)
                ax.set_title(mode_label(m) + (f" (model: {model})" if model is not None else ""), fontsize="medium")
                ax.set_ylabel(f"task: {task}\n{_METRIC_LABELS.get(realism, realism)}" if j == 0 else "")
                axs.append(ax)
    else:
        fig, axs, own = _panel_axes(axes, len(panels), (4.4, 3.8))
        for ax, (key, prow) in zip(axs, panels.items()):
            _realism_panel(ax, prow, reward=reward, realism=realism, size_by=size_by, connect=connect)
            ax.set_title(_panel_title(key), fontsize="medium")
    groups_all = _group_order(rows)
    handles = _legend_handles(groups_all, lines=False)
    if facet == "mode":
        handles = handles[:len({g[0] for g in groups_all})]  # the methods: the mode is each panel's title
    if size_by:
        handles.append(Line2D([], [], ls="none", marker="o", color="0.6", ms=4, label=f"small: low {size_by}"))
        handles.append(Line2D([], [], ls="none", marker="o", color="0.6", ms=10, label=f"large: high {size_by}"))
    if own and facet == "mode":
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), fontsize="medium",
                   title="method (marker size: budget)", frameon=False)
    elif own:
        fig.legend(handles=handles, loc="outside right upper", fontsize="small", title="method / mode")
    if own:
        fig.suptitle(title or "realism vs reward (high reward at low realism = reward hacking)")
    else:
        axs[0].legend(handles=handles, fontsize="x-small", title="method / mode")
    return fig


def _realism_panel(ax, prow: list[Mapping], *, reward: str, realism: str, size_by: Optional[str], connect: bool) -> None:
    """One panel of realism_reward_scatter: each method-mode's points, sized by ``size_by``."""
    sizes_all = np.array([_num(r[size_by]) for r in prow]) if size_by else None
    lo = hi = None
    if sizes_all is not None and np.isfinite(sizes_all).any() and (sizes_all > 0).any():
        pos = sizes_all[np.isfinite(sizes_all) & (sizes_all > 0)]
        lo, hi = np.log(pos.min()), np.log(pos.max())
    for method, mode in _group_order(prow):
        g = [r for r in prow if str(r["method"]) == method and str(r["mode"]) == mode]
        if size_by:
            g = sorted(g, key=lambda r: _num(r[size_by]))
        xv = np.array([_num(r[reward]) for r in g])
        yv = np.array([_num(r[realism]) for r in g])
        if lo is not None:
            sv = np.array([_num(r[size_by]) for r in g])
            frac = (np.log(np.clip(sv, 1e-300, None)) - lo) / (hi - lo) if hi > lo else np.full(len(sv), 0.5)
            s = 18 + 110 * np.nan_to_num(np.clip(frac, 0, 1), nan=0.5)
        else:
            s = np.full(len(g), 40.0)
        c = method_color(method)
        st = mode_style(mode)
        if connect and len(g) > 1:
            ax.plot(xv, yv, color=c, ls=st["linestyle"], lw=0.8, alpha=0.6, zorder=1)
        ax.scatter(xv, yv, s=s, color=c, marker=st["marker"], edgecolors="white", linewidths=0.5, zorder=2)
    ax.set_xlabel(_METRIC_LABELS.get(reward, reward))
    ax.set_ylabel(_METRIC_LABELS.get(realism, realism))
    ax.grid(alpha=0.3, lw=0.5)


# --------------------------------------------------------------------------------------------
# MNIST images
# --------------------------------------------------------------------------------------------
def _check_images(images, who: str) -> np.ndarray:
    arr = _np(images, "images")
    if arr.ndim != 4 or arr.shape[1] != 1 or arr.shape[0] < 1:
        raise ValueError(
            f"{who} expects images of shape (N, 1, H, W) (MNIST: (N, 1, 28, 28)) in [-1, 1], got {arr.shape}; "
            "add the channel dimension with images[:, None] if needed"
        )
    if not np.isfinite(arr).all():
        raise ValueError(f"{who}: images contain NaN or inf; check the sampler that produced them")
    if arr.min() < -1.001 or arr.max() > 1.001:
        logger.info("%s: images range over [%.3g, %.3g]; clipped to [-1, 1] for display", who, arr.min(), arr.max())
    return np.clip(arr[:, 0], -1.0, 1.0)


def _format_label(v) -> str:
    if isinstance(v, str):
        return v
    if torch.is_tensor(v):
        v = v.item()
    if isinstance(v, (bool, np.bool_)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.2f}"


def image_grid(
    images,
    nrow: int = 8,
    *,
    title: Optional[str] = None,
    labels: Optional[Sequence] = None,
    row_labels: Optional[Sequence[str]] = None,
    pad: int = 2,
    ax=None,
) -> Figure:
    """Tile images (N, 1, H, W) in [-1, 1] into a grid with ``nrow`` images per row (as in
    torchvision). ``labels``: one per image (strings or numbers, e.g. rewards), drawn in each tile's
    corner. ``row_labels``: one name per grid row (e.g. the method that made the row), written at the
    left of the row."""
    arr = _check_images(images, "image_grid")
    if isinstance(nrow, bool) or not isinstance(nrow, (int, np.integer)) or nrow < 1:
        raise ValueError(f"nrow (images per row) must be a positive integer, got {nrow!r}")
    N, H, W = arr.shape
    if labels is not None:
        labels = list(labels.tolist() if torch.is_tensor(labels) or isinstance(labels, np.ndarray) else labels)
        if len(labels) != N:
            raise ValueError(f"labels must have one entry per image ({N}), got {len(labels)}")
    ncol = min(int(nrow), N)
    nr = math.ceil(N / ncol)
    if row_labels is not None:
        row_labels = [str(r) for r in row_labels]
        if len(row_labels) != nr:
            raise ValueError(f"row_labels must have one name per grid row: {N} images at {ncol} per row make "
                             f"{nr} rows, got {len(row_labels)} names")
    canvas = np.zeros((nr * (H + pad) + pad, ncol * (W + pad) + pad))  # grey (0) separators
    for i in range(N):
        r, c = divmod(i, ncol)
        y, x = pad + r * (H + pad), pad + c * (W + pad)
        canvas[y:y + H, x:x + W] = arr[i]
    if ax is None:
        scale = 0.85
        extra = 0.0 if row_labels is None else 0.25 + 0.09 * max(len(max(r.split("\n"), key=len)) for r in row_labels)
        fig, axs = _new_figure(1, 1, (max(2.0, scale * ncol + extra), max(1.2, scale * nr + (0.4 if title else 0.0))))
        ax = axs[0, 0]
    else:
        fig = _root_figure(ax)
    ax.imshow(canvas, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
    if row_labels is None:
        ax.set_axis_off()
    else:  # the names as y tick labels: the layout makes room for them
        ax.set_xticks([])
        ax.set_yticks([pad + r * (H + pad) + (H - 1) / 2 for r in range(nr)], row_labels)
        ax.tick_params(axis="y", length=0, labelsize="large")
        for spine in ax.spines.values():
            spine.set_visible(False)
    if labels is not None:
        for i, lab in enumerate(labels):
            r, c = divmod(i, ncol)
            ax.text(pad + c * (W + pad) + 0.8, pad + r * (H + pad) + 0.8, _format_label(lab), color="#ffd54f",
                    fontsize=7, ha="left", va="top", bbox={"facecolor": "black", "alpha": 0.6, "pad": 0.8, "lw": 0})
    if title:
        ax.set_title(title)
    return fig


def trajectory_strip(traj, index: int = 0, n_cols: Optional[int] = None, *, title: Optional[str] = None) -> Figure:
    """One image sample along its trajectory: x_t (top row) and x0_hat(x_t) (bottom row) at
    ``n_cols`` evenly spaced grid times from t = 1 to t = 0. traj: recorded Trajectory with
    xs (K + 1, B, 1, H, W)."""
    xs, x0, times = _get_traj_arrays(traj, "traj", need_x0=True)
    if xs.ndim != 5 or xs.shape[2] != 1:
        raise ValueError(f"trajectory_strip expects image trajectories xs (K + 1, B, 1, H, W), got {xs.shape}")
    B = xs.shape[1]
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < B:
        raise ValueError(f"index must be an integer in [0, {B}), got {index!r}")
    K = xs.shape[0] - 1
    n_cols = min(K + 1, 11) if n_cols is None else int(n_cols)
    if n_cols < 2:
        raise ValueError(f"n_cols must be >= 2 (it includes t = 1 and t = 0), got {n_cols}")
    ks = np.unique(np.round(np.linspace(0, K, min(n_cols, K + 1))).astype(int))
    fig, axs = _new_figure(2, len(ks), (1.15 * len(ks) + 0.6, 2.9))
    for j, k in enumerate(ks):
        for i, img in enumerate((xs[k, index, 0], x0[k, index, 0])):
            ax = axs[i, j]
            ax.imshow(np.clip(img, -1, 1), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axs[0, j].set_title(f"t = {times[k]:.2f}", fontsize="small")
    axs[0, 0].set_ylabel("$x_t$")
    axs[1, 0].set_ylabel("$\\hat{x}_0(x_t)$")
    for ax in axs[1]:
        ax.set_xlabel("")
    fig.supxlabel("time t: 1 (noise) → 0 (data)", fontsize="small")
    fig.suptitle(title or f"sample {index} along its trajectory ({K} steps)", fontsize="medium")
    return fig


# --------------------------------------------------------------------------------------------
# Animation
# --------------------------------------------------------------------------------------------
def _animation_source(source, run: int, n_show: int):
    """(states (T, N, 2), x0 (T, N, 2), times (T,), lineage parents (T-1, N) or None,
    proposals list or None, method, label) from a Trajectory, SearchResult or SearchHistory."""
    method, label = "base", "sampling"
    hist = None
    if hasattr(source, "history") and hasattr(source, "nfe_per_step"):
        hist = _history(source)
        method, label = source.method, f"{method_label(source.method)} ({mode_label(source.mode)})"
    elif hasattr(source, "proposals_x0"):
        hist, label = source, "search"
    if hist is None:
        xs, x0, times = _get_traj_arrays(source, "trajectory", need_x0=True)
        if xs.shape[2:] != (2,):
            raise ValueError(f"particles_animation draws 2D particles; got sample shape {xs.shape[2:]}")
        return xs, x0, times, None, None, method, label
    states = _np(hist.states)
    if states.shape[-1] != 2 or states.ndim != 4:
        raise ValueError(f"particles_animation draws 2D particles; history states have shape {states.shape}")
    run = _check_run(run, states.shape[0])
    parents = _np(hist.parents).astype(np.int64)[run]  # (K, N)
    props = []
    for k in range(len(hist.proposals_x0)):
        m = _np_bool(hist.proposal_mask[k])[run]
        props.append((_np(hist.proposals_x0[k])[run][m], _np_bool(hist.accepted[k])[run][m]))
    return states[run], _np(hist.x0)[run], _np(hist.times), parents, props, method, label


def particles_animation(
    source,
    *,
    run: int = 0,
    n_show: int = 128,
    gmm=None,
    bounds=(-3.0, 3.0),
    tail: int = 3,
    interval: int = 400,
    title: Optional[str] = None,
) -> animation.FuncAnimation:
    """Animate 2D particles over time, one frame per grid time t_k: x_t with short tails (left) and
    x0_hat(x_t) (right). ``source``: a recorded Trajectory (xs (K + 1, B, 2)), or a SearchResult /
    SearchHistory (``run`` picks the run; candidates are drawn in the x0_hat panel, accepted ones as
    stars, and tails follow resampling ancestry). Save with :func:`save_gif`; in a notebook show it
    with ``IPython.display.HTML(anim.to_jshtml())``."""
    if tail < 0:
        raise ValueError(f"tail must be >= 0, got {tail}")
    states, x0, times, parents, props, method, label = _animation_source(source, run, n_show)
    T, N = states.shape[0], min(states.shape[1], n_show)
    color = method_color(method)
    fig, axs = _new_figure(1, 2, (8.4, 4.4), sharex=True, sharey=True)
    ax_x, ax_0 = axs[0]
    if gmm is not None:
        _check_gmm_2d(gmm)
        gx, gy, dens = _density_grid(gmm, 0.0, bounds, 120)
        for a in (ax_x, ax_0):
            _density_fill(a, gx, gy, dens, alpha=0.4)
    for a, ttl in ((ax_x, "particles $x_t$"), (ax_0, "predictions $\\hat{x}_0(x_t)$")):
        _set_square(a, bounds)
        a.set_title(ttl, fontsize="medium")
    _label_xy(ax_x)
    _label_xy(ax_0, y=False)
    tails = LineCollection([], colors=[to_rgba(color, 0.35)], linewidths=0.8)
    ax_x.add_collection(tails)
    pts_x = ax_x.scatter([], [], s=14, color=color, edgecolors="white", linewidths=0.3, zorder=3,
                         label=f"{label}: held particles")
    rej = ax_0.scatter([], [], s=14, facecolors="none", edgecolors=_REJECTED_COLOR, linewidths=0.7, zorder=2,
                       label="rejected candidates")
    acc = ax_0.scatter([], [], s=70, marker="*", color=color, edgecolors="k", linewidths=0.4, zorder=4,
                       label="accepted candidates")
    pts_0 = ax_0.scatter([], [], s=14, color=color, edgecolors="white", linewidths=0.3, zorder=3,
                         label="$\\hat{x}_0$ of held particles")
    ax_x.legend(loc="upper left", fontsize="x-small", framealpha=0.85)
    if props is not None:
        ax_0.legend(loc="upper left", fontsize="x-small", framealpha=0.85)
    head = fig.suptitle(" ")
    empty = np.zeros((0, 2))

    def lineage(k: int) -> np.ndarray:
        """Positions of each particle held at t_k and its ancestors back ``tail`` steps: (L, N, 2)."""
        idx = np.arange(N)
        path = [states[k, idx]]
        for j in range(k - 1, max(k - tail, 0) - 1, -1):
            if parents is not None:
                idx = parents[j, idx]
            path.append(states[j, idx])
        return np.stack(path[::-1])

    def draw(k: int):
        path = lineage(k)
        if path.shape[0] > 1:
            segs = np.stack([path[:-1], path[1:]], axis=2).reshape(-1, 2, 2)
            tails.set_segments(segs[np.isfinite(segs).all(axis=(1, 2))])
        else:
            tails.set_segments([])
        held, held0 = states[k, :N], x0[k, :N]
        pts_x.set_offsets(held[np.isfinite(held).all(1)])
        pts_0.set_offsets(held0[np.isfinite(held0).all(1)])
        if props is not None and k < len(props):
            p, a = props[k]
            if a.all():  # nothing was rejected: the held particles' x0_hat already show them
                p, a = empty, np.zeros(0, dtype=bool)
            rej.set_offsets(p[~a] if len(p) else empty)
            acc.set_offsets(p[a] if len(p) else empty)
        head.set_text(f"{title or label}: t = {times[k]:.2f}  (step {k} of {T - 1})")
        return tails, pts_x, pts_0, rej, acc, head

    draw(0)
    fig.draw_without_rendering()  # settle the constrained layout once, then freeze it (no jitter)
    fig.set_layout_engine("none")
    return animation.FuncAnimation(fig, draw, frames=T, interval=interval, blit=False, cache_frame_data=False)


def save_gif(anim: animation.Animation, path: Union[str, os.PathLike], fps: float = 4, dpi: int = 80) -> Path:
    """Write an animation to a GIF with the Pillow writer, atomically (a temporary file in the same
    folder, then ``os.replace``). Returns the path."""
    if not isinstance(anim, animation.Animation):
        raise TypeError(f"anim must be a matplotlib Animation, got {type(anim).__name__}")
    p = Path(path)
    if p.suffix.lower() != ".gif":
        raise ValueError(f"save_gif writes GIF files; the path must end in .gif, got {p.name!r}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.stem}.", suffix=".gif", dir=p.parent)
    os.close(fd)
    try:
        anim.save(tmp, writer=animation.PillowWriter(fps=fps), dpi=dpi)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    logger.info("wrote %s", p)
    return p
