"""Rollover Budget Forcing (Kim et al. 2025, Algorithm 1), one run, one candidate at a time.

    draw n0 noises x_1 .. x_n0 at t_0; u_i <- v(x_i, t_0)               # n0 NFE
    (x, u) <- the x_i with the best r(x0_hat);  best <- its reward
    for j = 0 .. K-2:                                                   # search steps
        Q_j <- allocation quota (Rollover: base share + what earlier steps left)
        if j = K-2 and spend_rest: Q_j <- budget left                  # official code: spend it all
        Q_j <- clamp(Q_j, 1, budget left - (K - 2 - j))                # one NFE kept per later step
        repeat Q_j times:
            y <- step(x, u, t_j -> t_{j+1}, z), z ~ N(0, I)
            u_y <- v(y, t_{j+1});  r_y <- r(x0_hat(y, u_y))              # 1 NFE
            if r_y > best (and early stop allowed): accept y, stop drawing
        else: keep the step's best candidate                            # best unchanged
        best <- max(best, r(kept))
    x_K <- step(x, u, t_{K-1} -> 0)                                     # the x0_hat step, free

"rbf" (official code): n0 = max(1, budget // 20), spend_rest = True.
"rbf-strict" (the paper's text): n0 = 1, spend_rest = False (a run may leave budget unused).
"rbf+dps": every step (candidates, and the last) adds the DPS term (h_j / lam) grad_x r(x0_hat(x)).
"""

from __future__ import annotations

from toyflow.search.textbook._run import each_run, stack


def evaluate(run, x, k, lam):
    """(u, reward of x0_hat, grad_x reward or None) at t_k; len(x) NFE."""
    if lam is None:
        u = run.velocity(x, k)
        return u, run.reward(run.x0(x, u, k)), None
    u, _, r, grad = run.guided(x, k)
    return u, r, grad


def rbf(run, opts, lam=None):
    K, S = run.K, run.K - 1
    n0 = opts.initial_draws(run.budget, K)
    xs = run.noise(n0)                                           # initial draws
    us, rs, gs = evaluate(run, xs, 0, lam)
    i = int(rs.argmax())
    x, u, g, best = xs[i:i + 1], us[i:i + 1], None if lam is None else gs[i:i + 1], float(rs[i])
    total, spent = run.budget - n0, 0                            # the search budget after the initial draws
    drawn, granted, accepted = n0, n0, False                     # what the previous step did (for the scheme)
    for j in range(S):
        left = total - spent
        Q = run.quota(opts.allocation, j, S, total, spent, best, drawn, accepted, granted)
        last = j == S - 1
        if last and opts.spend_rest_at_last_step:
            Q = left
        Q = max(1, min(Q, left - (S - 1 - j)))
        may_stop = not (last and opts.spend_rest_at_last_step)
        step_best, drawn, accepted = None, 0, False
        while drawn < Q:
            z = run.noise(1) if run.needs_noise(j) else None
            y = run.step(x, u, j, z)                             # one candidate from the held particle
            if lam is not None:
                y = y + (run.h(j, x) / lam) * g                  # rbf+dps: the guidance term
            uy, ry, gy = evaluate(run, y, j + 1, lam)            # 1 NFE
            ry = float(ry[0])
            drawn += 1
            if step_best is None or ry > step_best[3]:
                step_best = (y, uy, gy, ry)
            if may_stop and ry > best:                           # the first improvement is accepted
                accepted = True
                break
        x, u, g, r = step_best                                   # accepted, or the step's best
        best, spent, granted = max(best, r), spent + drawn, Q
    xK = run.step(x, u, K - 1) + (0 if lam is None else (run.h(K - 1, x) / lam) * g)
    return xK[0], run.reward(xK)[0]


def run_rbf(ctx, opts):
    return stack([rbf(run, opts) for run in each_run(ctx)])


def run_rbf_dps(ctx, opts):
    return stack([rbf(run, opts, opts.lam) for run in each_run(ctx)])
