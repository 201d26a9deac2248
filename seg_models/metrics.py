"""Segmentation scores, all derived from one int64 confusion matrix accumulated over a whole split.

Rows are ground truth, columns are predictions. Pixels labelled `ignore_index` are never counted.

Absent classes follow MMSegmentation's nan-mean convention: a per-class score whose denominator is 0
is undefined, reported as None, and left out of the mean over classes (never counted as 0 or 1).
For a class that is (a) absent from both the ground truth and the predictions, (b) predicted but
absent from the ground truth, (c) present in the ground truth but never predicted:

- pixel_acc = sum TP / valid pixels, over all classes at once. (a) no effect. (b) and (c) their
  wrong pixels count as errors like any other. None only when the split has no valid pixel.
- mean_acc = mean of the per-class recall TP / GT pixels. (a) None, left out. (b) None (0/0), left
  out; its false positives still lower the recall of the classes those pixels belong to. (c) 0,
  counted. torchmetrics' macro accuracy differs in (b) only: it counts the class as 0.
- miou = mean of IoU = TP / (GT + predicted - TP). (a) None, left out. (b) 0, counted. (c) 0, counted.
- mdice = mean of Dice = 2 TP / (GT + predicted). (a) None, left out. (b) 0, counted. (c) 0, counted.
- fwiou = sum over classes of (GT pixels / valid pixels) * IoU. (a) and (b) weight 0, so no term of
  their own; (b)'s false positives still lower the IoU of the true classes. (c) weight > 0 times 0.
- per-class precision = TP / predicted pixels (no mean is reported). (a) None. (b) 0. (c) None
  (0/0), where torchmetrics reports 0.
"""
from __future__ import annotations

import torch

# The headline scores of an evaluated split, in the order tables show them.
SCORE_NAMES = ("miou", "mdice", "pixel_acc", "mean_acc", "fwiou")


class ConfusionMatrix:
    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, target: torch.Tensor, prediction: torch.Tensor) -> None:
        """Add a batch of integer label maps (any shape, same for both)."""
        target = target.reshape(-1).to(torch.int64)
        prediction = prediction.reshape(-1).to(torch.int64)
        valid = target != self.ignore_index
        target, prediction = target[valid], prediction[valid]
        if target.numel() and (int(target.max()) >= self.num_classes or int(target.min()) < 0):
            bad = int(target[(target >= self.num_classes) | (target < 0)][0])
            raise ValueError(
                f"label {bad} is outside the {self.num_classes} classes and is not the ignore "
                f"index {self.ignore_index}"
            )
        n = self.num_classes
        self.matrix += torch.bincount(n * target + prediction, minlength=n * n).reshape(n, n)

    def all_reduce(self) -> None:
        """Sum the matrix over all ranks of the default process group (as integers)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)

    def compute(self, class_names: list[str] | None = None) -> dict:
        return scores_from_matrix(self.matrix, class_names)


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> list[float | None]:
    return [
        (float(num) / float(den)) if den > 0 else None
        for num, den in zip(numerator.tolist(), denominator.tolist())
    ]


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def scores_from_matrix(matrix: torch.Tensor, class_names: list[str] | None = None) -> dict:
    """Every score of a confusion matrix (mIoU, pixel and mean accuracy, mDice, FWIoU, per class);
    per-class values are keyed by class name."""
    matrix = matrix.to(torch.float64).cpu()
    n = matrix.shape[0]
    names = class_names or [str(i) for i in range(n)]
    true_positive = matrix.diag()
    gt_pixels = matrix.sum(dim=1)
    predicted_pixels = matrix.sum(dim=0)
    union = gt_pixels + predicted_pixels - true_positive
    total = matrix.sum()

    iou = _ratio(true_positive, union)
    dice = _ratio(2 * true_positive, gt_pixels + predicted_pixels)
    recall = _ratio(true_positive, gt_pixels)
    precision = _ratio(true_positive, predicted_pixels)
    frequency = (gt_pixels / total).tolist() if total > 0 else [0.0] * n
    fwiou = sum(f * v for f, v in zip(frequency, iou) if v is not None) if total > 0 else None
    return {
        "pixel_acc": float(true_positive.sum() / total) if total > 0 else None,
        "mean_acc": _mean(recall),
        "miou": _mean(iou),
        "mdice": _mean(dice),
        "fwiou": fwiou,
        "per_class_iou": dict(zip(names, iou)),
        "per_class_dice": dict(zip(names, dice)),
        "per_class_precision": dict(zip(names, precision)),
        "per_class_acc": dict(zip(names, recall)),
        "pixels": int(total),
    }
