"""Reward functions: ``reward(x0) -> (B,)``, higher is better, evaluated on x0 (or x0_hat).

Every reward is a :class:`Reward` with a ``name`` and a ``differentiable`` flag; calling it checks
the output (shape (B,), floating point, finite), so a broken reward fails loudly where it breaks.

2D rewards (analogs of the paper's image rewards) and the toy tasks built on them:

- :func:`rare_mode`          prompt-alignment analog: a bump on a low-weight mode (differentiable)
- :func:`piecewise_constant` counting analog: minus the grid-cell count error (not differentiable)
- :func:`smooth`             aesthetic analog: tanh of a projection (differentiable)
- :func:`rare_mode_task`, :func:`counting_task`, :func:`aesthetic_task` -> (mixture, reward)

MNIST rewards take images (B, 1, 28, 28) in [-1, 1]: :func:`mnist_digit`, :func:`mnist_ink`,
:func:`mnist_digit_thick`.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from toyflow.models.gmm import GaussianMixtureFlow

__all__ = [
    "Reward",
    "FunctionReward",
    "check_differentiable",
    "check_reward_output",
    "check_mnist_images",
    "RareMode",
    "CellCountError",
    "TanhProjection",
    "MnistDigit",
    "MnistInk",
    "MnistDigitThick",
    "rare_mode",
    "piecewise_constant",
    "smooth",
    "mnist_digit",
    "mnist_ink",
    "mnist_digit_thick",
    "TASKS",
    "ScaledReward",
    "task",
    "check_scale",
    "scale_mixture",
    "scale_reward",
    "rare_mode_task",
    "counting_task",
    "aesthetic_task",
]

logger = logging.getLogger(__name__)

MNIST_SHAPE = (1, 28, 28)


# --------------------------------------------------------------------------------------------
# Base class and checks
# --------------------------------------------------------------------------------------------
class Reward:
    """r(x0): (B, *shape) -> (B,), higher is better. Subclasses implement :meth:`evaluate`.

    Attributes: ``name`` (for messages and plots), ``differentiable`` (whether grad_x r is
    meaningful, i.e. gradient guidance such as DPS may use it).
    """

    name: str = "reward"
    differentiable: bool = False

    def evaluate(self, x0: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate(x0) -> (B,)")

    def __call__(self, x0: Tensor) -> Tensor:
        if not torch.is_tensor(x0):
            raise TypeError(f"reward {self.name!r} expects a torch.Tensor x0 of shape (B, ...), got {type(x0).__name__}")
        if x0.dim() < 1:
            raise ValueError(f"reward {self.name!r} expects a batch x0 of shape (B, ...), got a scalar")
        out = self.evaluate(x0)
        return check_reward_output(out, x0, self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, differentiable={self.differentiable})"


def check_reward_output(out, x0: Tensor, name: str, *, cast_integers: bool = False, check_finite: bool = True) -> Tensor:
    """The one check of a reward's output ``out = r(x0)``: a finite floating tensor of shape (B,).

    Raises a clear error naming the reward (``name``) and, for NaN/inf, whether its inputs ``x0``
    were already bad. ``cast_integers``: accept integer outputs (a count) and cast them to the
    default dtype instead of raising (the search engine does this for plain functions).
    ``check_finite=False``: shape and dtype only, for a caller that tests the values where it reads
    them anyway (RBF's host-side bookkeeping) and calls again with the default to raise the error.
    """
    B = x0.shape[0]
    if not torch.is_tensor(out):
        raise TypeError(f"reward {name!r} returned {type(out).__name__}; it must return a tensor of shape (B,) = ({B},)")
    if out.shape != (B,):
        raise ValueError(
            f"reward {name!r} returned shape {tuple(out.shape)} for a batch of {B}; it must return one value per "
            f"sample, shape ({B},) (reduce over the non-batch dimensions, do not average over the batch)"
        )
    if not torch.is_floating_point(out):
        if not cast_integers:
            raise TypeError(f"reward {name!r} returned dtype {out.dtype}; return a floating-point tensor (e.g. out.float())")
        out = out.to(torch.get_default_dtype())
    # one cheap reduction in the common (finite) case; the element-wise test only to diagnose
    if not check_finite or math.isfinite(float(out.detach().sum())):
        return out
    bad = ~torch.isfinite(out.detach())
    if bool(bad.any()):
        n_bad = int(bad.sum())
        flat = x0.detach().reshape(B, -1)
        inputs_bad = int((~torch.isfinite(flat).all(dim=1)).sum()) if flat.numel() else 0
        cause = (
            f"{inputs_bad} of the inputs x0 themselves contain NaN/inf (x0_hat exploding? check the model, "
            "the step size and the time grid near t = 0 and t = 1)"
            if inputs_bad
            else f"inputs are finite (max |x0| = {float(flat.abs().max()):.3g}); x0_hat may be far out of the data range"
        )
        raise ValueError(f"reward {name!r} returned NaN or inf for {n_bad} of {B} samples; check its inputs: {cause}")
    return out


class FunctionReward(Reward):
    """Wrap a plain function ``fn(x0) -> (B,)`` as a :class:`Reward` (stating its differentiability)."""

    def __init__(self, fn: Callable[[Tensor], Tensor], name: str, differentiable: bool):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name
        self.differentiable = bool(differentiable)

    def evaluate(self, x0: Tensor) -> Tensor:
        return self.fn(x0)


def check_differentiable(reward, method_name: str):
    """Return ``reward`` if it is differentiable; otherwise raise a ValueError explaining the fix."""
    name = getattr(reward, "name", repr(reward))
    flag = getattr(reward, "differentiable", None)
    if flag is None:
        raise ValueError(
            f"method {method_name!r} follows the reward gradient, but reward {name!r} does not say whether it is "
            "differentiable; wrap it as toyflow.rewards.FunctionReward(fn, name=..., differentiable=True)"
        )
    if not flag:
        raise ValueError(
            f"method {method_name!r} follows the reward gradient grad_x r(x0_hat), but reward {name!r} is not "
            "differentiable (piecewise constant or count-based); use a gradient-free method "
            "('bon', 'sop', 'smc', 'svdd', 'code', 'rbf') or a differentiable reward"
        )
    return reward


def _check_points(x: Tensor, dim: int, name: str) -> None:
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"reward {name!r} expects points of shape (B, {dim}), got {tuple(x.shape)}")


def check_mnist_images(x: Tensor, who: str) -> None:
    """Raise unless x has shape (B, 1, 28, 28) (MNIST images in [-1, 1])."""
    if not torch.is_tensor(x) or x.dim() != 4 or tuple(x.shape[1:]) != MNIST_SHAPE:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(
            f"{who} expects MNIST images of shape (B, 1, 28, 28) in [-1, 1], got {shape}; "
            "reshape flat vectors with x.reshape(-1, 1, 28, 28)"
        )


# --------------------------------------------------------------------------------------------
# 2D rewards
# --------------------------------------------------------------------------------------------
class RareMode(Reward):
    """r(x) = exp(-|x - c|^2 / (2 w^2)) in (0, 1]: saturates at 1 on the centre c. Differentiable."""

    differentiable = True

    def __init__(self, center: Union[Tensor, Sequence[float]], width: float, name: str = "rare-mode"):
        center = torch.as_tensor(center, dtype=torch.float64)
        if center.dim() != 1:
            raise ValueError(f"center must be a vector (D,), got shape {tuple(center.shape)}")
        if not width > 0:
            raise ValueError(f"width must be positive, got {width}")
        self.center = center
        self.width = float(width)
        self.name = name

    def evaluate(self, x0: Tensor) -> Tensor:
        _check_points(x0, self.center.numel(), self.name)
        d2 = (x0 - self.center.to(x0)).pow(2).sum(dim=1)
        return torch.exp(-d2 / (2 * self.width**2))


class CellCountError(Reward):
    """r(x) = -sum_d |round(x_d / c) - k_d|: minus the L1 distance, in grid cells, to target cell k.

    Piecewise constant (a "count error": how many unit moves away from the target count), values
    0, -1, -2, ...; not differentiable (zero gradient almost everywhere).
    """

    differentiable = False

    def __init__(self, target_cell: Sequence[int], cell_size: float = 1.0, name: str = "cell-count-error"):
        self.target_cell = torch.as_tensor(target_cell, dtype=torch.float64)
        if self.target_cell.dim() != 1:
            raise ValueError(f"target_cell must be a vector of ints (D,), got {target_cell!r}")
        if not cell_size > 0:
            raise ValueError(f"cell_size must be positive, got {cell_size}")
        self.cell_size = float(cell_size)
        self.name = name

    def evaluate(self, x0: Tensor) -> Tensor:
        _check_points(x0, self.target_cell.numel(), self.name)
        cell = torch.round(x0.detach() / self.cell_size)
        return -(cell - self.target_cell.to(x0)).abs().sum(dim=1)


class TanhProjection(Reward):
    """r(x) = tanh((<d, x> - b) / s) in (-1, 1), d a unit direction. Smooth, differentiable."""

    differentiable = True

    def __init__(self, direction: Sequence[float], scale: float = 1.0, offset: float = 0.0, name: str = "smooth"):
        d = torch.as_tensor(direction, dtype=torch.float64)
        if d.dim() != 1 or not float(d.norm()) > 0:
            raise ValueError(f"direction must be a non-zero vector (D,), got {direction!r}")
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.direction = d / d.norm()
        self.scale = float(scale)
        self.offset = float(offset)
        self.name = name

    def evaluate(self, x0: Tensor) -> Tensor:
        _check_points(x0, self.direction.numel(), self.name)
        return torch.tanh((x0 @ self.direction.to(x0) - self.offset) / self.scale)


def rare_mode(gmm: GaussianMixtureFlow, mode_index: int, width: float = 0.5) -> RareMode:
    """Bump reward on component ``mode_index`` of ``gmm``: r(x) = exp(-|x - mu_k|^2 / (2 width^2))."""
    K = gmm.means.shape[0]
    if not 0 <= mode_index < K:
        raise ValueError(f"mode_index must be in 0..{K - 1} for a mixture of {K} components, got {mode_index}")
    return RareMode(gmm.means[mode_index].detach().cpu(), width, name=f"rare-mode-{mode_index}")


def piecewise_constant(target_cell: Sequence[int] = (2, 2), cell_size: float = 1.0) -> CellCountError:
    """Counting analog: r(x) = -sum_d |round(x_d / cell_size) - target_d| (non-differentiable)."""
    return CellCountError(target_cell, cell_size)


def smooth(direction: Sequence[float] = (1.0, 0.0), scale: float = 1.0, offset: float = 0.0) -> TanhProjection:
    """Aesthetic analog: r(x) = tanh((<d, x> - offset) / scale), d = direction / |direction| (differentiable)."""
    return TanhProjection(direction, scale, offset)


# --------------------------------------------------------------------------------------------
# Toy tasks: a base mixture (the "pretrained model", exact) and a reward. The registry of tasks
# (names, scales, recommended options) is toyflow.tasks; these are the builders it calls.
# --------------------------------------------------------------------------------------------
def __getattr__(name: str):
    if name == "TASKS":  # the registered 2D task names (toyflow.tasks is their one home)
        from toyflow import tasks

        return tasks.names("2d")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def rare_mode_task(rare_weight: float = 0.02, width: float = 0.5) -> tuple[GaussianMixtureFlow, RareMode]:
    """8 Gaussians (radius 2, std 0.1); mode 0 at (2, 0) has weight ``rare_weight``, the other 7 share the rest.

    Reward: a bump of width 0.5 on mode 0 (value 1 there, < 0.01 at the neighbouring modes).
    """
    from toyflow.data.toy2d import eight_gaussians_gmm

    if not 0 < rare_weight < 1:
        raise ValueError(f"rare_weight must be in (0, 1), got {rare_weight}")
    weights = torch.full((8,), (1 - rare_weight) / 7, dtype=torch.float64)
    weights[0] = rare_weight
    gmm = eight_gaussians_gmm(weights=weights)
    return gmm, rare_mode(gmm, 0, width)


def counting_task(target_cell: Sequence[int] = (2, 2)) -> tuple[GaussianMixtureFlow, CellCountError]:
    """5 x 5 grid of Gaussians at {-2, ..., 2}^2, std 0.15, weights proportional to exp(-|mu|^2 / (2 * 1.5^2)).

    Reward: minus the cell-count error to ``target_cell`` (default the corner (2, 2), weight ~1.4%).
    """
    ticks = torch.arange(-2, 3, dtype=torch.float64)
    means = torch.cartesian_prod(ticks, ticks)  # (25, 2)
    weights = torch.exp(-means.pow(2).sum(dim=1) / (2 * 1.5**2))
    gmm = GaussianMixtureFlow(means, 0.15, weights)
    return gmm, piecewise_constant(target_cell, 1.0)


def aesthetic_task() -> tuple[GaussianMixtureFlow, TanhProjection]:
    """8 Gaussians (radius 2, std 0.1, equal weights); reward tanh(<d, x>) with d at angle 22.5 degrees.

    Modes 0 (at 0 deg) and 1 (at 45 deg) tie as the best (mean reward ~ tanh(1.85) ~ 0.95), so the tilted
    target is bimodal: a method that collapses onto one of them loses diversity.
    """
    from toyflow.data.toy2d import eight_gaussians_gmm

    angle = math.pi / 8
    return eight_gaussians_gmm(), smooth((math.cos(angle), math.sin(angle)), scale=1.0)


def check_scale(scale) -> float:
    """``scale`` as a float, or a clear error unless it is a positive finite number."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale > 0):
        raise ValueError(
            f"scale must be a positive finite number (1 = the task as defined, 8 = data and reward 8x larger, noise "
            f"unchanged), got {scale!r}"
        )
    return float(scale)


def scale_mixture(gmm: GaussianMixtureFlow, scale: float) -> GaussianMixtureFlow:
    """The mixture of ``scale * x0``: means and standard deviations times ``scale``, weights unchanged."""
    scale = check_scale(scale)
    if gmm.isotropic:
        out = GaussianMixtureFlow(gmm.means * scale, gmm.stds * scale, gmm.weights, gmm.schedule, shape=gmm.shape)
    else:
        out = GaussianMixtureFlow(gmm.means * scale, None, gmm.weights, gmm.schedule,
                                  covariances=gmm.covariances * scale**2, shape=gmm.shape)
    return out.to(gmm.means.device)


def scale_reward(reward: Reward, scale: float) -> Reward:
    """The reward of the scaled task: ``r_c(x) = r(x / c)`` (every length scale of the reward times c)."""
    scale = check_scale(scale)
    if isinstance(reward, RareMode):
        return RareMode(reward.center * scale, reward.width * scale, name=reward.name)
    if isinstance(reward, CellCountError):
        return CellCountError(reward.target_cell, reward.cell_size * scale, name=reward.name)
    if isinstance(reward, TanhProjection):
        return TanhProjection(reward.direction, reward.scale * scale, reward.offset * scale, name=reward.name)
    if isinstance(reward, Reward):
        return ScaledReward(reward, scale)
    raise TypeError(f"scale_reward takes a rewards.Reward, got {type(reward).__name__}; wrap a function with "
                    "rewards.FunctionReward(fn, name, differentiable=...)")


class ScaledReward(Reward):
    """r_c(x) = r(x / c) for any reward r: the task's reward at data scale c (the built-in rewards
    scale their own parameters instead, which gives the same values)."""

    def __init__(self, reward: Reward, scale: float):
        self.reward, self.scale = reward, check_scale(scale)
        self.name = f"{reward.name}-x{self.scale:g}"
        self.differentiable = reward.differentiable

    def evaluate(self, x0: Tensor) -> Tensor:
        return self.reward(x0 / self.scale)


def task(name: str, scale: float = 1.0) -> tuple[GaussianMixtureFlow, Reward]:
    """(base mixture, reward) of the toy task ``name``, a 2D task registered in :mod:`toyflow.tasks`
    (``tasks.get(name).make(scale)``; the built-in ones: rare-mode, counting, aesthetic).

    ``scale`` c multiplies the data (means and stds) and the reward's length scales by c, the noise
    x_1 ~ N(0, I) unchanged: r_c(c x) = r(x). With c = 8 the modes separate at high noise (t near 1)
    instead of mid-path, the regime of image models, where the paper's ideas pay off (bench/RESULTS.md).
    """
    from toyflow import tasks

    if name not in tasks.TOY:
        raise ValueError(f"unknown toy task {name!r}; valid names: {', '.join(tasks.TOY)}")
    return tasks.TOY[name].make(scale)


# --------------------------------------------------------------------------------------------
# MNIST rewards
# --------------------------------------------------------------------------------------------
def _ink(x0: Tensor, threshold: float) -> Tensor:
    """Number of lit pixels (value > threshold, images in [-1, 1]) per image: (B,) float."""
    return (x0.detach() > threshold).sum(dim=(1, 2, 3)).to(x0.dtype)


def _default_classifier(classifier: Optional[nn.Module]) -> nn.Module:
    if classifier is not None:
        if isinstance(classifier, nn.Module) and classifier.training:
            logger.warning("the reward classifier is in training mode (dropout/batch-norm active); call .eval() on it")
        return classifier
    from toyflow import pretrained  # lazy: only MNIST users need the weights

    return pretrained.load("mnist-reward")


def _check_digit(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= 9:
        raise ValueError(f"digit must be an int in 0..9, got {k!r}")
    return k


class MnistDigit(Reward):
    """r(x) = log p(k | x) under a classifier (logits (B, 10)). Differentiable."""

    differentiable = True

    def __init__(self, k: int, classifier: nn.Module):
        self.k = _check_digit(k)
        self.classifier = classifier
        self.name = f"mnist-digit-{k}"

    def evaluate(self, x0: Tensor) -> Tensor:
        check_mnist_images(x0, f"reward {self.name!r}")
        logits = self.classifier(x0)
        if logits.dim() != 2 or logits.shape[1] != 10:
            raise ValueError(f"classifier must return logits of shape (B, 10), got {tuple(logits.shape)}")
        return torch.log_softmax(logits, dim=1)[:, self.k]


class MnistInk(Reward):
    """r(x) = -|#{pixels > threshold} - target| / 100 (count of lit pixels). Not differentiable."""

    differentiable = False

    def __init__(self, target: int, threshold: float = 0.0):
        if not 0 <= target <= 28 * 28:
            raise ValueError(f"ink target must be a pixel count in 0..784, got {target}")
        self.target = float(target)
        self.threshold = float(threshold)
        self.name = f"mnist-ink-{target:g}"

    def evaluate(self, x0: Tensor) -> Tensor:
        check_mnist_images(x0, f"reward {self.name!r}")
        return -(_ink(x0, self.threshold) - self.target).abs() / 100.0


class MnistDigitThick(Reward):
    """Digit k AND thick strokes: r(x) = min(p(k | x), min(ink(x) / min_ink, 1)) in [0, 1]. Not differentiable.

    ink(x) = #{pixels > threshold}; the min makes both conditions necessary (a compositional prompt).
    """

    differentiable = False

    def __init__(self, k: int, classifier: nn.Module, min_ink: int = 150, threshold: float = 0.0):
        self.k = _check_digit(k)
        if not 0 < min_ink <= 28 * 28:
            raise ValueError(f"min_ink must be a pixel count in 1..784, got {min_ink}")
        self.classifier = classifier
        self.min_ink = float(min_ink)
        self.threshold = float(threshold)
        self.name = f"mnist-digit-{k}-thick"

    def evaluate(self, x0: Tensor) -> Tensor:
        check_mnist_images(x0, f"reward {self.name!r}")
        with torch.no_grad():  # not differentiable: no graph through the classifier
            logits = self.classifier(x0)
        if logits.dim() != 2 or logits.shape[1] != 10:
            raise ValueError(f"classifier must return logits of shape (B, 10), got {tuple(logits.shape)}")
        p_k = torch.softmax(logits, dim=1)[:, self.k]
        thick = (_ink(x0, self.threshold) / self.min_ink).clamp(max=1.0)
        return torch.minimum(p_k, thick.to(p_k))


def mnist_digit(k: int, classifier: Optional[nn.Module] = None) -> MnistDigit:
    """log p(k | x0_hat) under ``classifier`` (default: ``toyflow.pretrained.load("mnist-reward")``)."""
    return MnistDigit(k, _default_classifier(classifier))


def mnist_ink(target: int, threshold: float = 0.0) -> MnistInk:
    """-|number of pixels above ``threshold`` - target| / 100 (images in [-1, 1]; no classifier)."""
    return MnistInk(target, threshold)


def mnist_digit_thick(
    k: int, classifier: Optional[nn.Module] = None, min_ink: int = 150, threshold: float = 0.0
) -> MnistDigitThick:
    """min(p(k | x0_hat), min(ink / min_ink, 1)): digit k drawn with at least ``min_ink`` lit pixels."""
    return MnistDigitThick(k, _default_classifier(classifier), min_ink, threshold)
