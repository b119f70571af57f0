"""The issue-15 battery (bench/cli_battery.py) as tests: every error path of the command ends with
one clear line (a traceback only with --debug), outputs are checked before any compute, and the
silent-wrong and crash cases stay fixed. Plus the CLI behaviours the battery does not cover."""

import importlib.util
import sys

import pytest

from conftest import REPO
from toyflow.cli import main

_spec = importlib.util.spec_from_file_location("cli_battery", REPO / "bench" / "cli_battery.py")
battery = importlib.util.module_from_spec(_spec)
sys.modules["cli_battery"] = battery
_spec.loader.exec_module(battery)

@pytest.mark.parametrize("name", list(battery.CASES))
def test_battery_case(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outcome, detail = battery.CASES[name](tmp_path)
    assert outcome == battery.GOOD, detail


def test_debug_shows_the_traceback(tmp_path, capsys):
    args = ["sample", "--pretrained", "mnist-reward", "--out", str(tmp_path / "s.png")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("toyflow: error: --pretrained mnist-reward is a 'reward-cnn'")
    with pytest.raises(ValueError, match="not a flow model"):
        main(["--debug"] + args)
    with pytest.raises(ValueError, match="not a flow model"):
        main(args + ["--debug"])


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "2d", "--hidden", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "toyflow train 2d: error: argument --hidden: must be an integer >= 1, got 'x'; see toyflow train 2d --help" in err


def test_unexpected_errors_are_one_line_with_status_1(tmp_path, monkeypatch, capsys):
    import toyflow.train as T

    def bug(*a, **k):
        raise KeyError("oops")

    monkeypatch.setattr(T, "_fit", bug)
    assert main(["train", "2d", "--steps", "2", "--quiet", "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error KeyError" in err and "--debug" in err


@pytest.mark.parametrize("command", ["demo", "figures"])
def test_folder_outputs_checked_first(command, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main([command, "--out", str(tmp_path / "file" / "sub")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_bench_checks_digits_and_plot_before_loading_anything(tmp_path, capsys):
    base = ["bench", "search", "--methods", "bon", "--modes", "linear-ode", "--budgets", "20", "--steps", "4",
            "--runs", "2", "--out", str(tmp_path / "r.csv")]
    assert main(base + ["--task", "mnist-digit", "--digits", "12"]) == 2
    assert "--digits must be digits 0..9" in capsys.readouterr().err
    assert main(base + ["--plot", str(tmp_path / "p.xyz")]) == 2
    assert "cannot write 'xyz' files" in capsys.readouterr().err
    assert not (tmp_path / "r.csv").exists()


def test_merge_checks_a_shard_column_and_repeated_shards(tmp_path, capsys):
    from toyflow.benchmark import COLUMNS

    row = {c: "" for c in COLUMNS}
    row.update(task="rare-mode", model="oracle", method="bon", mode="linear-ode", budget="20", status="ok")
    cols = list(COLUMNS) + ["shard"]
    for i, shard in enumerate(("1/2", "0/2")):
        (tmp_path / f"s{i}.csv").write_text(",".join(cols) + "\n" + ",".join(list(row.values()) + [shard]) + "\n")
    assert main(["bench", "merge", str(tmp_path / "m.csv"), str(tmp_path / "s0.csv"), str(tmp_path / "s1.csv")]) == 2
    assert "holds shard 1/2 but is given as shard 0/2" in capsys.readouterr().err
    assert main(["bench", "merge", str(tmp_path / "m.csv"), str(tmp_path / "s0.csv"), str(tmp_path / "s0.csv")]) == 2
    assert "given more than once" in capsys.readouterr().err
    assert not (tmp_path / "m.csv").exists()


def test_export_and_bench_take_the_output_lock(tmp_path, capsys):
    from toyflow.checkpoint import OutputLock
    from toyflow.models import VelocityMLP, save_model

    save_model(tmp_path / "m", VelocityMLP(hidden=8, depth=1))
    with OutputLock(tmp_path / "half"):
        assert main(["export", str(tmp_path / "m"), str(tmp_path / "half")]) == 2
    assert "is being written by process" in capsys.readouterr().err
    with OutputLock(tmp_path / "r.csv"):
        assert main(["bench", "search", "--methods", "bon", "--modes", "linear-ode", "--budgets", "20", "--steps", "4",
                     "--runs", "2", "--out", str(tmp_path / "r.csv")]) == 2
    assert "results CSV" in capsys.readouterr().err and not (tmp_path / "r.csv").exists()
