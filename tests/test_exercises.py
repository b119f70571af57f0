"""toyflow.exercises: every check accepts the worked solution, rejects a typical wrong answer, and
treats a stub (NotImplementedError) or None as "not attempted yet" without failing.

The solutions are the functions in notebooks/solutions/NN_*_solutions.py (jupytext percent format,
plain Python): each file is executed once here, and the answer a check is called with there is the
one tested.
"""

import math
import re
from pathlib import Path

import pytest
import torch

from toyflow import exercises
from toyflow.search import AllocationScheme, StaticAllocation, Uniform

SOL_DIR = Path(__file__).resolve().parents[1] / "notebooks" / "solutions"
CALL = re.compile(r"^exercises\.(check_\w+)\((\w+)\)\s*$", re.MULTILINE)
CHECKS = [(key, name) for key, names in exercises.ALL.items() for name in names]


def _solution_file(key):
    (path,) = SOL_DIR.glob(f"{key}_*_solutions.py")
    return path


@pytest.fixture(scope="module")
def solutions():
    """{key: (namespace after executing the solutions file, {check name: answer variable})}."""
    out = {}
    for key in exercises.ALL:
        src = _solution_file(key).read_text()
        ns = {"__name__": f"solutions_{key}"}
        exec(compile(src, str(_solution_file(key)), "exec"), ns)  # noqa: S102 - the solutions are ours
        out[key] = (ns, dict(CALL.findall(src)))
    return out


def _answer(solutions, key, name):
    ns, answers = solutions[key]
    assert name in answers, f"the solutions notebook {key} does not call exercises.{name}"
    return ns, ns[answers[name]]


# wrong answers built from the right one: sign, factor, convention and bookkeeping mistakes
def _vp_class(power):
    class Wrong(StaticAllocation):
        def weights(self, steps):
            return torch.sin(torch.pi * (torch.arange(steps) + 0.5) / steps) ** power

    return Wrong


class _FloorShare(AllocationScheme):  # a floor share: the remainder is never spent
    def quota(self, step, steps, budget_left, spent):
        return (budget_left + spent) // steps


WRONG = {
    "check_linear_pair": lambda ns, f: lambda x0, x1, t: (f(x0, x1, t)[0], -f(x0, x1, t)[1]),
    "check_fm_loss": lambda ns, f: lambda *a: f(*a) / 2,  # mean over coordinates instead of the sum
    "check_gaussian_velocity": lambda ns, f: lambda *a: -f(*a),
    "check_x0_hat": lambda ns, f: lambda x, u, t: x + t * u,
    "check_euler_sampler": lambda ns, f: lambda v, x1, steps: f(lambda x, t: -v(x, t), x1, steps),
    "check_score_from_velocity": lambda ns, f: lambda *a: -f(*a),
    "check_sde_step": lambda ns, f: lambda x, u, s, t, h, g, z: f(x, -u, s, t, h, g, z),
    "check_reverse_drift": lambda ns, f: lambda u, s, g: -u - g**2 / 2 * s,
    "check_proposals": lambda ns, f: lambda v, x, t, tn, eta, z: f(v, x, t, tn, 2 * eta, z),
    "check_eta_ratio": lambda ns, f: lambda t, eta: 2 * f(t, eta),
    "check_snr_matched_time": lambda ns, f: lambda r: r.clone(),
    "check_scale": lambda ns, f: lambda r: 1 / f(r),
    "check_vp_snr_inverse": lambda ns, f: lambda rho: f(1 / rho),
    "check_converted_velocity": lambda ns, f: lambda u, x, r: f(lambda y, t: u(y, 1 - t), x, r),  # t = 0 as noise
    "check_x0_across_paths": lambda ns, f: lambda x, r: ns["gmm"].x0(x, ns["my_linear_time"](torch.tensor(r, dtype=x.dtype))),
    "check_rbf_ledger": lambda ns, f: lambda b, s, needed: f(b, s, [10**6] * len(needed)),  # never stops early
    "check_smc_weights": lambda ns, f: lambda a, b, lam: f(b, a, lam),
    "check_tilted_expectation": lambda ns, f: lambda x, reward, lam: reward(x).mean(),
    "check_bon_expected_max": lambda ns, f: lambda r, n: r.max(),
    "check_hacking_reward": lambda ns, f: lambda x: torch.exp(-(x - torch.tensor([2.0, 0.0], dtype=x.dtype)).pow(2).sum(1) / 0.18),
    "check_accuracy_with_error": lambda ns, f: lambda c: (f(c)[0], f(c)[1] / math.sqrt(len(c))),
    "check_sample_size": lambda ns, f: lambda p, se: f(p, se) - 1,
    "check_image_x0": lambda ns, f: lambda x, u, t: x + t.view(-1, 1, 1, 1) * u,
    "check_ink_reward": lambda ns, f: lambda x0: f(-x0),
    "check_diversity": lambda ns, f: lambda feats: f(feats) * (len(feats) - 1) / len(feats),  # pairs i = j counted
    "check_static_middle_heavy": lambda ns, f: _vp_class(1.0),
    "check_cumulative_rounding": lambda ns, f: lambda w, total: torch.floor(total * w / w.sum()).long(),
    "check_front_loaded": lambda ns, f: Uniform(),
    "check_even_share": lambda ns, f: _FloorShare(),
    "check_greedy_nfe": lambda ns, f: lambda steps, width: width * steps,
    "check_purity": lambda ns, f: lambda g, x, t: g.posterior_weights(x, t).max(1).values.mean(),
    "check_noise_level": lambda ns, f: lambda sched, t: sched(t).sigma,
    "check_blend_velocity": lambda ns, f: lambda x, t, lam: f(x, t, 1 - lam),
    "check_headroom": lambda ns, f: lambda r, m: (r.max(1).values - r.mean(1)).mean(),
    "check_vp_eta_ratio": lambda ns, f: lambda r: 4.5 * r**3 * (1 - r),  # the Linear SDE's ratio
}


def _id(c):
    return f"{c[0]}-{c[1]}"


def test_every_check_is_listed_once_with_a_docstring_and_a_wrong_answer():
    names = [n for _, n in CHECKS]
    assert len(names) == len(set(names)) == len(WRONG)
    assert set(names) == set(WRONG)
    for n in names:
        fn = getattr(exercises, n)
        assert fn.__doc__ and fn.title, n


@pytest.mark.parametrize("check", CHECKS, ids=_id)
def test_solution_passes(check, solutions, capsys):
    key, name = check
    _, answer = _answer(solutions, key, name)
    capsys.readouterr()
    getattr(exercises, name)(answer)
    out = capsys.readouterr().out
    assert out.startswith("\u2713 ") and exercises.NOT_ATTEMPTED not in out


@pytest.mark.parametrize("check", CHECKS, ids=_id)
def test_wrong_answer_is_rejected(check, solutions):
    key, name = check
    ns, answer = _answer(solutions, key, name)
    with pytest.raises(AssertionError) as err:
        getattr(exercises, name)(WRONG[name](ns, answer))
    assert str(err.value), "the message must say what is wrong"


@pytest.mark.parametrize("check", CHECKS, ids=_id)
def test_stub_and_none_are_not_attempted(check, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError  # your code

    class StubStatic(StaticAllocation):
        def weights(self, steps):
            raise NotImplementedError  # your code

    class StubScheme(AllocationScheme):
        def quota(self, *args):
            raise NotImplementedError  # your code

    _, name = check
    fn = getattr(exercises, name)
    answer = {"check_static_middle_heavy": StubStatic, "check_front_loaded": StubScheme,
              "check_even_share": StubScheme}.get(name, stub)
    fn(answer)
    fn(None)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(exercises.NOT_ATTEMPTED in line for line in out), out


def test_a_wrong_answer_that_raises_another_error_is_not_hidden():
    with pytest.raises(ZeroDivisionError):
        exercises.check_x0_hat(lambda x, u, t: 1 / 0)
