import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex, MulticlassPrecision

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
