"""toyflow: inference-time scaling for flow models, small enough to read and run on a laptop.

Time convention (Kim et al. 2025): t = 0 is data, t = 1 is noise,
x_t = alpha_t x_0 + sigma_t x_1 with x_1 ~ N(0, I); sampling integrates from t = 1 down to t = 0.
A model is any callable ``model(x, t) -> velocity`` with x: (B, *shape), t: (B,).
"""

__version__ = "0.1.0"

from toyflow import dynamics, interpolants, metrics, models, pretrained, rewards, search  # noqa: E402

# toyflow.viz (matplotlib), toyflow.train, toyflow.benchmark and toyflow.data.* are imported on use
__all__ = ["dynamics", "interpolants", "metrics", "models", "pretrained", "rewards", "search", "__version__"]
