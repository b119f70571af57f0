"""bench/_common.ReplayModel: a search through the replayed outputs takes exactly the recorded path
(the "engine alone" column of bench/bench_search_overhead.py times the engine without the model)."""

from __future__ import annotations

import pytest
import torch

from toyflow import search
from toyflow.models import VelocityMLP


@pytest.fixture
def common(bench_on_path):
    import _common

    return _common


def _quadratic(x0):
    return -((x0 - 1.0) ** 2).sum(-1)


@pytest.mark.parametrize("method", ["rbf", "svdd", "smc"])
def test_replayed_search_is_the_recorded_one(common, method):
    torch.manual_seed(0)
    mlp = VelocityMLP(hidden=16, depth=2).eval()
    replay = common.ReplayModel(mlp)
    kw = dict(mode="vp-sde", budget=60, steps=5, runs=8, shape=(2,))
    first = search.run(method, replay, _quadratic, generator=torch.Generator().manual_seed(3), **kw)
    calls = len(replay.outputs)
    replay.rewind()
    again = search.run(method, replay, _quadratic, generator=torch.Generator().manual_seed(3), **kw)
    assert replay.next == calls  # every recorded output used, no model call made
    assert torch.equal(first.samples, again.samples) and torch.equal(first.rewards, again.rewards)
    assert torch.equal(first.nfe_per_step, again.nfe_per_step)


def test_replay_on_another_path_is_an_error(common):
    mlp = VelocityMLP(hidden=16, depth=2).eval()
    replay = common.ReplayModel(mlp)
    search.run("bon", replay, _quadratic, mode="linear-ode", budget=4, steps=3, runs=2, shape=(2,),
               generator=torch.Generator().manual_seed(0))
    replay.rewind()
    with pytest.raises(RuntimeError, match="another path"):
        search.run("bon", replay, _quadratic, mode="linear-ode", budget=8, steps=3, runs=2, shape=(2,),
                   generator=torch.Generator().manual_seed(0))
