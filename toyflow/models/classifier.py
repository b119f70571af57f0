"""Two small MNIST digit classifiers with different designs, for images in [-1, 1]: (B, 1, 28, 28).

- :class:`RewardCNN` scores x̂_0 inside search loops and is differentiated for guidance (DPS):
  GroupNorm (batch-independent: a particle's score never depends on its batch mates), SiLU and
  average pooling (smooth input gradients), global average pooling.
- :class:`EvaluatorCNN` is the held-out judge, deliberately different: 5x5 convolutions,
  BatchNorm, ReLU, max pooling, a dense head with dropout.

Both: ``forward(x) -> logits (B, 10)``, ``features(x) -> (B, F)`` (penultimate features, for
classifier-feature FID and diversity), ``config()``.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["RewardCNN", "EvaluatorCNN"]

_IMAGE_SHAPE = (1, 28, 28)


def _check_images(name: str, x: Tensor) -> None:
    if x.dim() != 4 or tuple(x.shape[1:]) != _IMAGE_SHAPE:
        raise ValueError(
            f"{name} expects images of shape (B, 1, 28, 28) in [-1, 1], got {tuple(x.shape)}; "
            "reshape flat digits with x.view(-1, 1, 28, 28)"
        )


def _conv_gn_silu(c_in: int, c_out: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(groups, c_out), nn.SiLU())


class RewardCNN(nn.Module):
    """Smooth classifier: conv-GN-SiLU (x1 at 28, x2 at 14, x2 at 7), avg-pool between, global avg pool -> F = c3.

    x: (B, 1, 28, 28) -> logits (B, 10); ``widths`` = channels at 28x28, 14x14, 7x7.
    """

    arch = "reward-cnn"

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 128), groups: int = 8, num_classes: int = 10):
        super().__init__()
        self.widths, self.groups, self.num_classes = tuple(int(w) for w in widths), int(groups), int(num_classes)
        c1, c2, c3 = self.widths
        if any(w % groups for w in self.widths):
            raise ValueError(f"every width in {self.widths} must be divisible by groups={groups}")
        self.body = nn.Sequential(
            _conv_gn_silu(1, c1, groups),
            nn.AvgPool2d(2),  # 28 -> 14
            _conv_gn_silu(c1, c2, groups),
            _conv_gn_silu(c2, c2, groups),
            nn.AvgPool2d(2),  # 14 -> 7
            _conv_gn_silu(c2, c3, groups),
            _conv_gn_silu(c3, c3, groups),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(c3, num_classes)

    def config(self) -> dict:
        return {"widths": list(self.widths), "groups": self.groups, "num_classes": self.num_classes}

    def features(self, x: Tensor) -> Tensor:
        """x: (B, 1, 28, 28) -> (B, c3) globally pooled features."""
        _check_images("RewardCNN", x)
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 1, 28, 28) -> logits (B, num_classes)."""
        return self.head(self.features(x))


class EvaluatorCNN(nn.Module):
    """Held-out classifier: [conv5x5-BN-ReLU, max-pool] x2, conv3x3-BN-ReLU, max-pool, dense F -> dropout -> 10.

    x: (B, 1, 28, 28) -> logits (B, 10); features are the F = ``hidden`` dense activations.
    """

    arch = "evaluator-cnn"

    def __init__(
        self,
        widths: tuple[int, int, int] = (32, 64, 96),
        hidden: int = 128,
        dropout: float = 0.3,
        num_classes: int = 10,
    ):
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        self.hidden, self.dropout, self.num_classes = int(hidden), float(dropout), int(num_classes)
        c1, c2, c3 = self.widths
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 5, padding=2, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 28 -> 14
            nn.Conv2d(c1, c2, 5, padding=2, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 14 -> 7
            nn.Conv2d(c2, c3, 3, padding=1, bias=False),
            nn.BatchNorm2d(c3),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 7 -> 3
            nn.Flatten(),
            nn.Dropout(self.dropout),
            nn.Linear(c3 * 3 * 3, hidden),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(self.dropout), nn.Linear(hidden, num_classes))

    def config(self) -> dict:
        return {
            "widths": list(self.widths),
            "hidden": self.hidden,
            "dropout": self.dropout,
            "num_classes": self.num_classes,
        }

    def features(self, x: Tensor) -> Tensor:
        """x: (B, 1, 28, 28) -> (B, hidden) dense features (use in eval mode: BatchNorm, dropout)."""
        _check_images("EvaluatorCNN", x)
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 1, 28, 28) -> logits (B, num_classes)."""
        return self.head(self.features(x))
