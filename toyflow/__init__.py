"""toyflow: inference-time scaling for flow models, small enough to read and run on a laptop.

Time convention (Kim et al. 2025): t = 0 is data, t = 1 is noise,
x_t = alpha_t x_0 + sigma_t x_1 with x_1 ~ N(0, I); sampling integrates from t = 1 down to t = 0.
A model is any callable ``model(x, t) -> velocity`` with x: (B, *shape), t: (B,).
"""

__version__ = "0.1.0"

# The submodules below are imported on first use (``toyflow.search`` or ``from toyflow import search``),
# so ``import toyflow`` and the ``toyflow --help`` command do not pay for importing torch.
# toyflow.viz (matplotlib), toyflow.train, toyflow.benchmark and toyflow.data.* are imported on use too.
__all__ = ["dynamics", "interpolants", "metrics", "models", "pretrained", "rewards", "search", "__version__"]
_LAZY = frozenset(__all__) - {"__version__"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")  # also binds it on the package
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _LAZY)
