"""The method protocol: :class:`Method`, :func:`register` and the registry behind ``search.run(name)``.

A search method is a small class. It names itself, declares its options dataclass, says how many
NFE it needs at least and how many particles it holds, and implements ``run(ctx, opts)`` on a
:class:`~toyflow.search.SearchContext`::

    @dataclass(frozen=True)
    class GreedyOptions:
        width: int = 4                              # children per step

    @search.register
    class Greedy(search.Method):
        '''Keep the best of `width` SDE children at every grid step.'''

        name = "greedy"
        options = GreedyOptions

        def minimum_budget(self, steps, opts):
            return 1 + opts.width * (steps - 1)

        def run(self, ctx, opts):
            R, W = ctx.runs, opts.width
            x = ctx.noise(R)
            u = ctx.velocity(x, 0)
            for k in range(ctx.steps - 1):
                y = ctx.step(x.repeat_interleave(W, 0), u.repeat_interleave(W, 0), k, ctx.noise(R * W))
                uy = ctx.velocity(y, k + 1)
                best = ctx.reward(ctx.x0(y, uy, k + 1)).view(R, W).argmax(1) + torch.arange(R) * W
                x, u = y[best], uy[best]
            xK = ctx.step(x, u, ctx.steps - 1)
            return xK, ctx.reward(xK)

    search.run("greedy", model, reward, budget=100, shape=(2,), width=8)

``search.run`` also takes the class or an instance without registering it. Registered methods are
listed in :data:`METHODS`, run by name from the benchmark and ``toyflow bench search --methods``
(which also loads ``package.module:Class`` or ``path/to/file.py:Class``), and drawn in the
figures with their ``label`` and ``color``. Every built-in method is one file of this package that
registers itself the same way.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import Tensor

from toyflow.search.options import SamplerOptions

__all__ = ["Method", "NoOptions", "register", "get_method", "resolve_method", "METHODS", "OPTIONS",
           "build_options", "valid_keys", "SAMPLER_KEYS"]

#: the keyword options that belong to the sampler, not to a method
SAMPLER_KEYS = tuple(f.name for f in dataclasses.fields(SamplerOptions))
_NAME = re.compile(r"^[a-z0-9][a-z0-9+._-]*$")


@dataclass(frozen=True)
class NoOptions:
    """A method without options."""


class Method:
    """A search method under an NFE budget. Subclass it, set the class attributes, implement :meth:`run`.

    Class attributes:

    - ``name``: the registry key and ``SearchResult.method``: lower case, no spaces, ':' or ','.
    - ``options``: a (frozen) dataclass of the method's keyword options, built from
      ``search.run(name, ..., **options)``; unknown keys raise a TypeError. Default: none.
    - ``needs_gradients``: True if :meth:`run` uses ``ctx.guided`` (grad_x r): the reward must say it
      is differentiable.
    - ``label``, ``color``: display name and matplotlib colour in figures (None: the name, and a fixed
      colour from the name's hash).

    Override :meth:`minimum_budget` and :meth:`particles` where the defaults do not fit.
    """

    name: str = ""
    options: type = NoOptions
    needs_gradients: bool = False
    label: Optional[str] = None
    color: Optional[str] = None

    def minimum_budget(self, steps: int, opts) -> int:
        """The smallest NFE budget per run the method can run with. Default: ``steps`` (one NFE per grid time)."""
        return steps

    def particles(self, budget: int, steps: int, opts) -> int:
        """Particles held per run at each grid time (the history's N). Default: 1."""
        return 1

    def check_budget(self, budget: int, steps: int, opts) -> None:
        """Raise a ValueError naming the fix if ``budget`` cannot run. Default: compare with :meth:`minimum_budget`."""
        need = self.minimum_budget(steps, opts)
        if budget < need:
            raise ValueError(
                f"budget {budget} is too small for method {self.name!r} with steps={steps}: it needs at least {need} "
                "NFE per run (see toyflow.search docs for the accounting)"
            )

    def run(self, ctx, opts):
        """The algorithm on ``ctx`` (:class:`~toyflow.search.SearchContext`; gradients off unless it
        enables them). Returns ``(samples (R, *shape), rewards (R,))`` or with ``selected (R,)`` int64,
        the index of the returned particle among those held at t = 0 (for the history)."""
        raise NotImplementedError(f"{type(self).__name__} must implement run(self, ctx, opts)")

    def __repr__(self) -> str:
        return f"<search method {self.name!r} ({type(self).__module__}.{type(self).__qualname__})>"


_REGISTRY: dict[str, Method] = {}


def _instance(method: Any) -> Method:
    """A Method instance from a Method subclass or instance, checked once (else a TypeError / ValueError)."""
    if isinstance(method, type) and issubclass(method, Method):
        method = method()
    if not isinstance(method, Method):
        raise TypeError(
            f"expected a search.Method subclass or instance, got {method!r}; write class MyMethod(search.Method) "
            "with name, options and run(self, ctx, opts)"
        )
    cls = type(method)
    where = f"{cls.__module__}.{cls.__qualname__}"
    if not isinstance(method.name, str) or not _NAME.match(method.name):
        raise ValueError(f"{where}.name must be a lower-case name without spaces, ':' or ',' (e.g. 'beam'), "
                         f"got {method.name!r}")
    if not (isinstance(method.options, type) and dataclasses.is_dataclass(method.options)):
        raise TypeError(f"{where}.options must be a dataclass (e.g. @dataclass(frozen=True) class MyOptions), "
                        f"got {method.options!r}; use search.NoOptions for none")
    clash = sorted({f.name for f in dataclasses.fields(method.options)} & set(SAMPLER_KEYS))
    if clash:
        raise ValueError(f"{where}.options has field(s) {', '.join(clash)}, which are sampler options of search.run; "
                         "rename them")
    if not isinstance(method.needs_gradients, bool):
        raise TypeError(f"{where}.needs_gradients must be True or False, got {method.needs_gradients!r}")
    if cls.run is Method.run:
        raise TypeError(f"{where} must implement run(self, ctx, opts)")
    return method


def register(method, *, replace: bool = False):
    """Register a :class:`Method` subclass (or instance) under its ``name``; returns it unchanged,
    so it works as a class decorator. A name taken by another class is a ValueError unless
    ``replace=True``; registering the same class again does nothing."""
    inst = _instance(method)
    old = _REGISTRY.get(inst.name)
    if old is not None and type(old) is not type(inst) and not replace:
        raise ValueError(
            f"method name {inst.name!r} is already registered by {type(old).__module__}.{type(old).__qualname__}; "
            "give yours another name, or pass replace=True"
        )
    if old is None or type(old) is not type(inst) or replace:
        _REGISTRY[inst.name] = inst
    return method


def _unknown(name) -> ValueError:
    return ValueError(
        f"unknown method {name!r}; use one of {', '.join(map(repr, _REGISTRY))}, register your own with "
        "search.register(MyMethod), pass a search.Method to search.run, or name its class as package.module:Class or "
        "path/to/file.py:Class (toyflow bench search --methods)"
    )


def get_method(method: Union[str, Method, type]) -> Method:
    """The :class:`Method` for a registered name (case-insensitive), a Method instance or a Method subclass."""
    if isinstance(method, str):
        found = _REGISTRY.get(method.strip().lower())
        if found is None:
            raise _unknown(method)
        return found
    if isinstance(method, Method) or (isinstance(method, type) and issubclass(method, Method)):
        return _instance(method)
    raise _unknown(method)


_LOADED: dict[str, Any] = {}  # file path -> module, so a file given twice defines its classes once


def _load_module(module: str):
    if module.endswith(".py") or "/" in module or "\\" in module:
        path = Path(module).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"method file {module} does not exist")
        if str(path) not in _LOADED:
            spec = importlib.util.spec_from_file_location(f"toyflow_user_method_{len(_LOADED)}_{path.stem}", path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = mod
            spec.loader.exec_module(mod)
            _LOADED[str(path)] = mod
        return _LOADED[str(path)]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"cannot import module {module!r} ({e}); put its package on PYTHONPATH or give the file, "
                         f"e.g. path/to/{module.rsplit('.', 1)[-1]}.py:ClassName") from None


def resolve_method(spec: Union[str, Method, type]) -> Method:
    """A method from a registered name, ``package.module:Class``, ``path/to/file.py:Class`` or a Method.
    Loaded classes are registered (a name taken by another class is a ValueError), so they run by name."""
    if not (isinstance(spec, str) and ":" in spec):
        return get_method(spec)
    module, _, attr = spec.rpartition(":")
    if not module or not attr:
        raise ValueError(f"method {spec!r}: write package.module:ClassName or path/to/file.py:ClassName")
    obj = getattr(_load_module(module), attr, None)
    if obj is None:
        raise ValueError(f"method {spec!r}: {module} has no attribute {attr!r}")
    inst = _instance(obj)
    register(obj)  # a ValueError if the name is taken by another class
    return _REGISTRY[inst.name]


class _MethodNames(Sequence):
    """The registered method names, in registration order (a live, read-only view)."""

    def __getitem__(self, i):
        return tuple(_REGISTRY)[i]

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and name in _REGISTRY

    def __eq__(self, other) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, (Sequence, tuple)) else other)

    def __hash__(self):
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(_REGISTRY))


class _MethodOptions(Mapping):
    """Method name -> its options dataclass (a live, read-only view of the registry)."""

    def __getitem__(self, name):
        return _REGISTRY[name].options

    def __iter__(self):
        return iter(tuple(_REGISTRY))

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __repr__(self) -> str:
        return repr({k: v.options.__name__ for k, v in _REGISTRY.items()})


#: names of the registered methods (built-ins first), a live view
METHODS = _MethodNames()
#: name -> options dataclass of every registered method, a live view
OPTIONS = _MethodOptions()


def valid_keys(method) -> list[str]:
    """Option names ``run(method, ...)`` accepts: the sampler's and the method's."""
    return list(SAMPLER_KEYS) + [f.name for f in dataclasses.fields(get_method(method).options)]


def build_options(method, options: dict) -> tuple[SamplerOptions, Any]:
    """Split ``options`` into (SamplerOptions, the method's options); unknown keys -> TypeError."""
    method = get_method(method)
    cls = method.options
    method_keys = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(SAMPLER_KEYS) - method_keys)
    if unknown:
        raise TypeError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for method "
            f"{method.name!r}; valid options: {', '.join(valid_keys(method))}"
        )
    sampler = SamplerOptions(**{k: v for k, v in options.items() if k in SAMPLER_KEYS})
    return sampler, cls(**{k: v for k, v in options.items() if k in method_keys})


def check_output(out, method: Method, runs: int, shape: tuple) -> tuple[Tensor, Tensor, Tensor]:
    """``run``'s return value as (samples, rewards, selected), checked (a clear error naming the method)."""
    if not (isinstance(out, tuple) and len(out) in (2, 3)):
        raise TypeError(f"method {method.name!r}: run must return (samples, rewards) or (samples, rewards, selected), "
                        f"got {type(out).__name__}")
    samples, rewards = out[0], out[1]
    selected = out[2] if len(out) == 3 else None
    if not (torch.is_tensor(samples) and tuple(samples.shape) == (runs,) + tuple(shape)):
        got = tuple(getattr(samples, "shape", ()))
        raise ValueError(f"method {method.name!r}: run returned samples of shape {got}, "
                         f"expected (runs, *shape) = {(runs,) + tuple(shape)}")
    if not (torch.is_tensor(rewards) and tuple(rewards.shape) == (runs,)):
        got = tuple(getattr(rewards, "shape", ()))
        raise ValueError(f"method {method.name!r}: run returned rewards of shape {got}, expected ({runs},)")
    if selected is None:
        selected = torch.zeros(runs, dtype=torch.int64, device=samples.device)
    elif not (torch.is_tensor(selected) and tuple(selected.shape) == (runs,)):
        raise ValueError(f"method {method.name!r}: run returned selected of shape "
                         f"{tuple(getattr(selected, 'shape', ()))}, expected ({runs},)")
    return samples, rewards, selected
