"""Sequential Monte Carlo with x0_hat-reward potentials, one run.

    N <- budget // K;  draw x_1 .. x_N ~ N(0, I);  log w_n <- 0;  r_prev_n <- 0
    for k = 0 .. K-1:                                            # N NFE per grid time
        u_n <- v(x_n, t_k);  r_n <- r(x0_hat(x_n, u_n))
        log w_n <- log w_n + (r_n - r_prev_n) / lam               # weights telescope to exp(r / lam)
        w <- softmax(log w);  ESS <- 1 / sum_n w_n^2
        if ESS < threshold N: resample ancestors a_n ~ w (systematic or multinomial); log w <- 0
        (x_n, u_n, r_prev_n) <- (x_{a_n}, u_{a_n}, r_{a_n})
        x_n <- step(x_n, u_n, t_k -> t_{k+1}, z_n)
    return the best x_n by r(x_n) (output="best") or one drawn by w (output="sample")
"""

from __future__ import annotations

import torch

from toyflow.search.textbook._run import each_run, stack


def resample(run, w, how: str):
    """N ancestor indices drawn by the weights w (N,)."""
    N = w.shape[0]
    if how == "multinomial":
        return torch.multinomial(w[None], N, replacement=True, generator=run.ctx.generator)[0]
    u0 = run.uniform(1)                                         # systematic: one uniform, N even positions
    positions = (torch.arange(N, dtype=w.dtype, device=w.device) + u0) / N
    return torch.searchsorted(torch.cumsum(w, 0), positions).clamp_max(N - 1)


def smc(run, N: int, opts):
    x = run.noise(N)
    logw = torch.zeros(N, dtype=x.dtype, device=x.device)
    r_prev = torch.zeros_like(logw)
    for k in range(run.K):
        u = run.velocity(x, k)
        r = run.reward(run.x0(x, u, k))
        logw = logw + (r - r_prev) / opts.lam                   # incremental weight exp((r_k - r_{k-1}) / lam)
        w = torch.softmax(logw, 0)
        ess = 1.0 / (w ** 2).sum()
        if ess < opts.ess_threshold * N:
            a = resample(run, w, opts.resample)
            logw = torch.zeros_like(logw)
            x, u, r = x[a], u[a], r[a]
        r_prev = r
        z = run.noise(N) if run.needs_noise(k) else None
        x = run.step(x, u, k, z)
    r = run.reward(x)
    if opts.output == "best":
        i = int(r.argmax())
    else:
        i = int(torch.multinomial(torch.softmax(logw, 0)[None], 1, generator=run.ctx.generator)[0, 0])
    return x[i], r[i]


def run_smc(ctx, opts):
    N = ctx.budget // ctx.steps
    return stack([smc(run, N, opts) for run in each_run(ctx)])
