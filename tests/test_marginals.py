"""Marginals: ODE and SDE sampling of the exact 8-Gaussian oracle land on the data distribution.

Energy distance of samples to fresh data must be <= 3x the data-vs-data floor at the same sample
size, at t = 0 and at the intermediate time t = 0.5 (against exact samples of p_0.5).
"""

import pytest
import torch

from toyflow import dynamics as dyn
from toyflow import interpolants as I
from toyflow.metrics import energy_distance
from conftest import eight_gaussians

N = 2000
pytestmark = pytest.mark.slow


def _floor(sampler, repeats=4):
    vals = [float(energy_distance(sampler(N, 100 + i), sampler(N, 200 + i))) for i in range(repeats)]
    return sum(vals) / repeats


CASES = [("linear", False, 0.0), ("linear", True, 1.0), ("linear", True, 3.0),
         ("vp", False, 0.0), ("vp", True, 1.0), ("vp", True, 3.0)]


@pytest.mark.parametrize("path,sde,eta", CASES)
@pytest.mark.parametrize("t_end", [0.0, 0.5])
def test_marginals_match_oracle(path, sde, eta, t_end):
    lin = I.Linear()
    g_lin = eight_gaussians(lin)
    model, sched = (g_lin, lin) if path == "linear" else (I.convert(g_lin, lin, I.VP()), I.VP())
    target = g_lin.with_schedule(sched)
    gen = torch.Generator().manual_seed(0)
    x1 = torch.randn(N, 2, generator=gen, dtype=torch.float64)
    grid = torch.linspace(1.0, t_end, 201, dtype=torch.float64)
    x = dyn.sample(model, x1, sched, sde=sde, diffusion="square", eta=eta, time_grid=grid, generator=gen).x

    def exact(n, seed):
        return target.sample_marginal(n, t_end, torch.Generator().manual_seed(seed), dtype=torch.float64)

    floor = _floor(exact)
    ed = float(energy_distance(x, exact(N, 999)))
    assert ed <= 3 * floor, f"energy distance {ed:.5f} > 3 x floor {floor:.5f}"
