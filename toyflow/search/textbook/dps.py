"""DPS: Best-of-N with gradient-guided trajectories (Chung et al.), one run.

    N <- budget // K;  draw x_1 .. x_N ~ N(0, I) at t_0 = 1
    for k = 0 .. K-1:                                   # N NFE per grid time
        u_n <- v(x_n, t_k);  g_n <- grad_x r(x0_hat(x_n, u_n))   (backward pass: not an NFE)
        x_n <- step(x_n, u_n, t_k -> t_{k+1}, z_n) + (h_k / lam) g_n,   h_k = t_k - t_{k+1}
    return the x_n with the highest r(x_n)
"""

from __future__ import annotations

from toyflow.search.textbook._run import each_run, stack


def dps(run, N: int, lam: float):
    x = run.noise(N)
    for k in range(run.K):
        u, _, _, grad = run.guided(x, k)               # N NFE at t_k, and grad_x r(x0_hat)
        z = run.noise(N) if run.needs_noise(k) else None
        x = run.step(x, u, k, z) + (run.h(k, x) / lam) * grad
    r = run.reward(x)
    best = int(r.argmax())
    return x[best], r[best]


def run_dps(ctx, opts):
    N = ctx.budget // ctx.steps
    return stack([dps(run, N, opts.lam) for run in each_run(ctx)])
