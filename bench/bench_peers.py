"""toyflow against peer libraries, side by side in one process: training, sampling, search.

Run:  pip install -e ".[bench]"      (torchcfm, torchdiffeq; MIT. ``pip install --no-deps torchcfm torchdiffeq
                                      pot`` keeps the installed torch: torchcfm's own dependencies may upgrade it)
      python bench/bench_peers.py    [--rounds 5] [--threads 1] [--only train,ttq,mnist,ode,sde,search] [--quick]
                                     (about 8 minutes on one CPU thread; --quick: under a minute)

Every comparison runs its contenders interleaved, round after round (a shared machine's noise hits
all alike), and reports the best and the median of the rounds and the ratio toyflow / peer of each
(below 1: toyflow faster, except samples/s rows). Wall times of a shared machine are noisy; the
ratios of one run are the result.

- train:  2D flow matching, batch 256, per step: ``toyflow.train.train_flow`` (AdamW, cosine lr,
          gradient clipping, EMA, finite-loss check; by default and with ``fused_adamw=True``) against the
          torchcfm tutorial loop (``ConditionalFlowMatcher``, Adam, no clipping, no EMA) with the same model
          (toyflow's ``VelocityMLP``) and the same data sampler, against that loop given toyflow's recipe
          the plain way (AdamW with the cosine lr, ``clip_grad_norm_``, a ``lerp_`` per EMA tensor), and
          against the torchcfm loop with its own tutorial MLP (3 x 64, SELU). The wall clocks cover the loop
          only (train_flow's ``wall_time``); the CPU-time ratios, steadier on a shared machine, whole calls.
- ttq:    time to quality: training wall time until the energy distance of 5,000 samples (100 Euler
          steps) to 5,000 held-out points is <= --target. toyflow: the ``toyflow train 2d`` recipe
          with --steps 250, 500, 1000, 1500, 2000 (its cosine schedule follows --steps): the wall time of
          the shortest that reaches the target (the note gives the whole ladder's time too); torchcfm: its
          tutorial recipe (MLP 3 x 64, Adam lr 1e-3, batch 256, sigma 0), evaluated every 250 steps up to
          20,000: the training time (evaluations excluded) to the first evaluation that reaches it.
- mnist:  the MNIST training loop (the shipped UNet layout, 2.69 M parameters, batch 128, AdamW, clipping,
          EMA), samples/s over the loop, against a bare PyTorch loop of the same model and recipe (torch's
          default AdamW, ``clip_grad_norm_``, a ``lerp_`` per EMA tensor; no lr schedule, logging or checks).
- ode:    ODE sampling of 1,000 and 10,000 particles (the shipped 2d-8gaussians MLP), 10 and 100 Euler
          steps: ``toyflow.dynamics.sample`` vs ``torchdiffeq.odeint(method="euler")`` on the same time
          grid and vs the bare model calls with the Euler update.
- sde:    SDE sampling (Euler-Maruyama, g = 3 t^2), same noise: ``dynamics.sample(sde=True)`` vs a
          bare loop of the model calls and the affine update x <- a x + b u + c z (coefficients precomputed).
- search: ``search.run`` vs bare replays of the model calls it made (own calls) for BoN, SVDD and
          RBF, R = 256, budget 500 (untrained MLP with a quadratic reward, the shipped rare-mode MLP
          with its task reward; linear-sde and vp-sde; bench/bench_search_overhead.py's ``measure``), and
          RBF's wall time per NFE against SVDD's at budget 2,000, R = 64.

``bench/gpu_bench.py`` runs the same functions on CUDA with GPU-sized problems.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, bench_search_overhead

from toyflow import dynamics, pretrained, rewards, search  # noqa: E402
from toyflow.data import toy2d  # noqa: E402
from toyflow.metrics import energy_distance  # noqa: E402
from toyflow.models import VelocityMLP  # noqa: E402
from toyflow.models.unet import UNet  # noqa: E402
from toyflow.train import TrainConfig, train_flow, warmup_cosine_lr  # noqa: E402

ROWS: list[dict] = []  # the summary table


def _peers():
    try:
        from torchcfm.conditional_flow_matching import ConditionalFlowMatcher
        from torchcfm.models.models import MLP
        from torchdiffeq import odeint
    except ImportError as e:  # pragma: no cover - the optional extra
        raise SystemExit(f"{e}: this section compares against torchcfm and torchdiffeq; install them with "
                         "pip install -e '.[bench]'  (or pip install --no-deps torchcfm torchdiffeq pot)") from None
    return ConditionalFlowMatcher, MLP, odeint


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock(float):
    """Seconds of wall time (the float) with the thread's CPU seconds beside them (``.cpu``): on a
    shared machine the CPU time of a one-thread run is the steadier figure."""

    cpu: float

    def __new__(cls, wall: float, cpu: float):
        obj = super().__new__(cls, wall)
        obj.cpu = cpu
        return obj

    def scaled(self, k: float) -> "Clock":
        return Clock(float(self) * k, self.cpu * k)


def timed(fn: Callable[[], object], device: torch.device) -> Clock:
    sync(device)
    c0, t0 = time.thread_time(), time.perf_counter()
    fn()
    sync(device)
    return Clock(time.perf_counter() - t0, time.thread_time() - c0)


def interleave(contenders: dict[str, Callable[[int], float]], rounds: int) -> dict[str, list[float]]:
    """Run every contender once per round, in turn (the order reversed every other round, so a drift
    of the machine's speed within a round favours no one); each returns its own measured seconds."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            times[name].append(contenders[name](r))
    return times


def record(work: str, ours: list[float], peer: list[float], peer_name: str, unit: str = "s", scale: float = 1.0,
           higher_is_better: bool = False, note: str = "") -> None:
    """One row: best and median of each side, ratio toyflow / peer of the bests and of the medians
    (of wall time; of CPU time too where the contenders report it and the device is the CPU)."""
    pick = max if higher_is_better else min
    b_o, b_p = pick(ours), pick(peer)
    m_o, m_p = statistics.median(ours), statistics.median(peer)

    def ratio(a, b):  # inf: a time-to-quality target not reached
        return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else float("nan")

    row = dict(work=work, peer=peer_name, ours=f"{b_o * scale:.4g} / {m_o * scale:.4g} {unit}",
               theirs=f"{b_p * scale:.4g} / {m_p * scale:.4g} {unit}", best=ratio(b_o, b_p), median=ratio(m_o, m_p),
               note=note, cpu="")
    if all(isinstance(v, Clock) for v in ours + peer) and DEVICE_IS_CPU[0]:
        co, cp = [v.cpu for v in ours], [v.cpu for v in peer]
        row["cpu"] = f"{pick(co) / pick(cp):.2f}x / {statistics.median(co) / statistics.median(cp):.2f}x"
    ROWS.append(row)
    print(f"  {work} vs {peer_name}: ratio best {row['best']:.3f}, median {row['median']:.3f}"
          + (f", CPU time {row['cpu']}" if row["cpu"] else "")
          + f"  (toyflow {row['ours']}, peer {row['theirs']}) {note}", flush=True)


DEVICE_IS_CPU = [True]


def table_markdown() -> str:
    """The rows so far as a Markdown table (ratios toyflow / peer of the best and of the median round)."""
    def fmt(x):
        return "not reached" if math.isnan(x) else f"{x:.2f}x"

    lines = ["| work | peer | toyflow best / median | peer best / median | ratio best / median (wall) | "
             "ratio best / median (CPU time) | note |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['work']} | {r['peer']} | {r['ours']} | {r['theirs']} | {fmt(r['best'])} / {fmt(r['median'])} | "
              f"{r['cpu'] or '-'} | {r['note']} |" for r in ROWS]
    return "\n".join(lines) + "\n"


def print_table() -> None:
    print("\n" + table_markdown(), end="")


def eight_gaussians(n: int, g: torch.Generator) -> torch.Tensor:
    return toy2d.sample("8gaussians", n, generator=g)


# ---- training -------------------------------------------------------------------------------------
def cfm_loop(model: torch.nn.Module, steps: int, batch: int, device: torch.device, *, own_mlp: bool, seed: int = 0,
             lr: float = 1e-3, sigma: float = 0.0, data=eight_gaussians, every: int = 0, evaluate=None,
             stop=None, features: bool = False):
    """The torchcfm tutorial loop (t = 0 noise, t = 1 data). Every ``every`` steps ``evaluate(model)``
    (its time not counted); ``stop(value)`` true ends the loop there. ``features``: train_flow's recipe
    added the way a user writes it (AdamW with its cosine lr, ``clip_grad_norm_``, a ``lerp_`` per EMA
    tensor). Returns (training seconds, [(step, training seconds so far, value)])."""
    ConditionalFlowMatcher, _, _ = _peers()
    torch.manual_seed(seed)
    model = model.to(device)
    if features:
        cfg = TrainConfig(steps=steps)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        ema = copy.deepcopy(model).requires_grad_(False)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    FM = ConditionalFlowMatcher(sigma=sigma)
    g = torch.Generator().manual_seed(seed)
    elapsed, evals = 0.0, []
    sync(device)
    t0 = time.perf_counter()
    for k in range(1, steps + 1):
        if features:
            for group in opt.param_groups:
                group["lr"] = warmup_cosine_lr(k - 1, cfg)
        opt.zero_grad()
        x1 = data(batch, g).to(device)
        x0 = torch.randn_like(x1)
        t, xt, ut = FM.sample_location_and_conditional_flow(x0, x1)
        vt = model(torch.cat([xt, t[:, None]], dim=-1)) if own_mlp else model(xt, t)
        loss = torch.mean((vt - ut) ** 2)
        loss.backward()
        if features:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if features:
            d = min(cfg.ema_decay, k / (9 + k))
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), model.parameters()):
                    pe.lerp_(p, 1 - d)
        if every and k % every == 0:
            sync(device)
            elapsed += time.perf_counter() - t0
            evals.append((k, elapsed, evaluate(model)))
            if stop is not None and stop(evals[-1][2]):
                return elapsed, evals
            t0 = time.perf_counter()
    sync(device)
    elapsed += time.perf_counter() - t0
    return elapsed, evals


def bench_train(device: torch.device, rounds: int, steps: int = 300, batch: int = 256, amp: bool = True) -> None:
    _, MLP, _ = _peers()
    print(f"train: 2D flow matching, batch {batch}, {steps} steps per round, {rounds} rounds, {device}")

    # per step: the loops alone (train_flow's own clock, TrainResult.wall_time, starts at its first step)
    # (the CPU seconds, steadier on a shared machine, are those of the whole call: setup included on both sides)
    def toyflow_run(fused):
        def run(r):
            cfg = TrainConfig(steps=steps, batch_size=batch, device=str(device), progress=False, seed=r, amp=amp,
                              fused_adamw=fused)
            c0 = time.thread_time()
            wall = train_flow(VelocityMLP(), eight_gaussians, "linear", cfg).wall_time
            return Clock(wall / steps, (time.thread_time() - c0) / steps)
        return run

    def cfm(own_mlp):
        def run(r):
            c0 = time.thread_time()
            model = MLP(dim=2, time_varying=True) if own_mlp else VelocityMLP()
            wall = cfm_loop(model, steps, batch, device, own_mlp=own_mlp, seed=r)[0]
            return Clock(wall / steps, (time.thread_time() - c0) / steps)
        return run

    cfm_same, cfm_own = cfm(False), cfm(True)

    def cfm_features(r):  # the torchcfm loop with what train_flow adds, written the usual way
        c0 = time.thread_time()
        wall = cfm_loop(VelocityMLP(), steps, batch, device, own_mlp=False, seed=r, features=True)[0]
        return Clock(wall / steps, (time.thread_time() - c0) / steps)

    t = interleave({"toyflow": toyflow_run(False), "toyflow-fused": toyflow_run(True), "cfm-same": cfm_same,
                    "cfm-features": cfm_features, "cfm-own": cfm_own}, rounds)
    same = f"2D training per step, batch {batch}, same model (VelocityMLP, 37.8k params)"
    record(same, t["toyflow"], t["cfm-same"], "torchcfm loop", "ms", 1e3,
           note="toyflow default (bit-identical to the plain loop); it also clips, keeps an EMA and schedules the lr")
    record(same, t["toyflow-fused"], t["cfm-same"], "torchcfm loop", "ms", 1e3, note="toyflow with fused_adamw=True")
    record(same, t["toyflow"], t["cfm-features"], "torchcfm loop + AdamW, lr schedule, clip_grad_norm_, EMA", "ms", 1e3,
           note="toyflow default; the peer given toyflow's recipe the plain way")
    record(f"2D training per step, batch {batch}, each its own model", t["toyflow"], t["cfm-own"],
           "torchcfm loop + tutorial MLP (8.7k params)", "ms", 1e3, note="toyflow default")


def bench_time_to_quality(device: torch.device, rounds: int, target: float = 0.01, n_eval: int = 5000,
                          ladder=(250, 500, 1000, 1500, 2000), cfm_max: int = 20_000, cfm_every: int = 250) -> None:
    _, MLP, odeint = _peers()
    print(f"ttq: wall time to energy distance <= {target} ({n_eval} samples, 100 Euler steps), {rounds} seeds")
    ge = torch.Generator().manual_seed(12345)
    z = torch.randn(n_eval, 2, generator=ge).to(device)
    held = eight_gaussians(n_eval, ge)
    floor = energy_distance(eight_gaussians(n_eval, ge), held)

    def ed(x):
        return energy_distance(x.detach().float().cpu(), held)

    ours, theirs, ours_at, theirs_at, ladder_total = [], [], [], [], []
    for seed in range(rounds):
        hit, at, spent, e = float("inf"), f">{ladder[-1]}", 0.0, float("nan")
        for steps in ladder:  # the CLI recipe: toyflow train 2d --dataset 8gaussians --steps N
            cfg = TrainConfig(steps=steps, batch_size=256, lr=2e-3, ema_decay=0.999, seed=seed, device=str(device),
                              progress=False)
            res = train_flow(VelocityMLP(), eight_gaussians, "linear", cfg)
            spent += res.wall_time
            with torch.no_grad():
                e = ed(dynamics.sample(res.model, z, "linear", steps=100).x)
            if e <= target:
                hit, at = res.wall_time, str(steps)
                break
        ours.append(hit)
        ours_at.append(at)
        ladder_total.append(spent)

        def evaluate(m):
            with torch.no_grad():
                xs = odeint(lambda t, x: m(torch.cat([x, t.expand(x.shape[0], 1)], -1)), z,
                            torch.linspace(0, 1, 101, device=device), method="euler")[-1]
            return ed(xs)

        _, evals = cfm_loop(MLP(dim=2, time_varying=True), cfm_max, 256, device, own_mlp=True, seed=seed,
                            every=cfm_every, evaluate=evaluate, stop=lambda v: v <= target)
        first = next(((k, s, v) for k, s, v in evals if v <= target), None)
        theirs.append(first[1] if first else float("inf"))
        theirs_at.append(str(first[0]) if first else f">{cfm_max}")
        print(f"   seed {seed}: toyflow --steps {ours_at[-1]} ({ours[-1]:.2f} s, ED {e:.4f}; ladder {spent:.2f} s); "
              f"torchcfm step {theirs_at[-1]} ({theirs[-1]:.2f} s; EDs {', '.join(f'{v:.4f}' for _, _, v in evals[:10])}"
              f"{'...' if len(evals) > 10 else ''})", flush=True)
    record(f"2D time to ED <= {target} (n = {n_eval}, floor {floor:.4f}), {rounds} seeds", ours, theirs,
           "torchcfm tutorial recipe", "s",
           note=f"steps needed: toyflow {'/'.join(ours_at)} (whole ladder {'/'.join(f'{v:.1f}' for v in ladder_total)} s), "
                f"torchcfm {'/'.join(theirs_at)}")


def bench_mnist(device: torch.device, rounds: int, steps: int = 3, batch: int = 128, amp: bool = True,
                arch=None) -> None:
    """Both clocks cover the training steps only (model construction and the EMA copy excluded).
    ``arch``: UNet options (default the shipped mnist-flow layout; smaller for smoke runs)."""
    arch = dict(arch or pretrained.info("mnist-flow")["arch_config"])
    data = (torch.rand(10_000, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)
    print(f"mnist: UNet {arch}, batch {batch}, {steps} steps per round, {rounds} rounds, {device}")
    lr, ema_decay = 1.5e-3, 0.9995
    use_amp = amp and device.type == "cuda"  # what train_flow does by default: bf16 autocast on CUDA only

    def toyflow_run(r):
        cfg = TrainConfig(steps=steps, batch_size=batch, lr=lr, ema_decay=ema_decay, device=str(device), progress=False,
                          seed=r, amp=amp)
        c0 = time.thread_time()
        res = train_flow(UNet(**arch), data, "linear", cfg)
        sync(device)  # the loop's last kernels (its own clock stops on the host)
        return Clock(steps * batch / res.wall_time, steps * batch / (time.thread_time() - c0))

    def bare(r):
        g = torch.Generator().manual_seed(r)
        torch.manual_seed(r)
        model = UNet(**arch).to(device)
        ema = copy.deepcopy(model).requires_grad_(False)
        opt = torch.optim.AdamW(model.parameters(), lr=lr)

        def loop():
            for step in range(steps):
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                    x0 = data[torch.randint(0, data.shape[0], (batch,), generator=g).to(device)]
                    x1 = torch.randn_like(x0)
                    t = torch.rand(batch, device=device)
                    tt = t[:, None, None, None]
                    loss = F.mse_loss(model((1 - tt) * x0 + tt * x1, t).float(), x1 - x0)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                d = min(ema_decay, (1 + step) / (10 + step))
                with torch.no_grad():
                    for pe, p in zip(ema.parameters(), model.parameters()):
                        pe.lerp_(p, 1 - d)

        c = timed(loop, device)
        return Clock(steps * batch / c, steps * batch / c.cpu)

    toyflow_run(0)  # warm-up (oneDNN kernels, allocator)
    t = interleave({"toyflow": toyflow_run, "bare": bare}, rounds)
    shipped = arch == pretrained.info("mnist-flow")["arch_config"]
    record(f"MNIST training, samples/s, batch {batch}{'' if shipped else f', UNet {arch}'}", t["toyflow"], t["bare"], "bare PyTorch loop (same UNet, AdamW, "
           "clipping, EMA)", "samples/s", higher_is_better=True, note="samples/s: ratio > 1 means toyflow faster")


# ---- sampling -------------------------------------------------------------------------------------
def bench_ode(device: torch.device, rounds: int, ns=(1_000, 10_000), steps_list=(10, 100)) -> None:
    _, _, odeint = _peers()
    model = pretrained.load("2d-8gaussians").to(device).eval()
    for n in ns:
        x1 = torch.randn(n, 2, generator=torch.Generator().manual_seed(0)).to(device)
        for steps in steps_list:
            grid = dynamics.time_grid("uniform", steps).to(device)
            print(f"ode: {n} particles, {steps} Euler steps, {rounds} rounds, {device}")
            out = {}

            @torch.no_grad()
            def ours(r):
                return timed(lambda: out.__setitem__("toyflow", dynamics.sample(model, x1, "linear", steps=steps).x), device)

            @torch.no_grad()
            def theirs(r):
                f = lambda t, x: model(x, t.expand(x.shape[0]))  # noqa: E731
                return timed(lambda: out.__setitem__("torchdiffeq", odeint(f, x1, grid, method="euler")[-1]), device)

            @torch.no_grad()
            def bare(r):
                def loop():
                    x = x1
                    for k in range(steps):
                        x = x + (grid[k + 1] - grid[k]) * model(x, grid[k].expand(n))
                    return x
                return timed(loop, device)

            t = interleave({"toyflow": ours, "torchdiffeq": theirs, "bare": bare}, rounds)
            diff = float((out["toyflow"] - out["torchdiffeq"]).abs().max())
            record(f"ODE sampling, {n} particles, {steps} Euler steps", t["toyflow"], t["torchdiffeq"],
                   "torchdiffeq.odeint (euler)", "ms", 1e3, note=f"same samples to {diff:.1e}")
            record(f"ODE sampling, {n} particles, {steps} Euler steps", t["toyflow"], t["bare"], "bare model calls",
                   "ms", 1e3)


def bench_sde(device: torch.device, rounds: int, ns=(1_000, 10_000), steps_list=(10, 100)) -> None:
    model = pretrained.load("2d-8gaussians").to(device).eval()
    for n in ns:
        x1 = torch.randn(n, 2, generator=torch.Generator().manual_seed(0)).to(device)
        for steps in steps_list:
            times64 = dynamics.time_grid("uniform", steps, dtype=torch.float64)
            t, tn = times64[:-1], times64[1:]
            g = dynamics.diffusion_schedule("square", 3.0, "linear")(t)
            one, zero = torch.ones(steps, 1, dtype=torch.float64), torch.zeros(steps, 1, dtype=torch.float64)
            # x_next = a x + b u + c z: the coefficients of dynamics.step, read off with unit inputs
            coef = [dynamics.step(*args, t, tn, "linear", g=g, noise=nz)[:, 0].tolist()
                    for args, nz in (((one, zero), zero), ((zero, one), zero), ((zero, zero), one))]
            grid = times64.to(torch.float32).to(device)
            print(f"sde: {n} particles, {steps} Euler-Maruyama steps, {rounds} rounds, {device}")
            out = {}

            @torch.no_grad()
            def ours(r):
                gen = torch.Generator(device=device).manual_seed(r)
                return timed(lambda: out.__setitem__("toyflow", dynamics.sample(model, x1, "linear", steps=steps,
                                                                                sde=True, generator=gen).x), device)

            @torch.no_grad()
            def bare(r):
                gen = torch.Generator(device=device).manual_seed(r)

                def loop():
                    x = x1
                    for k in range(steps):
                        u = model(x, grid[k].expand(n))
                        z = torch.randn(x.shape, generator=gen, device=device)
                        x = coef[0][k] * x + coef[1][k] * u + coef[2][k] * z
                    out["bare"] = x
                return timed(loop, device)

            t = interleave({"toyflow": ours, "bare": bare}, rounds)
            diff = float((out["toyflow"] - out["bare"]).abs().max())
            record(f"SDE sampling, {n} particles, {steps} steps", t["toyflow"], t["bare"],
                   "bare loop, same noise (torchsde not in the extra)", "ms", 1e3, note=f"same paths to {diff:.1e}")


# ---- search ---------------------------------------------------------------------------------------
def search_models(device: torch.device):
    from bench_search_overhead import QuadReward

    torch.manual_seed(0)
    return {
        "untrained MLP, quadratic reward": (VelocityMLP().to(device).eval(), QuadReward()),
        "trained rare-mode MLP, its reward": (pretrained.load("2d-rare-mode").to(device).eval(), rewards.task("rare-mode")[1]),
    }


def bench_search(device: torch.device, rounds: int, runs: int = 256, budget: int = 500, big_budget: int = 2_000,
                 big_runs: int = 64, big_rounds: int = 3, methods=("bon", "svdd", "rbf")) -> None:
    from bench_search_overhead import measure

    for label, (model, reward) in search_models(device).items():
        for mode in ("linear-sde", "vp-sde"):
            kw = dict(mode=mode, budget=budget, steps=10, runs=runs, shape=(2,), device=device)
            print(f"search: {label}, {mode}, R = {runs}, budget {budget}, {rounds} rounds, {device}")
            for method in methods:
                m = measure(method, model, reward, kw, {}, rounds, device=device)
                record(f"search {method}, {label}, {mode}, R = {runs}, budget {budget}", m["search"], m["own"],
                       "its own model calls, bare", "ms", 1e3,
                       note=f"{m['calls']} calls; vs the same NFE one draw per call: best {min(m['search']) / min(m['strict']):.2f}x")
    if not big_budget:
        return
    for label, (model, reward) in search_models(device).items():
        kw = dict(mode="vp-sde", budget=big_budget, steps=10, runs=big_runs, shape=(2,), device=device)
        print(f"search: RBF vs SVDD per NFE, {label}, vp-sde, R = {big_runs}, budget {big_budget}, {big_rounds} rounds")

        def per_nfe(method):
            def fn(r):
                res = {}
                s = timed(lambda: res.setdefault("r", search.run(method, model, reward, generator=torch.Generator(
                    device=device).manual_seed(1), **kw)), device)
                return s / int(res["r"].nfe.sum())
            return fn

        t = interleave({"rbf": per_nfe("rbf"), "svdd": per_nfe("svdd")}, big_rounds)
        record(f"search wall time per NFE, {label}, vp-sde, R = {big_runs}, budget {big_budget}", t["rbf"], t["svdd"],
               "SVDD (toyflow)", "us/NFE", 1e6, note="RBF / SVDD")


SECTIONS = {
    "train": bench_train,
    "ttq": bench_time_to_quality,
    "mnist": bench_mnist,
    "ode": bench_ode,
    "sde": bench_sde,
    "search": bench_search,
}

# --quick: every section at small sizes (a smoke run, ratios only indicative)
QUICK = dict(train=dict(steps=60), ttq=dict(ladder=(100,), cfm_max=200, cfm_every=100, n_eval=500),
             mnist=dict(steps=1, batch=16), ode=dict(ns=(2_000,), steps_list=(10,)), sde=dict(ns=(2_000,), steps_list=(10,)),
             search=dict(runs=32, budget=100, big_budget=1000, big_runs=8, big_rounds=1))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the timing comparisons (default 5)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the time-to-quality comparison (default 3)")
    ap.add_argument("--sample-rounds", type=int, default=3, help="rounds of the ode, sde and mnist comparisons (default 3)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections (default all: {','.join(SECTIONS)})")
    ap.add_argument("--target", type=float, default=0.01, help="time-to-quality energy distance (default 0.01)")
    ap.add_argument("--quick", action="store_true", help="small sizes, 2 rounds: a smoke run of every section")
    args = ap.parse_args(argv)
    sections = args.only.split(",")
    for name in sections:
        if name not in SECTIONS:
            raise SystemExit(f"unknown section {name!r}; choose from {', '.join(SECTIONS)}")
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    DEVICE_IS_CPU[0] = True
    ROWS.clear()
    print(f"torch {torch.__version__}, {args.threads} thread(s), {device}")
    t0 = time.perf_counter()
    for name in sections:
        if args.quick:
            SECTIONS[name](device, 1 if name == "ttq" else 2, **QUICK[name])
        elif name == "ttq":
            SECTIONS[name](device, args.seeds, target=args.target)
        elif name == "train":  # short rounds, many of them: the steadiest ratio on a shared machine
            SECTIONS[name](device, 3 * args.rounds)
        elif name in ("ode", "sde", "mnist"):  # long rounds
            SECTIONS[name](device, args.sample_rounds)
        else:
            SECTIONS[name](device, args.rounds)
    print_table()
    print(f"\n{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
