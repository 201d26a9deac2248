"""Losses on tiny hand-computed tensors; expected values come from the formulas, not the code."""
from __future__ import annotations

import math

import pytest
import torch

from seg_models.exceptions import SpecError
from seg_models.losses import build_loss, global_median_frequency_weights

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


# Every loss by name, with the class weights it accepts (weighted_ce needs them).
ALL_LOSSES = [("ce", None), ("weighted_ce", [1.0, 3.0, 0.5]), ("dice", None), ("ce_dice", [1.0, 3.0, 0.5])]


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 3, 1))


@pytest.mark.parametrize("name, class_weights", ALL_LOSSES)
def test_a_batch_with_every_pixel_ignored_gives_zero_loss_and_zero_gradients(name, class_weights):
    model = small_model()
    loss = build_loss(name, num_classes=3, class_weights=class_weights)(
        model(torch.randn(2, 3, 4, 4)), torch.full((2, 4, 4), IGNORE))
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is not None and torch.equal(p.grad, torch.zeros_like(p)) for p in model.parameters())


@pytest.mark.parametrize("name, class_weights", ALL_LOSSES)
def test_an_optimizer_step_on_an_all_ignored_batch_leaves_the_weights_unchanged(name, class_weights):
    model = small_model()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    build_loss(name, num_classes=3, class_weights=class_weights)(
        model(torch.randn(2, 3, 4, 4)), torch.full((2, 4, 4), IGNORE)).backward()
    optimizer.step()
    assert all(torch.isfinite(p).all() and torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_weighted_ce_on_only_zero_weight_classes_is_zero_not_nan():
    logits = torch.randn(1, 2, 1, 3, requires_grad=True)
    loss = build_loss("weighted_ce", num_classes=2, class_weights=[0.0, 1.0])(logits, labels(0, 0, IGNORE))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_one_valid_pixel_is_enough_for_the_usual_cross_entropy():
    loss = build_loss("ce", num_classes=2)(logits_from_probabilities((0.25, 0.75), (0.5, 0.5)), labels(IGNORE, 1))
    assert loss.item() == pytest.approx(-math.log(0.5), rel=1e-12)


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


def test_global_median_frequency_weights():
    # present counts 10, 20, 40: median 20
    assert global_median_frequency_weights([10, 20, 0, 40]) == [2.0, 1.0, 0.0, 0.5]
    # an even number of present classes takes the mean of the middle two: 20
    assert global_median_frequency_weights([10, 30]) == pytest.approx([2.0, 2 / 3])


def test_global_median_frequency_weights_need_pixels():
    with pytest.raises(SpecError, match="no labelled pixels"):
        global_median_frequency_weights([0, 0, 0])
    with pytest.raises(SpecError, match="non-negative"):
        global_median_frequency_weights([5, -1])
