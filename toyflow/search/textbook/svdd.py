"""SVDD (soft value-based decoding), as in the paper's pseudo-code (one run).

    x <- N(0, I) at t_0;  u <- v(x, t_0)                              # 1 NFE
    for j = 0 .. K-2:                                                  # search steps
        M_j <- clamp(allocation quota, 1, budget left - (K - 2 - j))  # one NFE kept per later step
        y_m <- step(x, u, t_j -> t_{j+1}, z_m),  m = 1 .. M_j          # M_j candidates
        u_m <- v(y_m, t_{j+1});  r_m <- r(x0_hat(y_m, u_m))            # M_j NFE
        (x, u) <- (y_m, u_m) with m = argmax r_m
    x_K <- step(x, u, t_{K-1} -> 0)                                    # the x0_hat step, free
"""

from __future__ import annotations

from toyflow.search.textbook._run import each_run, stack


def svdd(run, allocation):
    K, S = run.K, run.K - 1
    x = run.noise(1)
    u = run.velocity(x, 0)
    best = float(run.reward(run.x0(x, u, 0))[0])
    total, spent, drawn, improved = run.budget - 1, 0, 1, False  # search budget: after the initial draw
    for j in range(S):
        q = run.quota(allocation, j, S, total, spent, best, drawn, improved, drawn)
        M = max(1, min(q, total - spent - (S - 1 - j)))
        z = run.noise(M) if run.needs_noise(j) else None
        y = run.step(x.expand(M, *x.shape[1:]), u.expand(M, *u.shape[1:]), j, z)
        uy = run.velocity(y, j + 1)
        ry = run.reward(run.x0(y, uy, j + 1))
        m = int(ry.argmax())
        x, u = y[m:m + 1], uy[m:m + 1]
        improved = float(ry[m]) > best
        best, spent, drawn = max(best, float(ry[m])), spent + M, M
    xK = run.step(x, u, K - 1)
    return xK[0], run.reward(xK)[0]


def run_svdd(ctx, opts):
    return stack([svdd(run, opts.allocation) for run in each_run(ctx)])
