"""Training losses by name: cross-entropy (plain or class-weighted), soft Dice, and their sum."""
from __future__ import annotations

import statistics
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from seg_models.exceptions import SpecError

USES_CLASS_WEIGHTS = ("weighted_ce", "ce_dice")


class DiceLoss(nn.Module):
    """1 - mean over classes of the soft Dice score of the softmax probabilities, summed over the
    whole batch; pixels labelled `ignore_index` count for nothing.

    `smooth` is added to both the numerator and denominator of every class's score,
    (2 * intersection + smooth) / (predicted mass + target mass + smooth): a class absent from
    both the target and the prediction scores 1 (no loss) instead of 0/0, and a class absent
    from the target but predicted with mass m scores 1 / (m + 1), a penalty that grows with m.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, smooth: float = 1.0):
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = (target != self.ignore_index).unsqueeze(1)
        probabilities = logits.softmax(dim=1) * valid
        one_hot = F.one_hot(target.masked_fill(~valid.squeeze(1), 0), self.num_classes)
        one_hot = one_hot.permute(0, 3, 1, 2).to(probabilities.dtype) * valid
        dims = (0, 2, 3)
        intersection = (probabilities * one_hot).sum(dims)
        mass = probabilities.sum(dims) + one_hot.sum(dims)
        dice = (2 * intersection + self.smooth) / (mass + self.smooth)
        return 1 - dice.mean()


class CrossEntropy(nn.CrossEntropyLoss):
    """nn.CrossEntropyLoss, except when its weighted mean has nothing to divide by: a batch whose
    pixels are all ignored (or all of zero-weight classes) gives a zero loss with zero gradients
    instead of 0/0 = NaN, which the optimizer would write into every weight."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if counted_weight(target, self.weight, self.ignore_index) > 0:
            return super().forward(logits, target)
        return zero_loss(logits)


def counted_weight(target: torch.Tensor, weight: torch.Tensor | None, ignore_index: int) -> torch.Tensor | int:
    """The denominator of the mean cross-entropy: the summed class weights of the valid pixels."""
    labels = target[target != ignore_index]
    return labels.numel() if weight is None else weight[labels].sum()


def zero_loss(logits: torch.Tensor) -> torch.Tensor:
    # Still a function of the logits, so backward reaches every parameter (with zeros) and DDP
    # finds the gradients it waits for on every rank.
    return logits.sum() * 0.0


class SumOfLosses(nn.Module):
    def __init__(self, *losses: nn.Module):
        super().__init__()
        self.losses = nn.ModuleList(losses)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(loss(logits, target) for loss in self.losses)


def cross_entropy(num_classes: int, ignore_index: int, weights: torch.Tensor | None) -> nn.Module:
    return CrossEntropy(weight=weights, ignore_index=ignore_index)


def dice(num_classes: int, ignore_index: int, weights: torch.Tensor | None) -> nn.Module:
    return DiceLoss(num_classes, ignore_index)


def cross_entropy_plus_dice(num_classes: int, ignore_index: int,
                            weights: torch.Tensor | None) -> nn.Module:
    return SumOfLosses(cross_entropy(num_classes, ignore_index, weights),
                       dice(num_classes, ignore_index, weights))


LOSSES: dict[str, Callable[[int, int, torch.Tensor | None], nn.Module]] = {
    "ce": cross_entropy,
    "weighted_ce": cross_entropy,
    "dice": dice,
    "ce_dice": cross_entropy_plus_dice,
}


def build_loss(name: str, num_classes: int, ignore_index: int = 255,
               class_weights: list[float] | None = None) -> nn.Module:
    """`class_weights` are required by weighted_ce, optional for ce_dice (they weight its
    cross-entropy term) and refused elsewhere rather than silently ignored."""
    if name not in LOSSES:
        raise SpecError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    if name == "weighted_ce" and class_weights is None:
        raise SpecError("weighted_ce needs class_weights, one per class (see global_median_frequency_weights)")
    if class_weights is not None and name not in USES_CLASS_WEIGHTS:
        raise SpecError(f"class_weights apply only to {' and '.join(USES_CLASS_WEIGHTS)}, not {name}; "
                        "drop them or choose weighted_ce")
    weights = None if class_weights is None else weights_tensor(class_weights, num_classes)
    return LOSSES[name](num_classes, ignore_index, weights)


def weights_tensor(class_weights: list[float], num_classes: int) -> torch.Tensor:
    if len(class_weights) != num_classes:
        raise SpecError(f"class_weights has {len(class_weights)} entries for {num_classes} classes; "
                        "give one weight per class")
    if any(weight < 0 for weight in class_weights) or not any(class_weights):
        raise SpecError("class_weights must be non-negative with at least one above zero")
    return torch.tensor(class_weights, dtype=torch.float32)


def global_median_frequency_weights(pixel_counts: list[int]) -> list[float]:
    """Class weights from one global class-pixel histogram (the train split's): median count /
    count, the median taken over the classes with pixels; a class without pixels gets 0.

    A class's frequency here is its share of all the split's pixels. That is not Eigen & Fergus's
    median-frequency balancing, which divides a class's pixels by the pixels of only the images
    that contain the class; the histogram alone cannot give that."""
    if any(count < 0 for count in pixel_counts):
        raise SpecError(f"pixel counts must be non-negative, got {pixel_counts}")
    present = [count for count in pixel_counts if count > 0]
    if not present:
        raise SpecError("the class histogram has no labelled pixels; cannot derive class weights")
    median = statistics.median(present)
    return [median / count if count > 0 else 0.0 for count in pixel_counts]
