"""The search method protocol (search.Method, search.register, search.SearchContext), the
out-of-tree beam search of examples/ through search.run, the benchmark and the CLI, and the
sampler value (search.Sampler) behind the mode names."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from toyflow import benchmark, cli, dynamics, interpolants, rewards, search, viz
from toyflow.search import method as registry

BEAM_FILE = Path(__file__).resolve().parents[1] / "examples" / "beam_search.py"
BEAM_SPEC = f"{BEAM_FILE}:BeamSearch"
BUILTIN = ("bon", "sop", "smc", "svdd", "code", "rbf", "rbf-strict", "dps", "rbf+dps")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def task():
    return rewards.task("rare-mode")


@pytest.fixture(scope="module")
def beam_module():
    spec = importlib.util.spec_from_file_location("beam_search_under_test", BEAM_FILE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the file runs
    spec.loader.exec_module(mod)
    yield mod
    del sys.modules[spec.name]


@pytest.fixture
def clean_registry():
    """Whatever a test registers is gone afterwards (the built-ins stay)."""
    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- the registry -------------------------------------------------------------------------------
def test_builtins_are_registered_one_file_each():
    assert tuple(search.METHODS) == BUILTIN and list(search.OPTIONS) == list(BUILTIN)
    modules = {type(search.get_method(m)).__module__ for m in BUILTIN}
    assert len(modules) == len(BUILTIN)  # one file per method, each registering itself
    assert search.get_method("RBF") is search.get_method("rbf")
    assert [m for m in BUILTIN if search.get_method(m).needs_gradients] == ["dps", "rbf+dps"]
    assert search.OPTIONS["smc"] is search.SMCOptions and search.SearchContext is search.Context


def test_unknown_name_is_an_error_never_a_fallback(task):
    gmm, reward = task
    for call in (lambda: search.run("beem", gmm, reward, budget=20, steps=4, shape=(2,)),
                 lambda: search.minimum_budget("beem"),
                 lambda: benchmark.run_grid(["rare-mode"], ["beem"], ["vp-sde"], [20], runs=2, steps=4, progress=False)):
        with pytest.raises(ValueError, match="unknown method 'beem'.*'rbf'.*search.register"):
            call()
    with pytest.raises(ValueError, match="unknown method"):
        search.run(None, gmm, reward, budget=20, steps=4, shape=(2,))


def test_register_checks_the_class(clean_registry):
    class NoRun(search.Method):
        name = "norun"

    class BadName(search.Method):
        name = "Has Space"

        def run(self, ctx, opts):
            return ctx.noise(ctx.runs), torch.zeros(ctx.runs)

    @dataclasses.dataclass(frozen=True)
    class Clash:
        eta: float = 1.0

    class ClashingOptions(BadName):
        name = "clash"
        options = Clash

    with pytest.raises(TypeError, match="must implement run"):
        search.register(NoRun)
    with pytest.raises(ValueError, match="lower-case name"):
        search.register(BadName)
    with pytest.raises(ValueError, match="eta.*sampler options"):
        search.register(ClashingOptions)
    with pytest.raises(TypeError, match="search.Method subclass"):
        search.register(object)

    class Other(BadName):
        name = "svdd"

    with pytest.raises(ValueError, match="already registered by toyflow.search.svdd.SVDD"):
        search.register(Other)
    assert search.register(type(search.get_method("bon"))) is type(search.get_method("bon"))  # same class: no-op
    search.register(Other, replace=True)
    assert type(search.get_method("svdd")) is Other


# -- the beam search of examples/ -----------------------------------------------------------------
def test_beam_search_runs_unregistered_through_search_run(task, beam_module):
    gmm, reward = task
    Beam = beam_module.BeamSearch
    assert "beam" not in search.METHODS
    res = search.run(Beam, gmm, reward, mode="vp-sde", budget=100, steps=5, runs=6, shape=(2,), generator=gen(),
                     beams=3, record=True)
    W = (100 - 3) // (3 * 4)
    assert res.method == "beam" and bool((res.nfe == 3 + 3 * W * 4).all())
    assert res.nfe_per_step[0].tolist() == [3] + [3 * W] * 4
    assert res.history.states.shape[2] == 3  # particles(): B held per grid time
    torch.testing.assert_close(reward(res.samples), res.rewards)
    # B = 1 at the minimum budget is plain sampling, with BoN's random numbers
    one = search.run(Beam(), gmm, reward, budget=5, steps=5, runs=6, shape=(2,), generator=gen(3), beams=1)
    bon = search.run("bon", gmm, reward, budget=5, steps=5, runs=6, shape=(2,), generator=gen(3))
    assert torch.equal(one.samples, bon.samples)
    assert search.minimum_budget(Beam, 5, beams=3) == 15
    with pytest.raises(ValueError, match="budget 14 is too small for method 'beam'"):
        search.run(Beam, gmm, reward, budget=14, steps=5, shape=(2,), beams=3)
    with pytest.raises(TypeError, match="unknown option 'beamz'.*beams, width"):
        search.run(Beam, gmm, reward, budget=20, steps=5, shape=(2,), beamz=3)


def test_beam_search_beats_best_of_n(task, beam_module):
    gmm, reward = task
    kw = dict(mode="vp-sde", budget=100, steps=10, runs=128, shape=(2,))
    beam = search.run(beam_module.BeamSearch, gmm, reward, generator=gen(1), **kw)
    bon = search.run("bon", gmm, reward, generator=gen(1), **kw)
    assert float(beam.rewards.mean()) > float(bon.rewards.mean()) + 0.2


def test_beam_search_through_the_benchmark_and_the_cli(task, tmp_path, clean_registry):
    rows = benchmark.run_grid(["rare-mode"], ["svdd", BEAM_SPEC], ["vp-sde"], [40], runs=4, steps=4, progress=False,
                              method_options={"beam": {"beams": 2}})
    assert [(r["method"], r["status"]) for r in rows] == [("svdd", "ok"), ("beam", "ok")]
    assert rows[1]["nfe_max"] == 2 + 2 * ((40 - 2) // 6) * 3 and "beams=2" in rows[1]["options"]
    assert search.get_method("beam").name == "beam"  # registered on load: runs by name now
    assert viz.method_label("beam") == "Beam" and viz.method_color("beam") not in viz.METHOD_COLORS.values()
    out = tmp_path / "grid.csv"
    rc = cli.main(["bench", "search", "--task", "rare-mode", "--methods", "bon", BEAM_SPEC, "--option", "beam.width=2",
                   "--modes", "linear-sde", "--budgets", "30", "--steps", "4", "--runs", "3", "--out", str(out)])
    assert rc == 0
    with open(out, newline="") as f:
        got = [(r["method"], r["status"], r["nfe_max"]) for r in csv.DictReader(f)]
    assert got == [("bon", "ok", "28"), ("beam", "ok", str(4 + 4 * 2 * 3))]
    assert cli.main(["bench", "search", "--methods", "nosuch.module:Beam", "--out", str(tmp_path / "x.csv")]) != 0


# -- the sampler value ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", search.MODES)
def test_mode_names_are_sampler_presets(task, mode):
    gmm, reward = task
    kw = dict(budget=60, steps=6, runs=5, shape=(2,))
    by_name = search.run("svdd", gmm, reward, mode=mode, generator=gen(2), eta=2.0, **kw)
    preset = search.Sampler.preset(mode, eta=2.0)
    by_value = search.run("svdd", gmm, reward, mode=preset, generator=gen(2), **kw)
    replaced = search.run("svdd", gmm, reward, mode=search.Sampler.preset(mode), generator=gen(2), eta=2.0, **kw)
    for res in (by_value, replaced):
        assert torch.equal(res.samples, by_name.samples) and torch.equal(res.nfe_per_step, by_name.nfe_per_step)
        assert res.mode == mode and res.sampling == preset
    assert by_name.sampling == preset and by_name.sampler == search.SamplerOptions(eta=2.0)
    assert preset.path == (interpolants.VP() if mode == "vp-sde" else interpolants.Linear())
    assert preset.model_path == interpolants.Linear() and preset.sde == (mode != "linear-ode")


def test_a_sampler_runs_a_model_of_another_path_without_conversion(task):
    """The exact VP mixture flow on the VP path (no conversion) = the Linear one converted to VP."""
    gmm, reward = task
    own = search.Sampler(path="vp", model_path="vp", diffusion="square", eta=3.0)
    assert not own.converts and search.Sampler.preset("vp-sde").converts
    kw = dict(budget=8, steps=8, runs=64, shape=(2,), dtype=torch.float64)
    a = search.run("bon", gmm.with_schedule("vp"), reward, mode=own, generator=gen(4), **kw)
    b = search.run("bon", gmm, reward, mode="vp-sde", generator=gen(4), **kw)
    torch.testing.assert_close(a.samples, b.samples, atol=1e-6, rtol=1e-6)
    assert a.mode == "custom"


def test_sampler_is_a_value_with_checked_fields():
    a = search.Sampler(path=interpolants.VP(), diffusion="square", name="mine")
    assert a == search.Sampler.preset("vp-sde") and hash(a) == hash(search.Sampler.preset("vp-sde"))
    assert a != search.Sampler.preset("vp-sde", eta=1.0) and search.Sampler.preset("linear-ode").diffusion is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.eta = 1.0
    for bad, match in [({"diffusion": "cubic"}, "unknown diffusion"), ({"eta": -1.0}, "eta"),
                       ({"time_grid": "log"}, "unknown time_grid"), ({"path": "spline"}, "unknown interpolant")]:
        with pytest.raises(ValueError, match=match):
            search.Sampler(**bad)
    with pytest.raises(ValueError, match="unknown mode 'vp-ode'.*search.Sampler"):
        search.Sampler.preset("vp-ode")


def test_one_list_of_modes():
    assert search.MODES == tuple(search.PRESETS) == ("linear-ode", "linear-sde", "vp-sde")
    assert tuple(viz.MODE_STYLES) == search.MODES == tuple(viz.MODE_LABELS)
    import argparse

    p = argparse.ArgumentParser()
    benchmark.add_arguments(p)
    assert p.parse_args([]).modes == list(search.MODES)


def test_search_context_primitives_are_the_documented_ones(task):
    """A method written on the public SearchContext sees the sampler's grid and pays through the ledger."""
    gmm, reward = task
    sampler = search.Sampler.preset("linear-sde")
    ctx = search.SearchContext(gmm, reward, sampler=sampler, budget=10, steps=5, runs=3, shape=(2,), generator=gen(),
                               device="cpu", dtype=torch.float64)
    assert (ctx.runs, ctx.steps, ctx.budget, ctx.shape, ctx.sampler) == (3, 5, 10, (2,), sampler)
    torch.testing.assert_close(ctx.times, dynamics.time_grid("uniform", 5, dtype=torch.float64))
    x = ctx.noise(3)
    u = ctx.velocity(x, 0)
    assert ctx.ledger.spent.tolist() == [1, 1, 1] and ctx.needs_noise(0) and not ctx.needs_noise(4)
    torch.testing.assert_close(ctx.x0(x, u, 0), dynamics.x0_from_velocity(x, u, ctx.times[0], "linear"))
    assert ctx.reward(ctx.x0(x, u, 0)).shape == (3,)
