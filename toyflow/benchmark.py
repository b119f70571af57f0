"""The scaling benchmark behind ``toyflow bench search``: one tidy CSV row per
(task, model, method, mode, budget).

    toyflow bench search --task rare-mode --methods bon smc svdd code rbf --modes linear-ode vp-sde \\
        --budgets 50 100 200 --runs 64 --out results.csv --plot scaling.png [--shard 0/4]

Columns: task (``rare-mode-x8`` for ``--scale 8``), scale, model, method, mode, budget, steps,
time_grid, diffusion_path, runs, status, reward_mean, reward_se, realism,
diversity, nfe_mean, nfe_max, wall_time_s, wall_per_run_s, and for MNIST tasks accuracy (held-out
evaluator, target class), fid (evaluator features vs held-out real digits; empty when no real
digits are found), feature_diversity, options (the method options given with ``--option``, e.g.
``--option smc.lam=0.05 rbf.proposals_per_tick=1``). ``--shard i/n`` keeps every n-th grid cell starting at i,
so a job array writes CSVs that concatenate (``tail -n +2`` all but the first). Every cell has
its own seed derived from its coordinates, so a cell gives the same numbers in any shard.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from toyflow import tasks  # light: the registry imports nothing heavy


class _OnFirstUse:
    """A module imported when one of its attributes is first read (``torch.Generator``), so that
    importing this module, and with it ``toyflow bench search --help``, does not pay for torch."""

    def __init__(self, module: str):
        self._module = module

    def __getattr__(self, attr: str):
        import importlib

        return getattr(importlib.import_module(self._module), attr)


torch = _OnFirstUse("torch")  # annotations are strings (from __future__ import annotations)


def tqdm(*args, **kwargs):  # tqdm.auto on first use
    from tqdm.auto import tqdm as _tqdm

    return _tqdm(*args, **kwargs)


def atomic_write_text(*args, **kwargs):  # toyflow.checkpoint imports torch
    from toyflow.checkpoint import atomic_write_text as _write

    return _write(*args, **kwargs)


__all__ = ["Task", "TASKS_2D", "TASKS_MNIST", "make_task", "run_cell", "run_grid", "add_arguments", "main", "COLUMNS",
           "parse_method_options"]

log = logging.getLogger(__name__)

# the built-in task names (toyflow.tasks is their home; make_task and the CLI read the registry itself,
# so a task registered later is found too)
TASKS_2D = tasks.names("2d")
TASKS_MNIST = tasks.names("mnist")
# velocity models of the MNIST tasks -> shipped weights ('mlp' / 'oracle': the 2D names, taken as 'unet')
MODELS_MNIST = {"unet": "mnist-flow", "unet-fewstep": "mnist-flow-fewstep", "mlp": "mnist-flow", "oracle": "mnist-flow"}

# velocity models of the 2D tasks: the exact mixture (x0_hat = posterior mean), the shipped MLP trained on
# it, the exact flow-map oracle (x0_hat = the ODE's endpoint) and the shipped MLP distilled from it
MODELS_2D = ("oracle", "mlp", "flowmap", "flowmap-mlp")
COLUMNS = (
    "task", "scale", "model", "method", "mode", "budget", "steps", "time_grid", "diffusion_path", "runs", "shard", "status",
    "reward_mean", "reward_se",
    "realism", "diversity", "nfe_mean", "nfe_max", "discarded_mean", "wall_time_s", "wall_per_run_s", "accuracy", "fid",
    "feature_diversity", "options",
)


@dataclass
class Task:
    """What one benchmark task needs: the flow model, the reward, the sample shape and how to score samples."""

    name: str
    model_name: str
    model: Callable
    reward: Callable
    shape: tuple
    evaluate: Callable[[torch.Tensor], dict]  # samples (runs, *shape) -> extra metric columns


def task_label(name: str, scale: float = 1.0) -> str:
    """The task's name in tables: "rare-mode", or "rare-mode-x8" for ``scale=8``."""
    return tasks.get(name).label(scale)


def make_task(name: str, model: str = "oracle", *, digit: int = 7, data_dir: Optional[str] = None,
              scale: float = 1.0) -> Task:
    """Build a task registered in :mod:`toyflow.tasks`. 2D tasks (``tasks.get(name).make(scale)``) take model 'oracle' (exact mixture flow,
    x0_hat the posterior mean), 'mlp' (shipped MLP, scale 1), 'flowmap' (``models.FlowMapOracle``: x0_hat
    the exact ODE flow map) or 'flowmap-mlp' (shipped MLP distilled from it, scale 8)."""
    from toyflow import metrics, pretrained

    spec = tasks.get(name)  # a clear error for an unknown name
    if isinstance(spec, tasks.ToyTask):
        gmm, reward = spec.make(scale)
        label = spec.label(scale)
        if model == "oracle":
            flow = gmm
        elif model == "flowmap":
            from toyflow.models import FlowMapOracle

            flow = FlowMapOracle(gmm)
        elif model in ("mlp", "flowmap-mlp"):
            shipped = f"2d-{label}" + ("-flowmap" if model == "flowmap-mlp" else "")
            if shipped not in pretrained.MODELS:
                have = [m for m in pretrained.MODELS if m.startswith(f"2d-{name}")]
                raise ValueError(f"no shipped {model!r} model for task {label!r} (shipped for this task: "
                                 f"{', '.join(have)}); use model 'oracle' or 'flowmap', or train one")
            flow = pretrained.load(shipped)
        else:
            raise ValueError(f"model for 2D tasks is one of {', '.join(MODELS_2D)}, got {model!r}")

        def evaluate(x):
            return {"realism": metrics.realism(x, gmm), "diversity": metrics.diversity(x)}

        return Task(label, model, flow, reward, (2,), evaluate)
    if isinstance(spec, tasks.MnistTask):
        if scale != 1:
            raise ValueError(f"scale applies to the 2D tasks only, got scale={scale} for {name!r}")
        if model not in MODELS_MNIST:
            raise ValueError(f"MNIST tasks use a shipped UNet: model 'unet' (the 20-step flow) or 'unet-fewstep' (the "
                             f"few-step student, x0_hat a sharp digit at every t), got {model!r}")
        shipped = MODELS_MNIST[model]
        if shipped not in pretrained.available():
            raise ValueError(f"model {model!r} needs the shipped weights {shipped!r}, which are not installed "
                             f"(installed: {', '.join(pretrained.available())})")
        flow = pretrained.load(shipped)
        classifier = pretrained.load("mnist-reward")
        evaluator = pretrained.load("mnist-evaluator")
        reward, target = spec.build_reward(digit, classifier), (digit if spec.scores_digit else None)
        reference = _reference_digits(data_dir)
        ref_features = metrics.classifier_features(reference, evaluator) if reference is not None else None

        def evaluate(x):
            out = {"diversity": metrics.diversity(x), "feature_diversity": metrics.feature_diversity(x, evaluator)}
            if target is not None:
                out["accuracy"] = metrics.evaluator_accuracy(x, evaluator, target)
            if ref_features is not None and x.shape[0] >= 2:
                out["fid"] = metrics.frechet_distance(metrics.classifier_features(x, evaluator), ref_features)
            return out

        return Task(spec.label(digit), "unet" if model in ("mlp", "oracle") else model, flow, reward, (1, 28, 28), evaluate)
    raise TypeError(f"task {name!r} is a {type(spec).__name__}; make_task builds tasks.ToyTask and tasks.MnistTask")


def _reference_digits(data_dir: Optional[str]):
    """Real digits for FID in evaluator-feature space: t10k, which the evaluator never saw (its own
    training split, train5k, sits far off in its feature space: FID(t10k, train5k) ~ 890 vs ~22
    between two t10k halves). None if no digits are found."""
    from toyflow.data.mnist import load_mnist

    try:
        return load_mnist("test", data_dir).images[:2000]
    except FileNotFoundError as e:
        log.warning("no real MNIST digits for FID (%s); the fid column stays empty", str(e).splitlines()[0])
        return None


def cell_seed(*coords) -> int:
    return zlib.crc32("|".join(map(str, coords)).encode())


def run_cell(task: Task, method: str, mode: str, budget: int, *, steps: int = 10, runs: int = 64,
             seed: int = 0, time_grid: str = "uniform", diffusion_path: Optional[str] = None,
             options: Optional[dict] = None, scale: float = 1.0) -> dict:
    """Run one grid cell and return its CSV row (status 'ok' or the reason it could not run).

    ``diffusion_path``: the path in whose time g is given (None: the sampling path's own, see
    ``SamplerOptions.diffusion_path``). The cell's seed depends on its coordinates only."""
    from toyflow import search

    row = {"task": task.name, "scale": scale, "model": task.model_name, "method": method, "mode": mode,
           "budget": budget, "steps": steps, "time_grid": time_grid, "diffusion_path": diffusion_path or "", "runs": runs,
           "options": " ".join(f"{k}={v!r}" for k, v in sorted((options or {}).items()))}
    g = torch.Generator().manual_seed(seed + cell_seed(task.name, task.model_name, method, mode, budget, steps))
    sampler = {"time_grid": time_grid}
    if diffusion_path is not None:
        sampler["diffusion_path"] = diffusion_path
    t0 = time.perf_counter()
    try:
        res = search.run(method, task.model, task.reward, mode=mode, budget=budget, steps=steps, runs=runs,
                         shape=task.shape, generator=g, **sampler, **(options or {}))
    except (ValueError, TypeError) as e:  # budget too small, DPS on a non-differentiable reward, ...
        row["status"] = f"skipped: {str(e).splitlines()[0]}"
        return row
    wall = time.perf_counter() - t0
    r = res.rewards.double()
    row.update(
        status="ok", reward_mean=r.mean().item(),
        reward_se=(r.std(unbiased=True) / math.sqrt(runs)).item() if runs > 1 else float("nan"),
        nfe_mean=res.nfe.double().mean().item(), nfe_max=int(res.nfe.max()),
        # evaluations made but not charged (RBF's chunked draws); 0 for the other methods
        discarded_mean=res.discarded.double().mean().item() if res.discarded is not None else 0.0,
        wall_time_s=wall,
        wall_per_run_s=wall / runs,
    )
    row.update(task.evaluate(res.samples))
    return row


def _format(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="raise")
    w.writeheader()
    for row in rows:
        w.writerow({k: _format(row.get(k, "")) for k in COLUMNS})
    atomic_write_text(path, buf.getvalue())


def merge_shards(paths: Sequence[Union[str, Path]], out: Optional[Union[str, Path]] = None) -> list[dict]:
    """Rows of the shard CSVs ``0/n .. n-1/n`` (given in that order) back in grid order; written to ``out``.

    Shard i holds grid cells i, i + n, i + 2n, ..., so the merge interleaves the files row by row.
    """
    merge_keys = ("task", "model", "method", "mode", "budget", "status")

    def _check_grid_order(rows: Sequence[dict], paths) -> None:
        """Merged rows must be in the nested grid order (task, model, method, mode, budget): every
        coordinate prefix forms one contiguous block, and each (task, model, method, mode) block holds
        the same budgets in the same order. Shards given out of order break this for any grid with more
        cells than shards and more than one value on some axis."""
        keys = merge_keys[:4]
        for depth in range(1, len(keys) + 1):
            seen, last = set(), None
            for i, row in enumerate(rows):
                key = tuple(row[k] for k in keys[:depth])
                if key != last:
                    if key in seen:
                        raise ValueError(
                            f"the shards are not in shard order: merged row {i + 1} ({', '.join(key)}) comes back after "
                            f"other cells; give the CSVs in the order 0/n, 1/n, ... (given: {', '.join(map(str, paths))})"
                        )
                    seen.add(key)
                    last = key
        blocks: dict = {}
        for row in rows:
            blocks.setdefault(tuple(row[k] for k in keys), []).append(row["budget"])
        orders = {tuple(b) for b in blocks.values()}
        if len(orders) > 1 and len({tuple(sorted(b)) for b in blocks.values()}) == 1:
            raise ValueError("the shards are not in shard order: the budgets come in different orders in different cells "
                             f"({' / '.join(' '.join(o) for o in sorted(orders))}); give the CSVs in the order 0/n, 1/n, ...")

    if not paths:
        raise ValueError("merge_shards needs the shard CSVs, in shard order 0/n, 1/n, ...")
    twice = [str(p) for i, p in enumerate(paths) if any(Path(q).resolve() == Path(p).resolve() for q in paths[:i])]
    if twice:
        raise ValueError(f"shard {twice[0]} is given more than once; give each shard CSV once, in shard order")
    parts, header = [], None
    for path in paths:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
        fields = tuple(reader.fieldnames or ())
        missing = [c for c in merge_keys if c not in fields]
        if missing:
            raise ValueError(f"{path} is not a CSV of toyflow bench search (no column {missing[0]!r}); "
                             "give the CSVs that toyflow bench search --shard i/n wrote")
        if header is not None and fields != header:
            raise ValueError(f"{path} has other columns than {paths[0]}: not shards of one grid (of one toyflow version)")
        header = fields
        for j, row in enumerate(rows, start=2):
            empty = [c for c in merge_keys if not (row.get(c) or "").strip()]
            if empty or not row["budget"].strip().isdigit():
                raise ValueError(f"{path} line {j}: " + (f"empty {', '.join(empty)}" if empty else f"budget {row['budget']!r}")
                                 + "; not a row of toyflow bench search (rerun that shard)")
        if "shard" in fields:  # CSVs that name their shard: the order given must be the shard order
            want = f"{len(parts)}/{len(paths)}"
            other = next((r["shard"] for r in rows if r["shard"] != want), None)
            if other is not None:
                raise ValueError(f"{path} holds shard {other} but is given as shard {want}; give the CSVs in shard order")
        parts.append(rows)
    sizes = [len(p) for p in parts]
    if any(b > a for a, b in zip(sizes, sizes[1:])) or sizes[0] - sizes[-1] > 1:
        raise ValueError(
            f"shard files hold {sizes} rows: not the shards 0/{len(paths)} .. {len(paths) - 1}/{len(paths)} of one "
            "finished grid (give every shard, in order, after all of them have finished)"
        )
    rows = [part[j] for j in range(sizes[0]) for part in parts if j < len(part)]
    _check_grid_order(rows, paths)
    if out is not None:
        write_csv(Path(out), rows)
    return rows


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard i/n needs 0 <= i < n, got {text!r}")
    return i, n


def run_grid(tasks: Sequence[str], methods: Sequence[str], modes: Sequence[str], budgets: Sequence[int], *,
             models: Sequence[str] = ("oracle",), runs: int = 64, steps: int = 10, seed: int = 0,
             shard: tuple[int, int] = (0, 1), out: Optional[Path] = None, digits: Sequence[int] = (7,),
             data_dir: Optional[str] = None, time_grid: str = "uniform", progress: bool = True,
             method_options: Optional[dict] = None, scale: float = 1.0,
             diffusion_path: Optional[str] = None) -> list[dict]:
    """Run the grid (this shard of it); rows are written to ``out`` (atomically) after every cell.

    ``method_options``: {method name: {option: value}} passed to ``search.run`` for that method
    (e.g. ``{"smc": {"lam": 0.05}}``); a method name not in ``methods`` is an error.
    """
    from toyflow import search

    resolved = []
    for m in methods:  # a registered name, package.module:Class or path/to/file.py:Class (registered on load)
        try:
            resolved.append(search.resolve_method(m).name)  # ValueError for an unknown name: never a fallback
        except TypeError as e:  # the class is not a search.Method
            raise ValueError(f"method {m!r}: {e}") from None
    methods = resolved
    from toyflow.rewards import check_scale

    scale = check_scale(scale)
    method_options = dict(method_options or {})
    stray = [m for m in method_options if m not in methods]
    if stray:
        raise ValueError(f"options given for {stray}, which are not among the methods {list(methods)}")
    from toyflow.search.options import build_options

    for method, opts in method_options.items():  # unknown keys / bad values fail here, not as skipped cells
        try:
            build_options(method, opts)
        except TypeError as e:
            raise ValueError(f"options of {method}: {e}") from None
    bad_modes = [m for m in modes if m not in search.MODES]
    if bad_modes:
        raise ValueError(f"unknown modes {bad_modes}; choose from {', '.join(search.MODES)}")
    cells = []
    for task_name in tasks:
        for model in models:
            for digit in (digits if task_name in ("mnist-digit", "mnist-thick") else (None,)):
                for method in methods:
                    for mode in modes:
                        for budget in budgets:
                            cells.append((task_name, model, digit, method, mode, int(budget)))
    i, n = shard
    cells = cells[i::n]
    built: dict = {}
    rows: list[dict] = []
    for task_name, model, digit, method, mode, budget in tqdm(cells, desc="bench search", disable=not progress):
        key = (task_name, model, digit)
        if key not in built:
            built[key] = make_task(task_name, model, digit=digit if digit is not None else 7, data_dir=data_dir,
                                   scale=scale)
        row = run_cell(built[key], method, mode, budget, steps=steps, runs=runs, seed=seed, time_grid=time_grid,
                       diffusion_path=diffusion_path, options=method_options.get(method), scale=scale)
        rows.append({**row, "shard": f"{i}/{n}"})  # lets `bench merge` check the order the shards are given in
        if out is not None:
            write_csv(out, rows)
    return rows


# toyflow.search.MODES without importing torch (the options and their --help are built before any
# compute); tests/test_cli_polish.py checks that the two lists agree
_MODE_NAMES = ("linear-ode", "linear-sde", "vp-sde")


def _search_modes() -> tuple:
    """The mode names (those of toyflow.search.MODES, the one list of modes)."""
    return _MODE_NAMES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", nargs="+", default=["rare-mode"],
                   help=f"tasks: {', '.join(TASKS_2D + TASKS_MNIST)} (default rare-mode)")
    p.add_argument("--models", nargs="+", default=["oracle"],
                   help="2D: oracle (exact mixture flow, x0_hat = posterior mean), mlp (shipped MLP, scale 1), flowmap "
                        "(exact flow-map oracle, x0_hat = the ODE endpoint), flowmap-mlp (shipped distilled MLP, scale 8); "
                        "MNIST: unet (the shipped 20-step flow; oracle / mlp mean the same there), unet-fewstep (the shipped "
                        "few-step student, a sharp x0_hat at every t) (default oracle)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="2D tasks: multiply the data and the reward's length scales by this, noise unchanged; 8 puts "
                        "the decision at high noise, the paper's regime (default 1)")
    p.add_argument("--diffusion-path", default=None, choices=("linear", "vp"),
                   help="give g in this path's time, transported to the sampling path at equal noise levels "
                        "(default: the sampling path's own time)")
    p.add_argument("--methods", nargs="+", default=["bon", "sop", "smc", "code", "svdd", "rbf"],
                   help="registered search methods, or your own as package.module:Class or path/to/file.py:Class "
                        "(a toyflow.search.Method subclass; e.g. examples/beam_search.py:BeamSearch)")
    p.add_argument("--modes", nargs="+", default=list(_search_modes()), help=f"modes: {', '.join(_search_modes())}")
    p.add_argument("--budgets", nargs="+", type=int, default=[50, 100, 200, 500, 1000])
    p.add_argument("--runs", type=int, default=64, help="independent runs per cell (default 64)")
    p.add_argument("--steps", type=int, default=10, help="denoising steps (default 10)")
    p.add_argument("--time-grid", default="uniform",
                   help="uniform (default), exp (the paper's), linear-snr or vp-snr (the noise levels of the Linear / "
                        "VP uniform grid)")
    p.add_argument("--digits", nargs="+", type=int, default=[7], help="target digits of mnist-digit / mnist-thick")
    p.add_argument("--data-dir", default=None, help="MNIST IDX folder for FID (default $TOYFLOW_DATA)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard", default="0/1", help="run the i-th of n slices of the grid, e.g. 2/8")
    p.add_argument("--out", default="results.csv", help="CSV to write (default results.csv)")
    p.add_argument("--plot", default=None, help="also draw the scaling curves to this PNG")
    p.add_argument("--option", nargs="+", default=[], metavar="METHOD.KEY=VALUE",
                   help="a method option, e.g. smc.lam=0.05 code.block=4 (values are Python literals)")


def parse_method_options(items: Sequence[str]) -> dict:
    """["smc.lam=0.05", "rbf.proposals_per_tick=1"] -> {"smc": {"lam": 0.05}, "rbf": {"proposals_per_tick": 1}}."""
    import ast

    out: dict = {}
    for item in items:
        name, eq, value = item.partition("=")
        method, dot, key = name.partition(".")
        if not (eq and dot and method and key):
            raise ValueError(f"--option {item!r}: write METHOD.KEY=VALUE, e.g. smc.lam=0.05")
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value  # a bare word, e.g. smc.diffusion=sigma
        out.setdefault(method, {})[key] = parsed
    return out


def main(args: argparse.Namespace) -> int:
    from toyflow.checkpoint import OutputLock, atomic_write_bytes, check_writable

    def _check_arguments(args: argparse.Namespace) -> None:
        """The arguments that can be checked without compute, each error naming its flag (ValueError)."""
        from toyflow.dynamics import TIME_GRIDS

        def ints(flag, values, low, why=""):
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < low]
            if bad:
                raise ValueError(f"{flag} must be integers >= {low}{why}, got {bad[0]!r}")

        ints("--runs", [args.runs], 2, " (a cell's standard error and diversity need two samples)")
        ints("--steps", [args.steps], 1)
        ints("--budgets", list(args.budgets), 1, " (NFE per run)")
        if not args.budgets:
            raise ValueError("--budgets needs at least one budget, e.g. --budgets 50 100 200")
        if args.time_grid not in TIME_GRIDS:
            raise ValueError(f"unknown --time-grid {args.time_grid!r}; choose one of {', '.join(TIME_GRIDS)}")
        for t in args.task:
            tasks.get(t)  # a clear error naming the registered tasks
        allowed = tuple(MODELS_2D) if any(t in tasks.TOY for t in args.task) else tuple(MODELS_MNIST)
        bad_models = [m for m in args.models if m not in allowed]
        if bad_models:
            raise ValueError(f"unknown --models {bad_models[0]!r} for these tasks; choose from {', '.join(allowed)}")
        if any(t in ("mnist-digit", "mnist-thick") for t in args.task):
            bad = [d for d in args.digits if not 0 <= d <= 9]
            if bad:
                raise ValueError(f"--digits must be digits 0..9, got {bad[0]}")
        if args.plot and Path(args.plot).resolve() == Path(args.out).resolve():
            raise ValueError(f"--plot and --out are the same file ({args.out}); give the plot its own .png path")

    def _plot_format(path: Path) -> str:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        fmt = (path.suffix[1:] or "png").lower()
        supported = FigureCanvasAgg.get_supported_filetypes()
        if fmt not in supported:
            raise ValueError(f"--plot {path}: matplotlib cannot write {fmt!r} files; use one of {', '.join(sorted(supported))}")
        return fmt

    out = Path(args.out)
    _check_arguments(args)  # before any compute: the arguments, then the outputs
    shard = parse_shard(args.shard)
    method_options = parse_method_options(args.option)
    check_writable(out, "--out")
    plot_format = None
    if args.plot:
        plot_format = _plot_format(Path(args.plot))
        check_writable(args.plot, "--plot")
    with OutputLock(out, flag="--out", what="results CSV"):  # a second run writing the same CSV is refused
        rows = run_grid(args.task, args.methods, args.modes, args.budgets, models=args.models, runs=args.runs,
                        steps=args.steps, seed=args.seed, shard=shard, out=out,
                        digits=args.digits, data_dir=args.data_dir, time_grid=args.time_grid,
                        method_options=method_options, scale=args.scale,
                        diffusion_path=args.diffusion_path)
    print(f"wrote {len(rows)} rows to {out}")
    ok = [r for r in rows if r.get("status") == "ok"]
    if rows and not ok and shard[1] > 1:
        log.warning("every cell of shard %s was skipped, e.g. %s", args.shard, rows[0]["status"])
    elif rows and not ok:
        raise ValueError(f"every cell was skipped ({len(rows)} rows in {out}), e.g. {rows[0]['method']} at budget "
                         f"{rows[0]['budget']}: {str(rows[0]['status']).removeprefix('skipped: ')}; raise --budgets "
                         "(or lower --steps)")
    if args.plot:
        import io

        from toyflow import viz

        fig = viz.scaling_curves(ok)
        buf = io.BytesIO()
        fig.savefig(buf, format=plot_format, dpi=130, bbox_inches="tight")
        atomic_write_bytes(args.plot, buf.getvalue())
        print(f"wrote {args.plot}")
    return 0
