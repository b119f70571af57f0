import math
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # tiny tensors: thread hand-offs cost more than they save

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"
BENCH = REPO / "bench"


@pytest.fixture
def bench_on_path():
    """bench/ on sys.path for one test: the bench scripts import each other by plain name (as
    ``python bench/NAME.py`` runs them), also lazily inside their functions."""
    import sys

    sys.path.insert(0, str(BENCH))
    try:
        yield BENCH
    finally:
        sys.path.remove(str(BENCH))


def eight_gaussians(schedule=None, std=0.1, dtype=torch.float64):
    from toyflow.models import GaussianMixtureFlow

    ang = torch.arange(8, dtype=torch.float64) * 2 * math.pi / 8
    means = torch.stack([2 * torch.cos(ang), 2 * torch.sin(ang)], 1)
    return GaussianMixtureFlow(means, std, schedule=schedule)


@pytest.fixture
def gmm8():
    return eight_gaussians()


@pytest.fixture
def mnist_dir():
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST digits not found at {SHARED_MNIST} (the project's shared/data/mnist)")
    return SHARED_MNIST
