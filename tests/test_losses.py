"""Losses on tiny hand-computed tensors; expected values come from the formulas, not the code."""
from __future__ import annotations

import math

import pytest
import torch

from cluster.exceptions import SpecError
from seg_models.losses import build_loss, class_weights_from_histogram

IGNORE = 255


def logits_from_probabilities(*pixels: tuple[float, ...]) -> torch.Tensor:
    """1 x C x 1 x P logits whose softmax is exactly the given per-pixel probabilities."""
    return torch.tensor(pixels, dtype=torch.float64).log().T.reshape(1, len(pixels[0]), 1, len(pixels))


def labels(*values: int) -> torch.Tensor:
    return torch.tensor(values).reshape(1, 1, len(values))


# Two classes, three pixels: the last is ignored whatever it predicts.
PROBABILITIES = ((0.75, 0.25), (0.5, 0.5), (0.9, 0.1))
TARGET = (0, 1, IGNORE)
CE = (-math.log(0.75) - math.log(0.5)) / 2
# class 0: intersection 0.75, predicted mass 0.75 + 0.5, target mass 1
# class 1: intersection 0.5, predicted mass 0.25 + 0.5, target mass 1; smooth 1
DICE = 1 - ((2 * 0.75 + 1) / (1.25 + 1 + 1) + (2 * 0.5 + 1) / (0.75 + 1 + 1)) / 2


def loss_value(name: str, class_weights: list[float] | None = None) -> float:
    loss = build_loss(name, num_classes=2, ignore_index=IGNORE, class_weights=class_weights)
    loss = loss.double()  # class weights are a buffer, so they follow the logits' dtype
    return loss(logits_from_probabilities(*PROBABILITIES), labels(*TARGET)).item()


def test_cross_entropy_skips_ignored_pixels():
    assert loss_value("ce") == pytest.approx(CE, rel=1e-12)


def test_weighted_cross_entropy_is_a_weighted_mean():
    expected = (1 * -math.log(0.75) + 3 * -math.log(0.5)) / (1 + 3)
    assert loss_value("weighted_ce", [1.0, 3.0]) == pytest.approx(expected, rel=1e-12)


def test_dice_by_hand():
    assert loss_value("dice") == pytest.approx(DICE, rel=1e-12)


def test_ce_dice_is_the_sum():
    assert loss_value("ce_dice") == pytest.approx(CE + DICE, rel=1e-12)


def test_ce_dice_weights_its_cross_entropy_term():
    weighted_ce = (1 * -math.log(0.75) + 3 * -math.log(0.5)) / 4
    assert loss_value("ce_dice", [1.0, 3.0]) == pytest.approx(weighted_ce + DICE, rel=1e-12)


def test_dice_ignores_a_class_absent_from_target_and_prediction():
    confident = 1 - 2e-9
    logits = logits_from_probabilities((confident, 1e-9, 1e-9), (1e-9, confident, 1e-9))
    loss = build_loss("dice", num_classes=3)(logits, labels(0, 1))
    # classes 0 and 1 are right; class 2 is nowhere and scores (0 + 1) / (0 + 1) = 1
    assert loss.item() == pytest.approx(0.0, abs=1e-8)


def test_dice_penalises_a_class_predicted_but_absent():
    logits = logits_from_probabilities((0.5, 0.5), (0.5, 0.5))
    loss = build_loss("dice", num_classes=2)(logits, labels(0, 0))
    # class 0: (2 * 1 + 1) / (1 + 2 + 1); class 1: (0 + 1) / (1 + 0 + 1)
    assert loss.item() == pytest.approx(1 - (3 / 4 + 1 / 2) / 2, rel=1e-12)


def test_dice_with_every_pixel_ignored_is_zero_with_finite_gradients():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = build_loss("dice", num_classes=3)(logits, torch.full((1, 2, 2), IGNORE))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all()


def test_unknown_loss_lists_valid_names():
    with pytest.raises(SpecError, match="unknown loss 'focal'; valid: ce, weighted_ce, dice, ce_dice"):
        build_loss("focal", num_classes=2)


def test_weighted_ce_needs_class_weights():
    with pytest.raises(SpecError, match="weighted_ce needs class_weights"):
        build_loss("weighted_ce", num_classes=2)


def test_class_weights_need_one_per_class():
    with pytest.raises(SpecError, match="3 entries for 2 classes"):
        build_loss("weighted_ce", num_classes=2, class_weights=[1.0, 1.0, 1.0])


@pytest.mark.parametrize("weights", [[-1.0, 2.0], [0.0, 0.0]])
def test_class_weights_must_be_usable(weights):
    with pytest.raises(SpecError, match="non-negative with at least one above zero"):
        build_loss("weighted_ce", num_classes=2, class_weights=weights)


@pytest.mark.parametrize("name", ["ce", "dice"])
def test_class_weights_are_refused_where_unused(name):
    with pytest.raises(SpecError, match="class_weights apply only to weighted_ce and ce_dice"):
        build_loss(name, num_classes=2, class_weights=[1.0, 1.0])


def test_median_frequency_balancing():
    # present counts 10, 20, 40: median 20
    assert class_weights_from_histogram([10, 20, 0, 40]) == [2.0, 1.0, 0.0, 0.5]
    # an even number of present classes takes the mean of the middle two: 20
    assert class_weights_from_histogram([10, 30]) == pytest.approx([2.0, 2 / 3])


def test_median_frequency_balancing_needs_pixels():
    with pytest.raises(SpecError, match="no labelled pixels"):
        class_weights_from_histogram([0, 0, 0])
    with pytest.raises(SpecError, match="non-negative"):
        class_weights_from_histogram([5, -1])
