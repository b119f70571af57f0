"""The two regimes: scaled tasks, RBF as the official code runs it, and their benchmark / CLI plumbing."""

import csv
import math

import pytest
import torch

from toyflow import benchmark, rewards, search
from toyflow.cli import main


def _read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------
# rewards.task(name, scale=c)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", rewards.TASKS)
@pytest.mark.parametrize("scale", [0.5, 8, 8.0, 3.25])
def test_scaled_task_is_the_task_of_scale_times_x0(name, scale):
    """r_c(c x) = r(x) exactly for every point, and the mixture is that of c x0 (means, stds x c)."""
    gmm, reward = rewards.task(name)
    gmm_c, reward_c = rewards.task(name, scale=scale)
    x = gmm.sample(500, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(reward_c(scale * x), reward(x), atol=1e-12, rtol=0)
    assert torch.allclose(gmm_c.means, scale * gmm.means) and torch.allclose(gmm_c.stds, scale * gmm.stds)
    assert torch.allclose(gmm_c.weights, gmm.weights, rtol=1e-14, atol=0)  # renormalised: round-off only
    # log-density of the scaled mixture at c x = log p(x) - D log c (a change of variables)
    assert torch.allclose(gmm_c.log_prob(scale * x), gmm.log_prob(x) - 2 * math.log(scale), atol=1e-9)


def test_scale_one_is_the_task_itself():
    gmm, reward = rewards.task("counting")
    gmm1, reward1 = rewards.task("counting", scale=1)
    assert torch.equal(gmm.means, gmm1.means) and reward1.cell_size == reward.cell_size


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), True, "8", None])
def test_bad_scale_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="scale must be a positive finite number"):
        rewards.task("rare-mode", scale=bad)


# ---------------------------------------------------------------------------------------------
# benchmark: scale, models, diffusion path
# ---------------------------------------------------------------------------------------------
def test_make_task_scaled_names_and_models():
    task = benchmark.make_task("rare-mode", "oracle", scale=8)
    assert task.name == "rare-mode-x8" and float(task.model.means.abs().max()) == 16.0
    with pytest.raises(ValueError, match="no shipped 'mlp' model for task 'rare-mode-x8'"):
        benchmark.make_task("rare-mode", "mlp", scale=8)
    with pytest.raises(ValueError, match="model for 2D tasks is one of"):
        benchmark.make_task("rare-mode", "unet")
    with pytest.raises(ValueError, match="scale applies to the 2D tasks only"):
        benchmark.make_task("mnist-ink", "unet", scale=8)


def test_bench_search_scale_and_official_rbf_budget(tmp_path):
    """--scale 8 reaches the task; default RBF spends its whole budget, rbf-strict may not."""
    out = tmp_path / "x8.csv"
    assert main(["bench", "search", "--task", "rare-mode", "--scale", "8", "--methods", "rbf", "rbf-strict",
                 "--modes", "linear-sde", "vp-sde", "--budgets", "40", "--runs", "6", "--steps", "5",
                 "--out", str(out)]) == 0
    rows = _read(out)
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert {r["task"] for r in rows} == {"rare-mode-x8"} and {r["scale"] for r in rows} == {"8"}
    for r in rows:
        if r["method"] == "rbf":
            assert float(r["nfe_mean"]) == 40 and int(r["nfe_max"]) == 40
        else:
            assert float(r["nfe_mean"]) <= 40


def test_bench_search_diffusion_path_is_recorded_and_changes_the_sampler(tmp_path):
    args = ["bench", "search", "--task", "rare-mode", "--methods", "svdd", "--modes", "linear-sde",
            "--budgets", "30", "--runs", "6", "--steps", "5", "--time-grid", "vp-snr"]
    assert main(args + ["--out", str(tmp_path / "own.csv")]) == 0
    assert main(args + ["--diffusion-path", "vp", "--out", str(tmp_path / "vp.csv")]) == 0
    own, vp = _read(tmp_path / "own.csv")[0], _read(tmp_path / "vp.csv")[0]
    assert own["diffusion_path"] == "" and vp["diffusion_path"] == "vp" and vp["time_grid"] == "vp-snr"
    assert own["reward_mean"] != vp["reward_mean"]  # same seed, another diffusion
    # --diffusion-path linear on the Linear path is its own schedule: the same numbers as the default
    assert main(args + ["--diffusion-path", "linear", "--out", str(tmp_path / "lin.csv")]) == 0
    assert _read(tmp_path / "lin.csv")[0]["reward_mean"] == own["reward_mean"]


def test_bench_search_rejects_a_bad_scale(tmp_path, capsys):
    code = main(["bench", "search", "--task", "rare-mode", "--scale", "0", "--methods", "bon", "--modes",
                 "linear-ode", "--budgets", "10", "--runs", "2", "--out", str(tmp_path / "z.csv")])
    assert code != 0 and "scale must be a positive finite number" in capsys.readouterr().err
    assert not (tmp_path / "z.csv").exists()


# ---------------------------------------------------------------------------------------------
# RBF: the default is the official code, rbf-strict the paper's text
# ---------------------------------------------------------------------------------------------
def test_official_initial_batch_scales_with_the_budget():
    opts = search.RBFOptions()
    assert [opts.initial_draws(b, 10) for b in (10, 19, 20, 100, 500, 1000)] == [1, 1, 1, 5, 25, 50]
    assert opts.initial_draws(37, 1) == 37  # one step: no search step, the initial draws are the search
    assert search.RBFStrictOptions().initial_draws(500, 10) == 1
    assert search.RBFOptions(initial_particles=7).initial_draws(500, 10) == 7


def test_rbf_default_spends_the_budget_at_the_last_step_and_keeps_the_best():
    gmm, reward = rewards.task("rare-mode", scale=8)
    res = search.run("rbf", gmm, reward, mode="vp-sde", budget=200, steps=10, runs=8, shape=(2,),
                     generator=torch.Generator().manual_seed(0), record=True)
    assert res.nfe.tolist() == [200] * 8 and res.nfe_per_step[:, 0].tolist() == [10] * 8
    h = res.history
    last = h.proposal_rewards[9]  # the last search step: every draw left, the best kept
    mask = h.proposal_mask[9]
    for i in range(8):
        drawn = last[i][mask[i]]
        assert int(mask[i].sum()) == int(res.nfe_per_step[i, 9])
        assert float(h.rewards[i, 9, 0]) == float(drawn.max())
