"""The toyflow command, the shipped 2D weights, and the benchmark CSV (sharding)."""

import csv

import pytest
import torch

from toyflow import dynamics, pretrained, rewards
from toyflow.cli import main
from toyflow.metrics import energy_distance


def test_train_2d_then_sample_png(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["train", "2d", "--dataset", "moons", "--steps", "30", "--quiet", "--out", str(out)]) == 0
    assert (tmp_path / "m.safetensors").exists() and (tmp_path / "m.json").exists()
    png = tmp_path / "s.png"
    assert main(["sample", "--checkpoint", str(out), "--n", "200", "--steps", "5", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out


def test_train_2d_t_sampling_is_recorded(tmp_path):
    """--t-sampling reaches TrainConfig for the 2D trainer too, and the checkpoint says which was used."""
    import json

    for choice in ("uniform", "logit-normal-mix"):
        out = tmp_path / choice
        assert main(["train", "2d", "--dataset", "moons", "--steps", "3", "--quiet", "--t-sampling", choice,
                     "--out", str(out)]) == 0
        cfg = json.loads(out.with_suffix(".json").read_text())
        assert cfg["train_config"]["t_sampling"] == choice
        assert cfg["command"].endswith(f"--t-sampling {choice} --out {out}")
    with pytest.raises(SystemExit):
        main(["train", "2d", "--t-sampling", "beta"])


def test_export_half_precision_round_trip(tmp_path, capsys):
    """toyflow export: float16 storage, half the bytes, loads back into a float32 model within fp16 rounding."""
    import json

    from toyflow.models import load_model, save_model
    from toyflow.models.unet import UNet

    torch.manual_seed(0)
    model = UNet(channels=(8, 16, 32), mid_blocks=1)
    for p in model.parameters():  # non-zero everywhere (the last convs start at zero)
        p.data.normal_(0, 0.1)
    save_model(tmp_path / "full", model, step=7, command="toyflow train mnist ...")
    assert main(["export", str(tmp_path / "full"), str(tmp_path / "half")]) == 0
    assert "float16" in capsys.readouterr().out
    full, half = (tmp_path / "full.safetensors").stat().st_size, (tmp_path / "half.safetensors").stat().st_size
    assert half < 0.55 * full
    cfg = json.loads((tmp_path / "half.json").read_text())
    assert cfg["weights_dtype"] == "float16" and cfg["step"] == 7 and cfg["command"] == "toyflow train mnist ..."
    assert cfg["export_command"].startswith("toyflow export")
    back = load_model(tmp_path / "half", arch="unet")
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert b.dtype == a.dtype, name
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4), name  # fp16 keeps 11 significant bits
        assert torch.equal(a.half().float(), b), name
    x, t = torch.randn(2, 1, 28, 28), torch.rand(2)
    assert torch.allclose(model(x, t), back(x, t), rtol=0, atol=1e-2)
    with pytest.raises(TypeError, match="floating torch.dtype"):
        save_model(tmp_path / "bad", model, weights_dtype=torch.int8)


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["train", "2d", "--dataset", "donuts", "--steps", "2", "--quiet", "--out", str(tmp_path / "x")]) == 2
    assert "unknown dataset 'donuts'" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "a.png")]) == 2
    assert "incomplete" in capsys.readouterr().err
    assert main(["sample", "--pretrained", "nope", "--out", str(tmp_path / "a.png")]) == 2
    assert "unknown pretrained model" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["8gaussians", "rare-mode", "counting", "aesthetic"])
def test_shipped_2d_models_match_their_data(name):
    from toyflow.data import toy2d

    model = pretrained.load(f"2d-{name}")
    assert type(model).arch == "mlp" and not any(p.requires_grad for p in model.parameters())
    assert "command" in pretrained.info(f"2d-{name}")
    g = torch.Generator().manual_seed(0)
    base = toy2d.eight_gaussians_gmm() if name == "8gaussians" else rewards.task(name)[0]
    x = dynamics.sample(model, torch.randn(4000, 2, generator=g), "linear", steps=100).x
    ed = energy_distance(x, base.sample(4000, g))
    floor = energy_distance(base.sample(4000, g), base.sample(4000, g))
    assert ed <= 0.02, (ed, floor)


def _read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_bench_search_csv_and_shards(tmp_path):
    args = ["bench", "search", "--task", "rare-mode", "--methods", "bon", "rbf", "--modes", "linear-ode", "vp-sde",
            "--budgets", "20", "40", "--runs", "4", "--steps", "4"]
    assert main(args + ["--out", str(tmp_path / "all.csv")]) == 0
    full = _read(tmp_path / "all.csv")
    assert len(full) == 8 and all(r["status"] == "ok" for r in full)
    for r in full:
        assert float(r["nfe_max"]) <= int(r["budget"])
        # only RBF makes evaluations it does not charge (its chunked draws)
        assert float(r["discarded_mean"]) >= 0 and (r["method"] == "rbf" or float(r["discarded_mean"]) == 0)
    parts = []
    for i in range(3):
        assert main(args + ["--shard", f"{i}/3", "--out", str(tmp_path / f"s{i}.csv")]) == 0
        parts += _read(tmp_path / f"s{i}.csv")
    key = lambda r: (r["method"], r["mode"], r["budget"])  # noqa: E731
    strip = lambda r: {k: v for k, v in r.items() if not k.startswith("wall") and k != "shard"}  # noqa: E731
    assert sorted(map(strip, parts), key=key) == sorted(map(strip, full), key=key)
    assert main(args + ["--shard", "3/3", "--out", str(tmp_path / "bad.csv")]) == 2
    # merging the shards restores the grid order of the unsharded run
    shards = [str(tmp_path / f"s{i}.csv") for i in range(3)]
    assert main(["bench", "merge", str(tmp_path / "merged.csv")] + shards) == 0
    assert list(map(strip, _read(tmp_path / "merged.csv"))) == list(map(strip, full))
    assert main(["bench", "merge", str(tmp_path / "m2.csv")] + shards[::-1]) == 2  # wrong order: 2, 3, 3 rows


def test_bench_search_method_options(tmp_path, capsys):
    """--option METHOD.KEY=VALUE reaches search.run and is recorded; typos fail before any cell runs."""
    args = ["bench", "search", "--task", "rare-mode", "--methods", "smc", "rbf", "--modes", "vp-sde",
            "--budgets", "40", "--runs", "8", "--steps", "4"]
    assert main(args + ["--out", str(tmp_path / "a.csv"), "--option", "smc.lam=0.05", "rbf.proposals_per_tick=1"]) == 0
    rows = {r["method"]: r for r in _read(tmp_path / "a.csv")}
    assert rows["smc"]["options"] == "lam=0.05" and rows["rbf"]["options"] == "proposals_per_tick=1"
    assert main(args + ["--out", str(tmp_path / "b.csv")]) == 0
    plain = {r["method"]: r for r in _read(tmp_path / "b.csv")}
    assert plain["smc"]["options"] == "" and plain["smc"]["reward_mean"] != rows["smc"]["reward_mean"]
    assert main(args + ["--out", str(tmp_path / "c.csv"), "--option", "smc.lamda=0.05"]) == 2
    assert "lamda" in capsys.readouterr().err and not (tmp_path / "c.csv").exists()
    assert main(args + ["--out", str(tmp_path / "d.csv"), "--option", "svdd.lam=1"]) == 2
    assert "not among the methods" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "e.csv"), "--option", "smc-lam=1"]) == 2
    assert "METHOD.KEY=VALUE" in capsys.readouterr().err
