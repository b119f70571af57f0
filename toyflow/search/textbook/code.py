"""CoDe: SVDD over blocks of L search steps (each candidate is a path through the block), one run.

    x <- N(0, I) at t_0;  u <- v(x, t_0)                                   # 1 NFE
    for each block of search steps j0 .. j1 - 1 (L = j1 - j0 <= block):
        Q <- sum of the allocation's quotas for steps j0 .. j1 - 1
        M <- clamp(Q // L, 1, (budget left - (K - 1 - j1)) // L)          # one NFE kept per later step
        for m = 1 .. M: y_m <- x; for k = j0 .. j1 - 1:                    # M L NFE
            y_m <- step(y_m, u_m, t_k -> t_{k+1}, z);  u_m <- v(y_m, t_{k+1})
        (x, u) <- the y_m with the best r(x0_hat(y_m, u_m)) at t_{j1}
    x_K <- step(x, u, t_{K-1} -> 0)                                         # free
block = 1 is SVDD.
"""

from __future__ import annotations

from toyflow.search.textbook._run import each_run, stack


def code(run, allocation, block: int):
    K, S = run.K, run.K - 1
    x = run.noise(1)
    u = run.velocity(x, 0)
    best = float(run.reward(run.x0(x, u, 0))[0])
    total, spent, drawn, improved = run.budget - 1, 0, 1, False  # search budget: after the initial draw
    for j0 in range(0, S, block):
        j1 = min(j0 + block, S)
        L, Q, sp = j1 - j0, 0, spent
        for j in range(j0, j1):                                 # each step asked as if the ones before spent theirs
            q = max(0, run.quota(allocation, j, S, total, sp, best, drawn, improved, drawn))
            Q, sp, drawn = Q + q, sp + q, q
        M = max(1, min(Q // L, (total - spent - (S - j1)) // L))
        y, uy = x.expand(M, *x.shape[1:]), u.expand(M, *u.shape[1:])
        for k in range(j0, j1):                                 # M candidate paths through the block
            z = run.noise(M) if run.needs_noise(k) else None
            y = run.step(y, uy, k, z)
            uy = run.velocity(y, k + 1)
        ry = run.reward(run.x0(y, uy, j1))
        m = int(ry.argmax())
        x, u = y[m:m + 1], uy[m:m + 1]
        improved = float(ry[m]) > best
        best, spent, drawn = max(best, float(ry[m])), spent + M * L, M
    xK = run.step(x, u, K - 1)
    return xK[0], run.reward(xK)[0]


def run_code(ctx, opts):
    return stack([code(run, opts.allocation, opts.block) for run in each_run(ctx)])
