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
:func:`toyflow.interpolants.convert`, SDE). They are presets of a :class:`Sampler` value (sampling
path, model path, diffusion and the path whose time it is given in, eta, time grid;
:data:`MODES` is the one list of their names); ``mode=Sampler(...)`` runs any other combination.
SDE defaults: diffusion "square" g_t = eta t^2,
eta = 3 (the paper); time grid "uniform" ("exp": the paper's grid). In "linear-ode" the
candidates of SVDD / CoDe / RBF from one state coincide (an ODE step has one outcome): only
initial draws (and SoP's re-noising) diversify the search, the weakness the paper points out.

Options are typed dataclasses (:class:`SamplerOptions` plus one per method, ``OPTIONS[method]``)
built from ``**options``; unknown keys raise a TypeError listing the valid ones. Budget allocation
for the per-step methods (SVDD, CoDe, RBF) is a pluggable :class:`AllocationScheme`
(``Uniform``, ``LinearDecay``, ``Rollover(base)`` or your own small subclass, see
:mod:`toyflow.search.budget`), whose ``quota(state)`` may read the search's
:class:`AllocationState` (best reward so far, what the previous step drew and accepted, ...) and
return one quota per run. RBF refuses a scheme that is not a ``Rollover`` unless told
``rollover=True`` (wrap it) or ``rollover=False`` (drop the leftovers).
``record=True`` returns a :class:`SearchHistory` (held particles,
candidates with rewards and accept flags, NFE and quota per grid time, SMC's ESS).

Methods are values of one protocol (:class:`Method`: name, options dataclass, minimum budget,
particles held, whether it needs reward gradients, and ``run(ctx, opts)`` on a
:class:`SearchContext`); each built-in method is one file of this package that registers itself
with :func:`register`. Register your own and it runs by name here, in the benchmark
(``toyflow bench search --methods package.module:Class``) and in the figures; an unknown name is
a ValueError. See :mod:`toyflow.search.method` and ``examples/beam_search.py``.

Runs are vectorized: R runs advance together with one batched model call per tick, even when
runs sit at different grid times (RBF), and finished runs leave the batch.
``engine="textbook"`` runs a built-in method as the paper's pseudo-code writes it instead (one run
at a time, plain loops, :mod:`toyflow.search.textbook`): slow, for reading; tests/test_textbook.py
shows the fast engine equals it.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence, Union

import torch

# the built-in methods: each file defines one Method and registers it (this order is METHODS' order)
from toyflow.search import bon, sop, smc, svdd, code, rbf, rbf_strict, dps, rbf_dps  # noqa: F401, E401
from toyflow.search._core import Context, SearchContext
from toyflow.search.budget import (
    AllocationScheme,
    AllocationState,
    BudgetExceeded,
    Ledger,
    LinearDecay,
    Rollover,
    StaticAllocation,
    Uniform,
    clamp_quota,
)
from toyflow.search.method import (
    METHODS,
    OPTIONS,
    SAMPLER_KEYS,
    Method,
    NoOptions,
    build_options,
    check_output,
    get_method,
    register,
    resolve_method,
    valid_keys,
)
from toyflow.search.options import (
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
)
from toyflow.search.result import Recorder, SearchHistory, SearchResult
from toyflow.search.sampler import MODES, PRESETS, Sampler, resolve_sampler

__all__ = [
    "run",
    "minimum_budget",
    "METHODS",
    "MODES",
    "PRESETS",
    "Method",
    "NoOptions",
    "register",
    "get_method",
    "resolve_method",
    "SearchContext",
    "Sampler",
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
    "AllocationState",
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

def minimum_budget(method: Union[str, Method], steps: int = 10, **options) -> int:
    """The smallest budget ``run(method, ..., steps=steps, **options)`` accepts (a name or a Method)."""
    method = get_method(method)
    steps = _check_int("steps", steps)
    _, opts = build_options(method, options)
    return method.minimum_budget(steps, opts)


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
    method: Union[str, Method],
    model: Callable,
    reward: Callable,
    *,
    mode: Union[str, Sampler] = "vp-sde",
    budget: int,
    steps: int = 10,
    runs: int = 1,
    shape: Union[int, Sequence[int]],
    generator: Optional[torch.Generator] = None,
    record: bool = False,
    device=None,
    dtype: torch.dtype = torch.float32,
    engine: str = "fast",
    **options,
) -> SearchResult:
    """Run ``runs`` independent searches of ``method`` with ``budget`` NFE each.

    Args:
        method: a registered name (:data:`METHODS`): "bon", "sop", "smc", "svdd", "code", "rbf" (as
            the official code runs it: initial batch, whole budget spent), "rbf-strict" (the paper's
            text: one initial draw, first improvement accepted at every step), "dps", "rbf+dps", or
            your own :func:`register`-ed name; or a :class:`Method` subclass or instance.
        model: velocity model ``model(x, t) -> u`` trained on the Linear interpolant (t = 0 data).
        reward: ``reward(x0) -> (B,)``, higher is better, evaluated on x0_hat. "dps" and "rbf+dps"
            need a differentiable reward (``reward.differentiable`` True, see toyflow.rewards).
        mode: a preset name, "linear-ode", "linear-sde" or "vp-sde" (default, the paper's best), or a
            :class:`Sampler` (path, model conversion, diffusion and its time, eta, time grid); sampler
            keys given in ``options`` replace the Sampler's fields.
        budget: NFE per run. steps: grid steps K. runs: independent runs R, vectorized.
        shape: shape of one sample, e.g. (2,) or (1, 28, 28).
        generator: every random number is drawn from it (same seed -> same result); None uses
            torch's global generator. It must live on ``device``.
        record: also return a :class:`SearchHistory` (memory grows with the candidates drawn).
        device: default: the model's device (or the generator's, or CPU). dtype: working dtype.
        engine: "fast" (default: the vectorized engine) or "textbook" (the paper's pseudo-code, one run
            at a time, :mod:`toyflow.search.textbook`: every built-in method; slow, for reading and
            for the equality tests). A method without a textbook version is a ValueError (never the
            fast engine in its place); so is ``record=True``.
        **options: :class:`SamplerOptions` fields (diffusion, eta, time_grid, diffusion_path) and the method's
            options (see ``OPTIONS[method]``); unknown keys raise a TypeError.
    """
    t_start = time.perf_counter()
    method = get_method(method)
    if engine not in ("fast", "textbook"):
        raise ValueError(f"unknown engine {engine!r}; use 'fast' (default) or 'textbook'")
    if engine == "textbook":
        from toyflow.search.textbook import textbook_runner

        run_method = textbook_runner(method, record)
    else:
        run_method = method.run
    if not (isinstance(mode, Sampler) or (isinstance(mode, str) and mode in MODES)):
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(map(repr, MODES))} or a search.Sampler")
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
    sampler_options, opts = build_options(method, options)
    sampler = resolve_sampler(mode, sampler_options, given=[k for k in options if k in SAMPLER_KEYS])
    method.check_budget(budget, steps, opts)
    if method.needs_gradients:
        from toyflow.rewards import check_differentiable

        check_differentiable(reward, method.name)
    device = _infer_device(model, generator, device)

    ctx = SearchContext(
        model, reward, sampler=sampler, budget=budget, steps=steps, runs=runs, shape=shape,
        generator=generator, device=device, dtype=dtype,
    )
    if record:
        ctx.recorder = Recorder(runs, steps, method.particles(budget, steps, opts), shape, ctx.times, dtype, device)

    with torch.no_grad():
        samples, rewards, selected = check_output(run_method(ctx, opts), method, runs, shape)

    ctx.ledger.check()
    nfe_per_step = ctx.ledger.per_step.clone()
    history = ctx.recorder.finish(nfe_per_step, selected)  # None when not recording
    return SearchResult(
        samples=samples.detach(),
        rewards=rewards.detach(),
        nfe=ctx.ledger.spent.clone(),
        nfe_per_step=nfe_per_step,
        method=method.name,
        mode=sampler.name,
        budget=budget,
        steps=steps,
        wall_time=time.perf_counter() - t_start,
        history=history,
        options=opts,
        sampler=sampler_options if isinstance(mode, str) else sampler,
        discarded=ctx.ledger.discarded.clone(),
        sampling=sampler,
    )
