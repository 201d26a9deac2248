import pytest
import torch
from torchmetrics.classification import (MulticlassAccuracy, MulticlassF1Score, MulticlassJaccardIndex,
                                         MulticlassPrecision)

from seg_models.metrics import ConfusionMatrix, scores_from_matrix


def test_hand_computed_two_classes_with_ignore():
    target = torch.tensor([[0, 0, 1, 1], [1, 255, 255, 0]])
    prediction = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    matrix = ConfusionMatrix(2, ignore_index=255)
    matrix.update(target, prediction)
    # valid pixels: (t,p) = (0,0) (0,1) (1,1) (1,1) (1,0) (0,1)
    assert matrix.matrix.tolist() == [[1, 2], [1, 2]]
    scores = matrix.compute(["bg", "fg"])
    assert scores["pixel_acc"] == pytest.approx(3 / 6)
    assert scores["per_class_iou"] == {"bg": pytest.approx(1 / 4), "fg": pytest.approx(2 / 5)}
    assert scores["miou"] == pytest.approx((1 / 4 + 2 / 5) / 2)
    assert scores["per_class_dice"]["fg"] == pytest.approx(4 / 7)
    assert scores["mean_acc"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert scores["per_class_precision"]["bg"] == pytest.approx(1 / 2)
    assert scores["fwiou"] == pytest.approx(0.5 * 1 / 4 + 0.5 * 2 / 5)
    assert scores["pixels"] == 6


def test_class_absent_everywhere_is_left_out_of_means():
    matrix = torch.tensor([[5, 1, 0], [2, 4, 0], [0, 0, 0]])
    scores = scores_from_matrix(matrix, ["a", "b", "c"])
    assert scores["per_class_iou"]["c"] is None
    assert scores["miou"] == pytest.approx((5 / 8 + 4 / 7) / 2)


def test_label_outside_classes_is_an_error():
    matrix = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="label 7 is outside the 3 classes"):
        matrix.update(torch.tensor([0, 7]), torch.tensor([0, 1]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_torchmetrics_on_random_predictions(seed):
    generator = torch.Generator().manual_seed(seed)
    num_classes = 5
    target = torch.randint(0, num_classes, (4, 32, 32), generator=generator)
    target[torch.rand(target.shape, generator=generator) < 0.1] = 255
    prediction = torch.randint(0, num_classes, (4, 32, 32), generator=generator)
    # Make class 4 absent from both, so the "left out of the means" rule is exercised.
    target[target == 4] = 3
    prediction[prediction == 4] = 0
    matrix = ConfusionMatrix(num_classes, ignore_index=255)
    for t, p in zip(target, prediction):  # accumulated batch by batch over the split
        matrix.update(t, p)
    scores = matrix.compute()

    iou = MulticlassJaccardIndex(num_classes, average="none", ignore_index=255)(prediction, target)
    acc = MulticlassAccuracy(num_classes, average="none", ignore_index=255, multidim_average="global")(prediction, target)
    micro = MulticlassAccuracy(num_classes, average="micro", ignore_index=255)(prediction, target)
    precision = MulticlassPrecision(num_classes, average="none", ignore_index=255)(prediction, target)
    present = [0, 1, 2, 3]
    for c in present:
        assert scores["per_class_iou"][str(c)] == pytest.approx(float(iou[c]), abs=1e-6)
        assert scores["per_class_acc"][str(c)] == pytest.approx(float(acc[c]), abs=1e-6)
        assert scores["per_class_precision"][str(c)] == pytest.approx(float(precision[c]), abs=1e-6)
    assert scores["per_class_iou"]["4"] is None
    assert scores["miou"] == pytest.approx(float(iou[present].mean()), abs=1e-6)
    assert scores["mean_acc"] == pytest.approx(float(acc[present].mean()), abs=1e-6)
    assert scores["pixel_acc"] == pytest.approx(float(micro), abs=1e-6)
    theirs = torchmetrics_scores(target, prediction, num_classes)
    for name in ("miou", "fwiou", "mdice", "pixel_acc", "mean_acc"):
        assert scores[name] == pytest.approx(float(theirs[name]), abs=1e-6), name


# Edge cases, one class each: 2 is predicted but absent from the ground truth, 3 is in the ground
# truth but never predicted, 4 is absent from both. Rows are ground truth, columns predictions:
#   GT 0: 4 right, 1 as class 1, 1 as class 2      GT 0 = 6, predicted 0 = 4 + 1 = 5
#   GT 1: 3 right, 1 as class 2                    GT 1 = 4, predicted 1 = 1 + 3 + 1 = 5
#   GT 3: 1 as class 0, 1 as class 1               GT 3 = 2, predicted 2 = 2, predicted 3 = 0
# plus two ignored pixels, which count for nothing.
EDGE_PAIRS = [(0, 0)] * 4 + [(0, 1), (0, 2)] + [(1, 1)] * 3 + [(1, 2)] + [(3, 0), (3, 1)] + [(255, 2), (255, 3)]
EDGE_NAMES = ["a", "b", "predicted_only", "never_predicted", "absent"]


def edge_case_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    target, prediction = zip(*EDGE_PAIRS)
    return torch.tensor(target), torch.tensor(prediction)


@pytest.fixture
def edge_scores() -> dict:
    matrix = ConfusionMatrix(5, ignore_index=255)
    matrix.update(*edge_case_tensors())
    return matrix.compute(EDGE_NAMES)


def test_edge_case_scores_of_the_ordinary_classes(edge_scores):
    assert edge_scores["pixels"] == 12
    assert edge_scores["pixel_acc"] == pytest.approx(7 / 12)
    assert edge_scores["per_class_iou"]["a"] == pytest.approx(4 / (6 + 5 - 4))
    assert edge_scores["per_class_iou"]["b"] == pytest.approx(3 / (4 + 5 - 3))
    assert edge_scores["per_class_dice"]["a"] == pytest.approx(2 * 4 / (6 + 5))
    assert edge_scores["per_class_acc"]["b"] == pytest.approx(3 / 4)
    assert edge_scores["per_class_precision"]["a"] == pytest.approx(4 / 5)


def test_class_absent_from_both_is_undefined_and_left_out(edge_scores):
    for per_class in ("per_class_iou", "per_class_dice", "per_class_acc", "per_class_precision"):
        assert edge_scores[per_class]["absent"] is None
    # the means divide by the four other classes, never by five
    assert edge_scores["miou"] == pytest.approx((4 / 7 + 3 / 6 + 0 + 0) / 4)
    assert edge_scores["mdice"] == pytest.approx((8 / 11 + 6 / 9 + 0 + 0) / 4)


def test_class_predicted_but_absent_from_ground_truth(edge_scores):
    # IoU and Dice have the false positives in their denominators: 0, counted in the means.
    assert edge_scores["per_class_iou"]["predicted_only"] == 0.0
    assert edge_scores["per_class_dice"]["predicted_only"] == 0.0
    assert edge_scores["per_class_precision"]["predicted_only"] == 0.0
    # Recall is 0 / 0: undefined and left out of mean_acc (ordinary classes and never_predicted).
    assert edge_scores["per_class_acc"]["predicted_only"] is None
    assert edge_scores["mean_acc"] == pytest.approx((4 / 6 + 3 / 4 + 0) / 3)
    # No ground-truth pixels, so no weight in fwiou.
    assert edge_scores["fwiou"] == pytest.approx(6 / 12 * 4 / 7 + 4 / 12 * 3 / 6 + 2 / 12 * 0)


def test_class_present_but_never_predicted(edge_scores):
    assert edge_scores["per_class_iou"]["never_predicted"] == 0.0
    assert edge_scores["per_class_dice"]["never_predicted"] == 0.0
    assert edge_scores["per_class_acc"]["never_predicted"] == 0.0
    # Precision is 0 / 0: undefined.
    assert edge_scores["per_class_precision"]["never_predicted"] is None


def test_no_valid_pixel_leaves_every_score_undefined():
    scores = scores_from_matrix(torch.zeros(3, 3, dtype=torch.int64))
    assert all(scores[name] is None for name in ("pixel_acc", "mean_acc", "miou", "mdice", "fwiou"))


def torchmetrics_scores(target: torch.Tensor, prediction: torch.Tensor, num_classes: int) -> dict:
    """The torchmetrics counterparts of segq's headline scores, ignore index 255."""
    common = {"num_classes": num_classes, "ignore_index": 255}
    return {
        "miou": MulticlassJaccardIndex(average="macro", **common)(prediction, target),
        "fwiou": MulticlassJaccardIndex(average="weighted", **common)(prediction, target),
        "mdice": MulticlassF1Score(average="macro", **common)(prediction, target),
        "pixel_acc": MulticlassAccuracy(average="micro", **common)(prediction, target),
        "mean_acc": MulticlassAccuracy(average="macro", **common)(prediction, target),
    }


def test_edge_cases_agree_with_torchmetrics_where_the_conventions_agree(edge_scores):
    theirs = torchmetrics_scores(*edge_case_tensors(), num_classes=5)
    for name in ("miou", "fwiou", "mdice", "pixel_acc"):
        assert edge_scores[name] == pytest.approx(float(theirs[name]), abs=1e-6), name


def test_mean_acc_with_a_predicted_but_absent_class_differs_from_torchmetrics(edge_scores):
    theirs = torchmetrics_scores(*edge_case_tensors(), num_classes=5)
    # torchmetrics' macro accuracy counts recall 0 / 0 as 0 and divides by four classes
    assert float(theirs["mean_acc"]) == pytest.approx((4 / 6 + 3 / 4 + 0 + 0) / 4, abs=1e-6)
    assert edge_scores["mean_acc"] == pytest.approx((4 / 6 + 3 / 4 + 0) / 3)
