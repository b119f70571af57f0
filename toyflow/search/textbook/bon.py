"""Best-of-N, as in the paper's pseudo-code (one run).

    N <- budget // K
    draw x_1 .. x_N ~ N(0, I) at t_0 = 1
    for k = 0 .. K-1:                        # every grid time, N NFE
        u_n <- v(x_n, t_k)
        x_n <- step(x_n, u_n, t_k -> t_{k+1}, z_n)     (z_n ~ N(0, I) on SDE steps)
    return the x_n with the highest r(x_n)
"""

from __future__ import annotations

from toyflow.search.textbook._run import each_run, stack


def best_of_n(run, N: int):
    x = run.noise(N)                                   # N independent trajectories
    for k in range(run.K):
        u = run.velocity(x, k)                         # N NFE at t_k
        z = run.noise(N) if run.needs_noise(k) else None
        x = run.step(x, u, k, z)                       # t_k -> t_{k+1}
    r = run.reward(x)
    best = int(r.argmax())
    return x[best], r[best]


def run_bon(ctx, opts):
    N = ctx.budget // ctx.steps
    return stack([best_of_n(run, N) for run in each_run(ctx)])
