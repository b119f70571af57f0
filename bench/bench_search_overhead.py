"""Search overhead: wall time of toyflow.search.run vs the bare model calls it makes.

Run:  python bench/bench_search_overhead.py [--runs 256] [--budget 500] [--steps 10] [--repeats 5]
          [--model untrained|trained] [--mode vp-sde|linear-sde|linear-ode] [--reward quadratic|flat|task]
          [--allocator default|steady] [--floor]

Setup: R = 256 runs, budget 500 NFE per run, 10 steps, vp-sde mode, an untrained 2D
``VelocityMLP()`` (default size; timing only; ``--model trained``: the shipped ``2d-rare-mode`` MLP,
same size) and a cheap quadratic reward (``--reward flat``: a reward that never improves, so RBF
spends every quota with all runs in every batch; ``--reward task``: the rare-mode task's reward,
for the trained model). For every method:

1. one recording pass through a wrapper logs the batch size of every model call the search makes;
2. then, interleaved ``repeats`` times (so machine noise hits all alike): the search itself
   (plain model, no wrapper), and *bare* calls of the raw MLP on pre-built inputs:
   (a) "own calls": the same calls, same batch sizes, as the search made;
   (b) "one draw / call": the same NFE as this search spent, in the calls the paper's algorithm
       makes, one draw per run and call: for RBF, a first call of R rows (the initial draw), then
       call j holds the runs that drew at least j proposals (each run's own NFE); for the other
       methods (a) = (b).

A last column, "engine alone", times the same search with the model's recorded outputs replayed
(``_common.ReplayModel``: the search takes exactly the same path, but no model runs): the engine's
own bookkeeping between model calls. ``(own + engine) / own`` is the ratio the search would have if
that bookkeeping ran as fast inside the real search as it does alone; the gap to the measured ratio
is how much slower the same bookkeeping runs right after each model call (the last printed line
measures that for a handful of small operations). Methods with reward gradients have no replay.

RBF evaluates chunks of draws per call by default and discards the draws after an accepted one
(not NFE, column "discarded / run"); the row "rbf (1 / call)" is RBF with ``proposals_per_tick=1``.
The large-budget check (RBF's wall time per NFE against SVDD's):
``--runs 64 --budget 100000 --methods svdd,rbf --repeats 3 --no-one-per-call`` (the line after the
table; the row of RBF with one draw per call alone takes about ten minutes there).

The table reports best-of-repeats wall times and ratio = search / bare; "median" is the median over
rounds of each round's search / own calls (the two timed next to each other), and "faults" the
minor page faults of one search and of one replay of its own calls (median over rounds, thousands).

``--floor`` splits RBF's ratio into its parts: the tick's tensor operations alone (row gathers,
transition and noise, the VP conversion, x0_hat, the reward, the host copy, the selection of the
kept rows) with the real model and reward but none of the per-run bookkeeping, and the model's
calls timed inside the search against the bare replay (how much slower the model runs between the
engine's operations than back to back).

``--allocator steady`` (glibc only) fixes the C allocator's thresholds before anything runs
(``mallopt``: no mmap below 32 MiB, no trimming of the heap): with glibc's default, whether a model
call's large activations get fresh pages from the kernel (page faults) depends on what else was
allocated and freed before it, so two replays of the very same calls can differ by tens of
percent. The steady allocator takes that out of search and bare calls alike and leaves the
engine's own cost; both settings are reported.

The vp-sde search uses precomputed per-step constants of the Linear -> VP conversion, so the bare calls are of the raw MLP.
DPS methods also run a backward pass per evaluation, which the bare forward calls do not.
"""

from __future__ import annotations

import argparse
import ctypes
import resource
import statistics
import time

import torch

from toyflow import pretrained, rewards, search
from toyflow.models import VelocityMLP
from _common import CallLogger, ReplayModel, sync


class QuadReward:
    """r(x) = -|x - (1, 1)|^2 (differentiable, cheap). RBF often accepts early: batches shrink."""

    name = "quadratic"
    differentiable = True

    def __call__(self, x0):
        return -((x0 - 1.0) ** 2).sum(-1)


class FlatReward:
    """r(x) = 0 * x_1 (never improves): RBF spends every quota, all runs stay in every batch."""

    name = "flat"
    differentiable = True

    def __call__(self, x0):
        return 0.0 * x0[:, 0]


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def steady_allocator() -> str:
    """glibc ``mallopt``: allocations below 32 MiB from the heap, never returned by trimming.
    Returns the line for the header."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        raise SystemExit("--allocator steady needs glibc (Linux) and there is none here; run with --allocator default")
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
    ok = (libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
          and libc.mallopt(M_TOP_PAD, 64 << 20))
    if not ok:
        raise SystemExit("mallopt refused the steady allocator settings; run with --allocator default")
    return "allocator: steady (glibc mallopt: mmap threshold 32 MiB, trim threshold 1 GiB, top pad 64 MiB)"


def bare_calls(model, sizes, max_b, device=None):
    x = torch.randn(max_b, 2, device=device)
    t = torch.rand(max_b, device=device) * 0.9 + 0.05
    inputs = {b: (x[:b].contiguous(), t[:b].contiguous()) for b in set(sizes)}
    with torch.no_grad():
        sync(device)
        t0 = time.perf_counter()
        for b in sizes:
            model(*inputs[b])
        sync(device)
        return time.perf_counter() - t0


def measure(method, model, reward, kw, options, repeats, device=None):
    """One recording pass (the batch sizes of every model call), then ``repeats`` interleaved rounds of
    the search, the bare replay of its own calls and the same NFE drawn one per run and call. Returns
    the per-round seconds ("search", "own", "strict"), the result and the number of calls."""
    replay = ReplayModel(model)
    logger = CallLogger(replay)
    res = search.run(method, logger, reward, generator=torch.Generator(device=device).manual_seed(1), **kw, **options)
    sizes = logger.sizes
    if method.startswith("rbf"):  # the same NFE, one draw per run and call
        search_nfe = res.nfe - res.nfe_per_step[:, 0]
        # the initial draws in one call, then one row per run still drawing
        strict = [int(res.nfe_per_step[:, 0].sum())] + [int((search_nfe >= j).sum()) for j in range(1, int(search_nfe.max()) + 1)]
        assert sum(strict) == int(res.nfe.sum())
    else:
        strict = sizes
    out = {"search": [], "own": [], "strict": [], "engine": [], "res": res, "calls": len(sizes), "sizes": sizes,
           "search_faults": [], "own_faults": []}
    def run_search(m=model, faults=None):
        sync(device)
        f0, t0 = minor_faults(), time.perf_counter()
        search.run(method, m, reward, generator=torch.Generator(device=device).manual_seed(1), **kw, **options)
        sync(device)
        elapsed = time.perf_counter() - t0
        if faults is not None:
            faults.append(minor_faults() - f0)
        return elapsed

    def run_engine_alone():  # the same search with the model's outputs replayed: the engine's own work
        replay.rewind()
        return run_search(replay)

    for i in range(repeats):  # the order alternates, so a drift of the machine's speed favours neither side
        if i % 2 == 0:
            out["search"].append(run_search(faults=out["search_faults"]))
        f0 = minor_faults()
        out["own"].append(bare_calls(model, sizes, max(sizes), device))
        out["own_faults"].append(minor_faults() - f0)
        out["strict"].append(bare_calls(model, strict, max(strict), device))
        if not search.get_method(method).needs_gradients:  # replayed outputs carry no model Jacobian
            out["engine"].append(run_engine_alone())
        if i % 2 == 1:
            out["search"].append(run_search(faults=out["search_faults"]))
    return out


def tensor_floor(model, reward, sizes, runs: int, steps: int, mode: str, repeats: int, device=None) -> tuple[float, float]:
    """Best seconds of RBF's tensor work alone, and of the bare model calls beside it, over ``repeats``
    interleaved rounds: for every call size of the search, the tensor operations one chunked tick
    makes (row gathers of the held particles and of the grid coefficients, the transition with its
    noise, the Linear -> VP conversion in vp-sde mode, x0_hat, the reward, the host copy of the
    rewards, the selection of the kept rows), with the real model and reward, and none of the
    per-run bookkeeping (acceptance, quotas, ledger). The first call (the initial draws) is a plain
    velocity, x0_hat and reward."""
    import numpy as np
    from toyflow.search._core import TickColumn as T, VelocityColumn as V
    g = torch.Generator(device=device).manual_seed(0)
    rng = np.random.default_rng(0)
    R, P, W, K = runs, 3, T.VELOCITY + 4, steps + 1  # tick table: (W columns) x (grid times)
    H0 = torch.randn(R, P, 2, generator=g)
    tab = (torch.rand(W, K, 1, generator=g) * 0.5 + 0.5).contiguous()  # positive, moderate coefficients
    k = rng.integers(0, K - 1, R)
    plans = []
    for n in sizes[1:]:
        width = np.full(R, n // R) + (np.arange(R) < n % R)
        src = np.repeat(np.arange(R), width)
        start = np.cumsum(width) - width
        idx = torch.from_numpy(np.minimum(start, n - 1))
        plans.append((n, torch.from_numpy(k[src]), torch.from_numpy(src), idx))
    better = torch.from_numpy(rng.random(R) < 0.5).view(R, 1, 1)
    fin = torch.from_numpy(rng.random(R) < 0.5).view(R, 1, 1)
    x_first, t_first = torch.randn(sizes[0], 2, generator=g), torch.rand(sizes[0], generator=g) * 0.9 + 0.05
    vp, noisy = mode == "vp-sde", mode != "linear-ode"
    t_col, inv_s, lin, scale = (T.VELOCITY + j for j in (V.T_MODEL, V.INV_S, V.LIN, V.SCALE))

    evaluate = getattr(reward, "evaluate", reward)  # as the engine calls it: its own checks come after

    def ticks():
        SB = H0.clone()
        u = model(x_first, t_first)
        evaluate(x_first * 0.5 + u * 0.5).numpy()
        for n, ks, src, idx in plans:
            c = tab.index_select(1, ks).unbind(0)  # (n, 1) columns
            held = H0.index_select(0, src).unbind(1)  # always from the same particles: values stay bounded
            y = torch.addcmul(c[T.A] * held[0], c[T.B], held[1])
            if noisy:
                y = y.addcmul_(c[T.C], torch.randn(n, 2, generator=g))
            if vp:
                uy = torch.addcmul(c[lin] * y, c[scale], model(y * c[inv_s], c[t_col].view(n)))
            else:
                uy = model(y, c[t_col].view(n))
            y0 = torch.addcmul(c[T.P_NEXT] * y, c[T.Q_NEXT], uy)
            evaluate(y0).numpy()
            SB = torch.where(better, torch.stack([y, uy, y0], 1).index_select(0, idx), SB)
            torch.where(fin, SB, H0)  # the held particles' update (not fed back, see above)

    floor, own = [], []
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            ticks()
            floor.append(time.perf_counter() - t0)
            own.append(bare_calls(model, sizes, max(sizes), device))
    return min(floor), min(own)


def model_time_in_search(method, model, reward, kw, repeats: int, device=None) -> float:
    """Best total wall time of the model's own calls inside ``repeats`` searches (the search as
    usual, each call timed where it is made)."""
    best = float("inf")
    for _ in range(repeats):
        timed = CallLogger(model)
        search.run(method, timed, reward, generator=torch.Generator(device=device).manual_seed(1), **kw)
        best = min(best, timed.seconds)
    return best


def after_gemm_probe(n: int = 300) -> str:
    """How much slower a few dozen small tensor and numpy operations (a tick's bookkeeping) run right
    after a model call than after none: the engine's work runs between model calls."""
    import numpy as np
    mlp = VelocityMLP().eval()
    x, t = torch.randn(1024, 2), torch.rand(1024)
    a, b = torch.randn(1024, 2), np.random.default_rng(0).random(256)

    def small_ops():
        for _ in range(15):
            a * 1.5 + a
            b * 2.0 + b

    def timed(before):
        total = 0.0
        with torch.no_grad():
            for _ in range(n):
                before()
                t0 = time.perf_counter()
                small_ops()
                total += time.perf_counter() - t0
        return total / n

    idle = min(timed(lambda: None) for _ in range(3))
    after = min(timed(lambda: mlp(x, t)) for _ in range(3))
    return (f"bookkeeping probe (60 small torch/numpy ops): {idle * 1e6:.0f} us after nothing, {after * 1e6:.0f} us right "
            f"after a 1,024-row MLP call ({after / idle:.2f}x)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=256)
    ap.add_argument("--budget", type=int, default=500)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default=",".join(search.METHODS))
    ap.add_argument("--reward", choices=("quadratic", "flat", "task"), default="quadratic")
    ap.add_argument("--model", choices=("untrained", "trained"), default="untrained",
                    help="VelocityMLP() untrained (default) or the shipped 2d-rare-mode MLP (same size)")
    ap.add_argument("--mode", default="vp-sde", help="sampler mode (default vp-sde)")
    ap.add_argument("--no-one-per-call", action="store_true",
                    help="leave out the row of RBF with proposals_per_tick=1 (one model call per draw: slow at large budgets)")
    ap.add_argument("--floor", action="store_true",
                    help="also time RBF's tensor operations alone (no per-run bookkeeping) against its own calls")
    ap.add_argument("--allocator", choices=("default", "steady"), default="default",
                    help="glibc's default allocator, or fixed thresholds (no page faults from mmap / trimming)")
    args = ap.parse_args()
    if args.floor and "rbf" not in args.methods.split(","):
        ap.error("--floor splits RBF's overhead: add rbf to --methods (e.g. --methods rbf --floor)")
    allocator = steady_allocator() if args.allocator == "steady" else "allocator: default"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    mlp = VelocityMLP().eval() if args.model == "untrained" else pretrained.load("2d-rare-mode").eval()
    reward = {"quadratic": QuadReward, "flat": FlatReward, "task": lambda: rewards.task("rare-mode")[1]}[args.reward]()
    kw = dict(mode=args.mode, budget=args.budget, steps=args.steps, runs=args.runs, shape=(2,))

    print(f"R = {args.runs} runs, budget {args.budget}, {args.steps} steps, {args.mode}, {args.model} MLP, "
          f"{getattr(reward, 'name', args.reward)} reward, {args.threads} thread(s), best of {args.repeats}; {allocator}")
    header = f"{'method':<15} {'calls':>6} {'NFE/run':>8} {'discarded/run':>14} {'search ms':>10} " \
             f"{'own calls ms':>13} {'ratio':>6} {'median':>6} {'1 draw/call ms':>15} {'ratio':>6} {'engine alone ms':>16} " \
             f"{'(own+engine)/own':>17} {'faults k search/own':>19}"
    print(header)
    print("-" * len(header))
    rows = [(m, {}) for m in args.methods.split(",")]
    if "rbf" in args.methods.split(",") and not args.no_one_per_call:
        rows.insert([m for m, _ in rows].index("rbf") + 1, ("rbf (1 / call)", {"proposals_per_tick": 1}))
    per_nfe = {}  # best search wall time per NFE spent
    for label, options in rows:
        method = label.split()[0]
        m = measure(method, mlp, reward, kw, options, args.repeats)
        if label == "rbf":
            floor_sizes = m["sizes"]
        res = m["res"]
        s, b, c = min(m["search"]), min(m["own"]), min(m["strict"])
        per_nfe[label] = s / float(res.nfe.sum())
        paired = statistics.median(si / oi for si, oi in zip(m["search"], m["own"]))  # round i: both timed together
        faults = f"{statistics.median(m['search_faults']) / 1e3:.1f} / {statistics.median(m['own_faults']) / 1e3:.1f}"
        print(f"{label:<15} {m['calls']:>6} {res.nfe.float().mean().item():>8.1f} "
              f"{res.discarded.float().mean().item():>14.1f} {s * 1e3:>10.1f} {b * 1e3:>13.1f} {s / b:>6.2f} {paired:>6.2f} "
              f"{c * 1e3:>15.1f} {s / c:>6.2f}" + (f" {min(m['engine']) * 1e3:>16.1f} {(b + min(m['engine'])) / b:>17.2f}"
                                                   if m["engine"] else f" {'-':>16} {'-':>17}") + f" {faults:>19}")
    if "svdd" in per_nfe:
        print("search wall time per NFE relative to svdd's: " + ", ".join(
            f"{label} {v / per_nfe['svdd']:.2f}" for label, v in per_nfe.items() if label != "svdd"))
    if args.floor and "rbf" in per_nfe:
        floor, own = tensor_floor(mlp, reward, floor_sizes, args.runs, args.steps, args.mode, args.repeats)
        inside = model_time_in_search("rbf", mlp, reward, kw, args.repeats)
        print(f"rbf tensor floor (the tick's tensor operations alone, with the model and reward; no per-run bookkeeping): "
              f"{floor * 1e3:.1f} ms against {own * 1e3:.1f} ms of its own calls, {floor / own:.2f}x; the model's calls "
              f"timed inside the search: {inside * 1e3:.1f} ms, {inside / own:.2f}x the bare replay")
    print(after_gemm_probe())


if __name__ == "__main__":
    main()
