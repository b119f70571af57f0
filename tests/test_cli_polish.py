"""The command line as a user meets it: instant help without torch, --version, help on a
bare command, every option's help with its default and no reST markup, the threads policy, the
recorded schedule in ``toyflow sample``, and output folders that keep a git clone clean."""

import argparse
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from toyflow import cli
from toyflow.cli import build_parser, main


class Stop(Exception):
    """Raised by a stand-in for the compute, once it has recorded what the command set up."""


def _all_parsers(parser, path=()):
    """(command words, parser) for the parser and every subcommand parser below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, path + (name,))


def test_help_imports_neither_torch_nor_matplotlib():
    code = ("import sys\nfrom toyflow.cli import main\n"
            "for argv in ([], ['--help'], ['train', '2d', '--help'], ['sample', '--help'], ['demo', '--help'],\n"
            "             ['figures', '--help'], ['export', '--help'], ['--version']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'matplotlib', 'numpy') if m in sys.modules))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout


def test_bench_search_help_is_instant_too():
    """bench search fills its options from toyflow.benchmark: that module imports torch only on use."""
    code = ("import sys, time\nt0 = time.perf_counter()\nfrom toyflow.cli import main\n"
            "try:\n    main(['bench', 'search', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('TOOK', time.perf_counter() - t0)\n"
            "print('HEAVY', sorted(m for m in ('torch', 'matplotlib', 'numpy') if m in sys.modules))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "--budgets" in res.stdout and "--modes" in res.stdout
    assert "HEAVY []" in res.stdout


def test_bench_mode_names_are_the_search_modes():
    """The --modes choices are written out (no torch at parse time): they must be toyflow.search.MODES."""
    from toyflow import benchmark, search

    assert benchmark._search_modes() == tuple(search.MODES)
    p = argparse.ArgumentParser()
    benchmark.add_arguments(p)
    assert p.parse_args([]).modes == list(search.MODES)


def test_version(capsys):
    from toyflow import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"toyflow {__version__}"


@pytest.mark.parametrize("argv, heading", [([], "commands:"), (["train"], "what to train:"), (["bench"], "benchmarks:")])
def test_a_bare_command_shows_its_help(argv, heading, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {' '.join(['toyflow'] + argv)}") and heading in out


def test_every_option_has_help_with_its_default_and_no_markup():
    parser = build_parser()
    for words, p in _all_parsers(parser):
        p._filled()  # bench search fills in its options on use
        text = p.format_help()
        assert not re.search(r"``|:(func|class|mod|meth):|\*\*", text), f"reST markup in toyflow {' '.join(words)} --help"
        for action in p._actions:
            if not action.option_strings or action.nargs == 0:  # positionals, switches, --help, --version
                continue
            flag = action.option_strings[-1]
            assert action.help, f"toyflow {' '.join(words)} {flag} has no help"
            shown = p._get_formatter()._get_help_string(action)
            if action.default is not None:
                assert "default" in shown.lower(), f"toyflow {' '.join(words)} {flag}: the help does not show the default"


def test_bench_search_options_are_filled_only_when_used():
    parser = build_parser()
    search = dict(_all_parsers(parser))[("bench", "search")]
    assert not any("--budgets" in a.option_strings for a in search._actions)
    args = parser.parse_args(["bench", "search", "--budgets", "20", "--runs", "2"])
    assert args.budgets == [20] and args.threads is None and args.func is cli._cmd_bench_search


# ---- threads --------------------------------------------------------------------------------------
def _record_threads(monkeypatch, module, attr, seen):
    def stand_in(*a, **k):
        seen.append(torch.get_num_threads())
        raise Stop("recorded")

    monkeypatch.setattr(module, attr, stand_in)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # as on a 2-core machine; the commands must restore it
    yield 2
    torch.set_num_threads(before)


@pytest.mark.parametrize("extra, want", [([], 1), (["--threads", "3"], 3)])
def test_train_2d_runs_on_one_thread_unless_told(extra, want, two_threads, tmp_path, monkeypatch):
    import toyflow.train as T

    seen = []
    _record_threads(monkeypatch, T, "train_flow", seen)
    assert main(["train", "2d", "--steps", "2", "--quiet", "--out", str(tmp_path / "m")] + extra) == 1
    assert seen == [want] and torch.get_num_threads() == two_threads


@pytest.mark.parametrize("task, extra, want", [("rare-mode", [], 1), ("mnist-digit", [], 2),
                                               ("counting", ["--threads", "2"], 2), ("mnist-ink", ["--threads", "1"], 1)])
def test_bench_search_threads_follow_the_task(task, extra, want, two_threads, tmp_path, monkeypatch):
    import toyflow.benchmark as B

    seen = []
    _record_threads(monkeypatch, B, "main", seen)
    main(["bench", "search", "--task", task, "--out", str(tmp_path / "r.csv")] + extra)
    assert seen == [want] and torch.get_num_threads() == two_threads


def test_sample_threads_and_recorded_schedule(two_threads, tmp_path, monkeypatch):
    """A 2D model samples on one thread; a model trained on the VP path is converted to the path
    the mode samples (and not converted when that is its own path)."""
    from toyflow import dynamics, interpolants
    from toyflow.models import VelocityMLP, save_model

    save_model(tmp_path / "vp", VelocityMLP(hidden=8, depth=1), schedule="vp")
    seen = []

    def stand_in(model, x1, schedule, **k):
        seen.append((torch.get_num_threads(), model, schedule))
        raise Stop("recorded")

    monkeypatch.setattr(dynamics, "sample", stand_in)
    base = ["sample", "--checkpoint", str(tmp_path / "vp"), "--n", "8", "--steps", "2", "--out", str(tmp_path / "s.png")]
    main(base + ["--mode", "linear-ode"])
    main(base + ["--mode", "vp-sde"])
    main(base + ["--mode", "vp-sde", "--threads", "2"])
    (t1, m1, s1), (t2, m2, s2), (t3, _, _) = seen
    assert (t1, t2, t3) == (1, 1, 2) and torch.get_num_threads() == two_threads
    assert isinstance(m1, interpolants.ConvertedVelocity) and m1.source.name == "vp" and s1 == "linear"
    assert isinstance(m2, VelocityMLP) and s2 == "vp"


def test_sample_refuses_an_unknown_recorded_schedule(tmp_path, capsys):
    from toyflow.models import VelocityMLP, save_model

    save_model(tmp_path / "odd", VelocityMLP(hidden=8, depth=1), schedule="zigzag")
    assert main(["sample", "--checkpoint", str(tmp_path / "odd"), "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "records the schedule 'zigzag'" in err


def test_figure_threads_can_be_forced():
    from toyflow.figures import forced_threads, small_batch_threads

    with small_batch_threads(1):
        assert torch.get_num_threads() == 1
    with forced_threads(2), small_batch_threads(1):
        assert torch.get_num_threads() == 2
    with forced_threads(None), small_batch_threads(1):
        assert torch.get_num_threads() == 1


# ---- output folders -------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
@pytest.mark.parametrize("command, folder", [("demo", "toyflow-demo"), ("figures", "toyflow-figures")])
def test_default_output_folder_keeps_a_clone_clean(command, folder, tmp_path, monkeypatch, capsys):
    import toyflow.demo
    import toyflow.figures

    def fake(out, **k):
        path = out / "result.png"
        path.write_bytes(b"x")
        return [path]

    monkeypatch.setattr(toyflow.demo, "run_demo", lambda out_dir, quick: fake(out_dir))
    monkeypatch.setattr(toyflow.figures, "make_all", lambda out, **k: fake(out))
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    assert main([command]) == 0
    out = capsys.readouterr().out
    assert f"writing into {(tmp_path / folder).resolve()} (the default" in out
    assert (tmp_path / folder / "result.png").exists()
    status = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, check=True).stdout
    assert status == ""
    # a folder the user names is theirs: no .gitignore in it
    assert main([command, "--out", "mine"]) == 0
    assert not (tmp_path / "mine" / ".gitignore").exists() and "writing into" in capsys.readouterr().out


def test_figures_show_progress(tmp_path, monkeypatch, capsys):
    import toyflow.figures as F
    from toyflow import pretrained

    for name in ("_fig_trajectories", "_fig_densities", "_fig_search", "_fig_eta_ratio"):
        monkeypatch.setattr(F, name, lambda out, _n=name: [out / f"{_n[5:]}.png"])
    monkeypatch.setattr(F, "_fig_scaling", lambda out, **k: [out / "scaling.png"])
    monkeypatch.setattr(F, "_fig_scaling_2d", lambda out, csv: [out / "scaling_2d.png"])
    monkeypatch.setattr(pretrained, "available", lambda: [])
    table = tmp_path / "table.csv"
    table.write_text("task\n")
    paths = F.make_all(tmp_path, progress=True, bench_csv=table)
    err = capsys.readouterr().err
    assert len(paths) == 6
    assert "figures [1/6] trajectories ..." in err and "figures [5/6] eta ratio: eta_ratio.png" in err
    assert "figures [6/6] benchmark table: scaling_2d.png" in err
    assert "MNIST figures skipped" in err
    F.make_all(tmp_path, progress=False)
    assert capsys.readouterr().err == ""


def test_notebook_speed_factor_is_bounded(monkeypatch):
    pytest.importorskip("nbformat")
    import importlib.util

    spec = importlib.util.spec_from_file_location("nb_tests", REPO / "tests" / "test_notebooks.py")
    nb_tests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nb_tests)
    assert 1.0 <= nb_tests.speed_factor() <= nb_tests.MAX_SLOWDOWN
    monkeypatch.setenv("TOYFLOW_SPEED_FACTOR", "2.5")
    assert nb_tests.speed_factor() == 2.5
