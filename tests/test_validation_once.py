"""Validation once at the public entry, private kernels after it: dynamics.sample reads one value per
step (the model's finiteness), whatever the sampler, and still refuses bad input clearly."""

from __future__ import annotations


import pytest
import torch

from toyflow import dynamics

def count_reads(fn) -> int:
    """Host reads (tensor -> Python value) while fn() runs: bench/_common.count_host_reads."""
    from _common import count_host_reads

    with count_host_reads() as counter:
        fn()
    return sum(counter.values())


def model(x, t):  # reads nothing itself
    return -0.5 * x + t[:, None]


@pytest.mark.parametrize("schedule", ["linear", "vp"])
@pytest.mark.parametrize("sde", [False, True])
@pytest.mark.parametrize("time_grid", ["uniform", "exp"])
def test_sample_reads_one_value_per_step(schedule, sde, time_grid, bench_on_path):
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))

    def reads(steps):
        return count_reads(lambda: dynamics.sample(model, x, schedule, steps=steps, sde=sde, time_grid=time_grid,
                                                   generator=torch.Generator().manual_seed(1)))

    assert reads(40) - reads(20) == 20  # the velocity's finiteness, one reduction per step


def test_bad_input_is_still_refused_at_the_entry():
    x = torch.randn(8, 2)
    with pytest.raises(ValueError, match="strictly decreasing"):
        dynamics.sample(model, x, time_grid=torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dynamics.sample(model, x, time_grid=torch.tensor([1.5, 0.5, 0.0]))
    with pytest.raises(ValueError, match="finite and >= 0"):
        dynamics.sample(model, x, sde=True, diffusion=lambda t: -torch.ones_like(t))
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        dynamics.sample(lambda x, t: x * float("nan"), x)
    with pytest.raises(ValueError, match="t_next <= t"):
        dynamics.step(x, x, torch.full((8,), 0.2), torch.full((8,), 0.5), "linear")
    with pytest.raises(ValueError, match="sigma_t = 0"):
        dynamics.sde_step(x, x, torch.zeros(8), torch.zeros(8), "linear", torch.ones(8), x)


def test_a_constant_diffusion_callable_gives_the_same_path_as_its_tensor_form():
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    a = dynamics.sample(model, x, "linear", steps=8, sde=True, diffusion=lambda t: torch.tensor(0.7, dtype=t.dtype),
                        generator=torch.Generator().manual_seed(2)).x
    b = dynamics.sample(model, x, "linear", steps=8, sde=True, diffusion=lambda t: torch.full_like(t, 0.7),
                        generator=torch.Generator().manual_seed(2)).x
    assert torch.equal(a, b)
