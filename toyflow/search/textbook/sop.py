"""Search over Paths (Ma et al. 2025), one run. N paths, M copies each, f re-noising steps, start s.

    draw x_1 .. x_N ~ N(0, I); denoise them t_0 -> t_s (evaluated at t_0 .. t_s)   # N (s + 1) NFE
    r_n <- r(x0_hat(x_n)) at t_s
    for i = s .. K-1:                                         # each iteration advances one grid step
        y_{n,m} <- renoise(x_n, t_i -> t_{i-f}, z),  m = 1 .. M    # forward kernel, no NFE
        denoise every y_{n,m} from t_{i-f} to t_{i+1}               # (f + 1) N M NFE
        r_{n,m} <- r(x0_hat(y_{n,m})) at t_{i+1}                     # N M NFE (none at t_K = 0: exact)
        keep the N best y_{n,m} as x_1 .. x_N
    return the best x_n
"""

from __future__ import annotations

from toyflow.search.sop import branch_for, start_index
from toyflow.search.textbook._run import each_run, stack


def sop(run, opts):
    K, N, f = run.K, opts.paths, opts.renoise_steps
    M, s = branch_for(run.budget, K, opts), start_index(K, opts)
    x = run.noise(N)
    for k in range(s + 1):                                    # phase 0: t_0 -> t_s
        u = run.velocity(x, k)
        if k < s:
            x = run.step(x, u, k, run.noise(N) if run.needs_noise(k) else None)
    r = run.reward(run.x0(x, u, s))
    for i in range(s, K):
        y = x.repeat_interleave(M, 0)                         # M copies of every kept path
        y = run.renoise(y, i, i - f, run.noise(N * M))        # up to the noisier t_{i-f}
        for k in range(i - f, i + 1):                         # denoise down to t_{i+1}
            uy = run.velocity(y, k)
            y = run.step(y, uy, k, run.noise(N * M) if run.needs_noise(k) else None)
        y0 = run.x0(y, run.velocity(y, i + 1), i + 1) if i + 1 < K else y
        ry = run.reward(y0)
        top = ry.topk(N).indices                              # the N best of the N M candidates
        x, r = y[top], ry[top]
    best = int(r.argmax())
    return x[best], r[best]


def run_sop(ctx, opts):
    return stack([sop(run, opts) for run in each_run(ctx)])
