"""Sequential Monte Carlo with x0_hat-reward potentials (a baseline of the paper).

N = budget // steps particles per run. At every grid time t_k (k = 0 .. K-1): evaluate the
particles (one batched model call), r_k = r(x0_hat), log-weights += (r_k - r_{k-1}) / lam
(r_{-1} = 0, so the weights telescope to exp(r / lam)), ESS = 1 / sum w^2; if ESS < threshold * N
resample (systematic or multinomial) and reset the weights; then step every particle to t_{k+1}
with its cached velocity. The output is the best final particle (``output="best"``) or one drawn
by weight (``output="sample"``).

NFE: N at every grid time t_0 .. t_{K-1}: N * K <= budget. Minimum budget: ``steps``.
In "linear-ode" mode resampled copies stay identical (no noise after t = 1): the paper's point.
"""

from __future__ import annotations

import torch
from torch import Tensor

from toyflow.search._core import Context
from toyflow.search.method import Method, register
from toyflow.search.options import SMCOptions

__all__ = ["minimum_budget", "run_smc", "resample_indices", "SMC"]


def minimum_budget(steps: int) -> int:
    return steps


def resample_indices(w: Tensor, method: str, generator) -> Tensor:
    """Ancestor indices (R, N) from normalised weights w (R, N)."""
    R, N = w.shape
    if method == "multinomial":
        return torch.multinomial(w, N, replacement=True, generator=generator)
    u0 = torch.rand(R, 1, generator=generator, dtype=w.dtype, device=w.device)
    positions = (torch.arange(N, dtype=w.dtype, device=w.device)[None] + u0) / N
    cdf = torch.cumsum(w, 1)
    return torch.searchsorted(cdf, positions).clamp_max(N - 1)


def _update_log_weights(logw: Tensor, r: Tensor, r_prev: Tensor, lam: float) -> Tensor:
    """logw + (r - r_prev) / lam, per run (row); only the differences within a row matter (softmax).

    Computed as written while it stays finite (the usual case: bit for bit what it always gave).
    Where it overflows (rewards near the float range, a tiny lam) it is recomputed in float64 with
    each row shifted by its maximum, then cast back: the leader keeps log-weight 0 and particles
    more than the dtype's range behind get weight 0. Differences that overflow even float64 raise.
    """
    new = logw + (r - r_prev) / lam
    if bool(torch.isfinite(new).all()):
        return new
    inc = (r.double() - r_prev.double()) / lam
    if not bool(torch.isfinite(inc).all()):
        raise FloatingPointError(
            f"SMC log-weights overflow: reward increments (r_k - r_k-1) / lam exceed float64 with lam={lam:g} (reward "
            f"differences up to {float((r.double() - r_prev.double()).abs().max()):.3g}); use a larger lam or rescale the reward"
        )
    wide = logw.double() + inc  # -inf entries (weight 0 already) stay -inf
    wide = wide - wide.max(1, keepdim=True).values
    return wide.to(logw.dtype)


def _take_rows(a: Tensor, rows: Tensor) -> Tensor:
    """Entries ``rows`` of the flat (R * N) batch of a (R, N, ...) tensor, shaped like it."""
    return a.reshape((a.shape[0] * a.shape[1],) + a.shape[2:]).index_select(0, rows).view_as(a)


def run_smc(ctx: Context, opts: SMCOptions):
    R, K, shape = ctx.R, ctx.K, ctx.shape
    N = ctx.budget // K
    rec = ctx.recorder
    ar = torch.arange(R, device=ctx.device)[:, None]
    ident = torch.arange(N, device=ctx.device).expand(R, N)
    x = ctx.noise(R * N).view((R, N) + shape)
    logw = torch.zeros(R, N, dtype=ctx.dtype, device=ctx.device)
    r_prev = torch.zeros(R, N, dtype=ctx.dtype, device=ctx.device)
    for k in range(K):
        flat = x.reshape((R * N,) + shape)
        u = ctx.velocity(flat, k)
        x0 = ctx.x0(flat, u, k)
        r = ctx.reward(x0).view(R, N)
        u, x0 = u.view_as(x), x0.view_as(x)
        logw = _update_log_weights(logw, r, r_prev, opts.lam)
        w = torch.softmax(logw, 1)
        ess = 1.0 / (w**2).sum(1)
        low = ess < opts.ess_threshold * N
        r_all = r  # the candidates' rewards (r itself becomes the resampled particles')
        rows = None  # the ancestors' rows in the flat (R * N) batch, where any run resamples
        if bool(low.any()):
            anc = torch.where(low[:, None], resample_indices(w, opts.resample, ctx.generator), ident)
            logw = torch.where(low[:, None], torch.zeros_like(logw), logw.gather(1, anc))
            rows = (ar * N + anc).reshape(R * N)
            x, u, r = _take_rows(x, rows), _take_rows(u, rows), _take_rows(r, rows)
        else:
            anc = ident  # no run resamples: every particle is its own ancestor
        rec.step(k, ess=ess, candidates=(x0, r_all),
                 accepted=lambda anc=anc: torch.zeros(R, N, dtype=torch.bool, device=ctx.device).scatter_(1, anc, True),
                 parents=(k - 1, anc) if k > 0 else None,
                 # x0_hat of the resampled particles: only the history reads it, so it is gathered there
                 held=lambda x=x, x0=x0, r=r, rows=rows: (x, x0 if rows is None else _take_rows(x0, rows), r))
        r_prev = r
        flat = x.reshape((R * N,) + shape)
        z = ctx.noise(R * N) if ctx.needs_noise(k) else None
        x = ctx.step(flat, u.reshape(flat.shape), k, z).view((R, N) + shape)
    r = ctx.reward(x.reshape((R * N,) + shape)).view(R, N)
    if opts.output == "best":
        sel = r.argmax(1)
    else:
        sel = torch.multinomial(torch.softmax(logw, 1), 1, generator=ctx.generator)[:, 0]
    rec.step(K, held=(x, x, r), candidates=(x, r), accepted=lambda: torch.nn.functional.one_hot(sel, N).bool())
    return x[ar[:, 0], sel], r[ar[:, 0], sel], sel


@register
class SMC(Method):
    """Sequential Monte Carlo: N = budget // steps weighted particles, resampled when the ESS is low."""

    name = "smc"
    options = SMCOptions

    def particles(self, budget: int, steps: int, opts: SMCOptions) -> int:
        return budget // steps

    def run(self, ctx: Context, opts: SMCOptions):
        return run_smc(ctx, opts)
