"""Inference-time search for flow models under an NFE budget (Kim et al. 2025 and its baselines).

    res = search.run("rbf", model, reward, mode="vp-sde", budget=500, steps=10, runs=64,
                     shape=(2,), generator=torch.Generator().manual_seed(0))
    res.samples (runs, *shape)   res.rewards (runs,)   res.nfe (runs,)   res.nfe_per_step (runs, steps)

**1 NFE = one velocity evaluation of one particle**; the budget is per run and no run exceeds it
(``res.nfe <= budget``, ``res.nfe == res.nfe_per_step.sum(1)``). Column k of ``nfe_per_step``
counts the evaluations at grid time t_k (t_0 = 1 ... t_{K-1}); the last step to t_K = 0 is the
deterministic x0_hat step and costs nothing. Rewards are evaluated on x0_hat of a state, which
needs the velocity there; that velocity is reused for the state's next step, so it is paid once.

Methods (NFE per run; minimum budget):

==========  ===========================================================  =======================
method      NFE per run                                                  minimum budget
==========  ===========================================================  =======================
bon         N K, N = budget // steps                                     steps
dps         N K (guided; backward passes not counted)                    steps
smc         N K, N = budget // steps                                     steps
svdd        1 + sum_j M_j (allocation; default uses the whole budget)    steps
code        1 + sum_blocks M_b L_b                                       steps
rbf         budget: n0 + candidates drawn, the rest spent at the last    n0 + steps - 1
            search step (n0 = max(1, budget // 20))
rbf-strict  1 + candidates drawn (early acceptance may leave some)       steps
rbf+dps     as rbf                                                       n0 + steps - 1
sop         N (s + 1) + N M ((f + 2)(K - 1 - s) + f + 1)                 the same with M = 1
==========  ===========================================================  =======================

(N, M: particles / candidates; K = steps; n0 = ``initial_particles`` (default: the official
code's batch, 25 at budget 500, see :class:`RBFOptions`); SoP: s start index,
f ``renoise_steps``.) At the minimum budget every single-path method (and BoN / SMC with N = 1)
is plain sampling with the same random numbers as :func:`toyflow.dynamics.sample`.

Modes (the paper's three rows; the model is trained on the Linear interpolant): "linear-ode"
(g = 0), "linear-sde" (Linear path, SDE), "vp-sde" (the model converted to the VP path with
:func:`toyflow.interpolants.convert`, SDE). SDE defaults: diffusion "square" g_t = eta t^2,
eta = 3 (the paper); time grid "uniform" ("exp": the paper's grid). In "linear-ode" the
candidates of SVDD / CoDe / RBF from one state coincide (an ODE step has one outcome): only
initial draws (and SoP's re-noising) diversify the search, the weakness the paper points out.

Options are typed dataclasses (:class:`SamplerOptions` plus one per method, ``OPTIONS[method]``)
built from ``**options``; unknown keys raise a TypeError listing the valid ones. Budget allocation
for the per-step methods (SVDD, CoDe, RBF) is a pluggable :class:`AllocationScheme`
(``Uniform``, ``LinearDecay``, ``Rollover(base)`` or your own small subclass, see
:mod:`toyflow.search.budget`). ``record=True`` returns a :class:`SearchHistory` (held particles,
candidates with rewards and accept flags, NFE and quota per grid time, SMC's ESS).

Runs are vectorized: R runs advance together with one batched model call per tick, even when
runs sit at different grid times (RBF), and finished runs leave the batch.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence, Union

import torch

from toyflow.search import bon, rbf, smc, sop, svdd
from toyflow.search._core import MODES, Context
from toyflow.search.budget import (
    AllocationScheme,
    BudgetExceeded,
    Ledger,
    LinearDecay,
    Rollover,
    StaticAllocation,
    Uniform,
    clamp_quota,
)
from toyflow.search.options import (
    OPTIONS,
    BoNOptions,
    CoDeOptions,
    DPSOptions,
    RBFDPSOptions,
    RBFOptions,
    RBFStrictOptions,
    SamplerOptions,
    SMCOptions,
    SoPOptions,
    SVDDOptions,
    build_options,
    valid_keys,
)
from toyflow.search.result import Recorder, SearchHistory, SearchResult

__all__ = [
    "run",
    "minimum_budget",
    "METHODS",
    "MODES",
    "SearchResult",
    "SearchHistory",
    "SamplerOptions",
    "BoNOptions",
    "SoPOptions",
    "SMCOptions",
    "SVDDOptions",
    "CoDeOptions",
    "RBFOptions",
    "RBFStrictOptions",
    "DPSOptions",
    "RBFDPSOptions",
    "AllocationScheme",
    "StaticAllocation",
    "Uniform",
    "LinearDecay",
    "Rollover",
    "Ledger",
    "BudgetExceeded",
    "clamp_quota",
    "valid_keys",
    "OPTIONS",
]

METHODS = ("bon", "sop", "smc", "svdd", "code", "rbf", "rbf-strict", "dps", "rbf+dps")

# particles each method holds per grid time (for the history)
_GRADIENT_METHODS = ("dps", "rbf+dps")


def _particles(method: str, budget: int, steps: int, opts) -> int:
    if method in ("bon", "dps", "smc"):
        return budget // steps
    if method == "sop":
        return opts.paths
    return 1


def minimum_budget(method: str, steps: int = 10, **options) -> int:
    """The smallest budget ``run(method, ..., steps=steps, **options)`` accepts."""
    method = _check_method(method)
    steps = _check_int("steps", steps)
    _, opts = build_options(method, options)
    return _minimum_budget(method, steps, opts)


def _minimum_budget(method: str, steps: int, opts) -> int:
    if method in ("bon", "dps"):
        return bon.minimum_budget(steps)
    if method == "smc":
        return smc.minimum_budget(steps)
    if method in ("svdd", "code"):
        return svdd.minimum_budget(steps)
    if method in ("rbf", "rbf-strict", "rbf+dps"):
        return rbf.minimum_budget(steps, opts)
    if method == "sop":
        return sop.minimum_budget(steps, opts)
    raise ValueError(f"no minimum budget known for method {method!r}")


def _check_method(method) -> str:
    if not isinstance(method, str) or method.lower() not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(map(repr, METHODS))}")
    return method.lower()


def _check_int(name: str, v, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return v


def _infer_device(model, generator, device):
    if device is not None:
        return torch.device(device)
    if isinstance(model, torch.nn.Module):
        for t in list(model.parameters()) + list(model.buffers()):
            return t.device
    if generator is not None:
        return generator.device
    return torch.device("cpu")


def run(
    method: str,
    model: Callable,
    reward: Callable,
    *,
    mode: str = "vp-sde",
    budget: int,
    steps: int = 10,
    runs: int = 1,
    shape: Union[int, Sequence[int]],
    generator: Optional[torch.Generator] = None,
    record: bool = False,
    device=None,
    dtype: torch.dtype = torch.float32,
    **options,
) -> SearchResult:
    """Run ``runs`` independent searches of ``method`` with ``budget`` NFE each.

    Args:
        method: "bon", "sop", "smc", "svdd", "code", "rbf" (as the official code runs it: initial
            batch, whole budget spent), "rbf-strict" (the paper's text: one initial draw, first
            improvement accepted at every step), "dps" or "rbf+dps".
        model: velocity model ``model(x, t) -> u`` trained on the Linear interpolant (t = 0 data).
        reward: ``reward(x0) -> (B,)``, higher is better, evaluated on x0_hat. "dps" and "rbf+dps"
            need a differentiable reward (``reward.differentiable`` True, see toyflow.rewards).
        mode: "linear-ode", "linear-sde" or "vp-sde" (default, the paper's best).
        budget: NFE per run. steps: grid steps K. runs: independent runs R, vectorized.
        shape: shape of one sample, e.g. (2,) or (1, 28, 28).
        generator: every random number is drawn from it (same seed -> same result); None uses
            torch's global generator. It must live on ``device``.
        record: also return a :class:`SearchHistory` (memory grows with the candidates drawn).
        device: default: the model's device (or the generator's, or CPU). dtype: working dtype.
        **options: :class:`SamplerOptions` fields (diffusion, eta, time_grid) and the method's
            options (see ``OPTIONS[method]``); unknown keys raise a TypeError.
    """
    t_start = time.perf_counter()
    method = _check_method(method)
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(map(repr, MODES))}")
    if not callable(model):
        raise TypeError(f"model must be callable as model(x, t) -> velocity, got {type(model).__name__}")
    if not callable(reward):
        raise TypeError(f"reward must be callable as reward(x0) -> (B,), got {type(reward).__name__}")
    budget = _check_int("budget", budget)
    steps = _check_int("steps", steps)
    runs = _check_int("runs", runs)
    if isinstance(shape, int):
        shape = (shape,)
    if not isinstance(shape, (tuple, list, torch.Size)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
    ):
        raise ValueError(f"shape must be a tuple of positive ints (one sample's shape, e.g. (2,)), got {shape!r}")
    shape = tuple(shape)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    sampler, opts = build_options(method, options)
    need = _minimum_budget(method, steps, opts)
    if method in ("rbf", "rbf-strict", "rbf+dps"):
        n0 = opts.initial_draws(budget, steps)
        if budget < n0 + steps - 1:
            raise ValueError(
                f"budget {budget} cannot hold {method}'s {n0} initial draws and one draw per search step "
                f"({steps - 1}): it needs at least {n0 + steps - 1} NFE per run; lower initial_particles or raise the "
                f"budget (the smallest budget with these options is {need})"
            )
    elif budget < need:
        raise ValueError(
            f"budget {budget} is too small for method {method!r} with steps={steps}: it needs at least {need} NFE "
            f"per run (see toyflow.search docs for the accounting)"
        )
    if method in _GRADIENT_METHODS:
        from toyflow.rewards import check_differentiable

        check_differentiable(reward, method)
    device = _infer_device(model, generator, device)

    ctx = Context(
        model, reward, mode=mode, sampler=sampler, budget=budget, steps=steps, runs=runs, shape=shape,
        generator=generator, device=device, dtype=dtype,
    )
    if record:
        ctx.recorder = Recorder(runs, steps, _particles(method, budget, steps, opts), shape, ctx.times, dtype, device)

    with torch.no_grad():
        if method == "bon":
            samples, rewards, selected = bon.run_bon(ctx)
        elif method == "dps":
            samples, rewards, selected = bon.run_bon(ctx, lam=opts.lam)
        elif method == "smc":
            samples, rewards, selected = smc.run_smc(ctx, opts)
        elif method == "svdd":
            samples, rewards, selected = svdd.run_blocks(ctx, opts.allocation, 1)
        elif method == "code":
            samples, rewards, selected = svdd.run_blocks(ctx, opts.allocation, opts.block)
        elif method in ("rbf", "rbf-strict"):
            samples, rewards, selected = rbf.run_rbf(ctx, opts)
        elif method == "rbf+dps":
            samples, rewards, selected = rbf.run_rbf(ctx, opts, lam=opts.lam)
        elif method == "sop":
            samples, rewards, selected = sop.run_sop(ctx, opts)
        else:  # METHODS lists a name with no dispatch: a bug, never a silent fallback
            raise ValueError(f"method {method!r} is listed but has no implementation")

    ctx.ledger.check()
    nfe_per_step = ctx.ledger.per_step.clone()
    history = ctx.recorder.finish(nfe_per_step, selected) if record else None
    return SearchResult(
        samples=samples.detach(),
        rewards=rewards.detach(),
        nfe=ctx.ledger.spent.clone(),
        nfe_per_step=nfe_per_step,
        method=method,
        mode=mode,
        budget=budget,
        steps=steps,
        wall_time=time.perf_counter() - t_start,
        history=history,
        options=opts,
        sampler=sampler,
        discarded=ctx.ledger.discarded.clone(),
    )
