"""One home for the tasks: what each one is (its base distribution and reward), its scale, and the
method options recommended for it.

    from toyflow import tasks

    task = tasks.get("rare-mode")              # a ToyTask
    gmm, reward = task.make(scale=8)           # the exact mixture flow and the reward, x8
    task.label(8)                              # 'rare-mode-x8' (the name in tables and CSVs)
    task.options("smc")                        # {'lam': 0.05}: SMC's temperature for a reward in [0, 1]

``rewards.task``, the benchmark (``toyflow bench search``), the demo and the figures all read their
tasks from here; a task registered with :func:`register` is picked up by all of them. This module
imports nothing heavy (torch is imported when a task is built), so listing names stays instant.

Recommended options are what the demo and the figures run; the benchmark runs each method's
library defaults unless ``--option`` says otherwise, so its tables stay comparable across tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Union

__all__ = ["ToyTask", "MnistTask", "register", "get", "names", "TOY", "MNIST"]


def _frozen(options: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
    return MappingProxyType({m: MappingProxyType(dict(o)) for m, o in options.items()})


@dataclass(frozen=True)
class ToyTask:
    """A 2D task: an exact Gaussian-mixture flow (the "pretrained model") and a reward.

    ``build()`` returns (GaussianMixtureFlow, Reward) at scale 1; :meth:`make` scales both.
    ``recommended``: method name -> options (keyword arguments of ``search.run``).
    """

    name: str
    build: Callable[[], tuple]
    summary: str
    reward_range: tuple[float, float]
    recommended: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "recommended", _frozen(self.recommended))

    def make(self, scale: float = 1.0) -> tuple:
        """(mixture, reward) with data and reward length scales times ``scale`` (noise unchanged):
        r_c(c x) = r(x). ``scale=8`` puts the mode decision at high noise, the regime of image models."""
        from toyflow import rewards

        scale = rewards.check_scale(scale)
        gmm, reward = self.build()
        if scale == 1.0:
            return gmm, reward
        return rewards.scale_mixture(gmm, scale), rewards.scale_reward(reward, scale)

    def label(self, scale: float = 1.0) -> str:
        """The task's name in tables: "rare-mode", or "rare-mode-x8" for ``scale=8``."""
        return self.name if scale == 1 else f"{self.name}-x{scale:g}"

    def options(self, method: str) -> dict:
        """The options recommended for ``method`` on this task (a fresh dict; {} if none)."""
        return dict(self.recommended.get(method, {}))


@dataclass(frozen=True)
class MnistTask:
    """An MNIST task for the shipped flow: a reward built from a target digit and a classifier.

    ``build_reward(digit, classifier)`` returns the Reward; ``scores_digit``: the benchmark reports
    the held-out evaluator's accuracy on ``digit`` (False for a task with no target class).
    """

    name: str
    build_reward: Callable[[int, Any], Any]
    summary: str
    scores_digit: bool
    recommended: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "recommended", _frozen(self.recommended))

    def label(self, digit: int) -> str:
        """The task's name in tables ("mnist-digit-7" for a digit task, else its name)."""
        return f"{self.name}-{digit}" if self.name == "mnist-digit" else self.name

    def options(self, method: str) -> dict:
        return dict(self.recommended.get(method, {}))


Task = Union[ToyTask, MnistTask]
TOY: dict[str, ToyTask] = {}
MNIST: dict[str, MnistTask] = {}


def register(task: Task, *, replace: bool = False) -> Task:
    """Add ``task`` to the registry (``replace=True`` to redefine a name); returns it."""
    if isinstance(task, ToyTask):
        table = TOY
    elif isinstance(task, MnistTask):
        table = MNIST
    else:
        raise TypeError(f"register takes a tasks.ToyTask or tasks.MnistTask, got {type(task).__name__}")
    if not replace and (task.name in TOY or task.name in MNIST):
        raise ValueError(f"a task named {task.name!r} is already registered; pass replace=True to redefine it")
    table[task.name] = task
    return task


def names(kind: str = "all") -> tuple[str, ...]:
    """Registered task names: ``kind`` "2d", "mnist" or "all"."""
    if kind not in ("2d", "mnist", "all"):
        raise ValueError(f"kind must be '2d', 'mnist' or 'all', got {kind!r}")
    return tuple(TOY if kind == "2d" else MNIST if kind == "mnist" else list(TOY) + list(MNIST))


def get(name: str) -> Task:
    """The registered task ``name`` (a clear error naming the valid ones otherwise)."""
    if name in TOY:
        return TOY[name]
    if name in MNIST:
        return MNIST[name]
    hint = ""
    base, _, scale = name.rpartition("-x")
    if base in TOY:
        hint = f" (a scaled task is {base!r} with scale={scale})"
    raise ValueError(f"unknown task {name!r}{hint}; 2D tasks: {', '.join(TOY)}; MNIST tasks: {', '.join(MNIST)}")


# -- the built-in tasks (builders import lazily: listing names must not load torch) --------------
def _rare_mode():
    from toyflow.rewards import rare_mode_task

    return rare_mode_task()


def _counting():
    from toyflow.rewards import counting_task

    return counting_task()


def _aesthetic():
    from toyflow.rewards import aesthetic_task

    return aesthetic_task()


def _mnist_digit(digit, classifier):
    from toyflow.rewards import mnist_digit

    return mnist_digit(digit, classifier)


def _mnist_ink(digit, classifier):
    from toyflow.rewards import mnist_ink

    return mnist_ink(150)


def _mnist_thick(digit, classifier):
    from toyflow.rewards import mnist_digit_thick

    return mnist_digit_thick(digit, classifier)


# SMC's lam: the weights are exp((r_k - r_{k-1}) / lam); for rewards of order 1, the library default
# lam = 1 barely reweights and SMC behaves like BoN, so the demo and figures use 0.05
_SMC_TOY = {"smc": {"lam": 0.05}}

register(ToyTask("rare-mode", _rare_mode, "8 Gaussians, the target mode has 2 % of the mass; reward: a bump on it",
                 (0.0, 1.0), _SMC_TOY))
register(ToyTask("counting", _counting, "5 x 5 grid of Gaussians; reward: minus the cell-count error to the corner (2, 2)",
                 (float("-inf"), 0.0), _SMC_TOY))
register(ToyTask("aesthetic", _aesthetic, "8 equal Gaussians; reward: tanh of a projection, two modes tie as best",
                 (-1.0, 1.0), _SMC_TOY))
register(MnistTask("mnist-digit", _mnist_digit, "log p(digit | x0_hat) under the reward classifier", True,
                   {"smc": {"lam": 1.0}}))
register(MnistTask("mnist-ink", _mnist_ink, "minus |lit pixels - 150| / 100 (no classifier)", False,
                   {"smc": {"lam": 1.0}}))
register(MnistTask("mnist-thick", _mnist_thick, "min(p(digit | x0_hat), ink / 150): the digit drawn thick", True,
                   {"smc": {"lam": 1.0}}))
