"""`segq eval`: score a checkpoint on a prepared split (and, for Cityscapes, the official way)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cluster.cli.context import console
from seg_models.exceptions import SpecError
from seg_models.metrics import SCORE_NAMES

eval_app = typer.Typer()
FORMATS = ("table", "json")
SCORE_LABELS = {"miou": "mIoU", "mdice": "mDice", "pixel_acc": "pixel acc", "mean_acc": "mean acc", "fwiou": "FWIoU"}


@eval_app.command("eval")
def eval_checkpoint(
    checkpoint: str = typer.Argument(..., help="checkpoint.pt or its folder, a path or an s3:// or gs:// URI "
                                               "(best_checkpoint in `segq summary`)"),
    data: Path = typer.Option(..., "--data", help="a prepared dataset with the checkpoint's classes"),
    split: str = typer.Option("val", "--split", help="val or test"),
    official: bool = typer.Option(False, "--official",
                                  help="Cityscapes data: also run the official pixel-level evaluation "
                                       "(cityscapesscripts) on labelIds PNGs and compare the mIoUs"),
    out: Optional[Path] = typer.Option(None, "--out",
                                       help="write scores.json here; with --official also the labelIds PNGs "
                                            "(official/predictions, official/ground_truth)"),
    format: str = typer.Option("table", "--format", help="table or json"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1,
                                             help="score all rows in batches of this size (default: replay the "
                                                  "trial's own ranks, batches and threads, for its exact scores)"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)"),
) -> None:
    """Score a checkpoint on a prepared split: mIoU, mDice, accuracies, FWIoU and per-class IoU."""
    import torch

    from jobs.checkpoints.evaluate import evaluate_checkpoint, write_scores

    if format not in FORMATS:
        raise SpecError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    result = evaluate_checkpoint(checkpoint, data, split, official, out, batch_size, device)
    if out:
        write_scores(result, out)
    if format == "json":
        print(json.dumps(result.to_dict(), indent=2))
        return
    print_evaluation(result)


def print_evaluation(result) -> None:
    from rich.table import Table

    official = result.official
    protocol = result.protocol
    console.print(f"{result.trial or result.checkpoint} on {result.data}, split {result.split}: {result.images} images "
                  f"at {protocol['resolution']}, label mode {protocol['label_mode']}, ignore index "
                  f"{protocol['ignore_index']}", markup=False, highlight=False)
    scores = Table()
    scores.add_column("score")
    scores.add_column("segq", justify="right")
    if official:
        scores.add_column("official", justify="right")
    for name in SCORE_NAMES:
        cells = [SCORE_LABELS[name], number(result.scores[name])]
        if official:
            cells.append(number(official["miou"]) if name == "miou" else "")
        scores.add_row(*cells)
    console.print(scores)

    per_class = Table(title="per-class IoU")
    per_class.add_column("class")
    per_class.add_column("IoU", justify="right")
    if official:
        per_class.add_column("official IoU", justify="right")
    for name, iou in result.scores["per_class_iou"].items():
        cells = [name, number(iou)]
        if official:
            cells.append(number(official["per_class_iou"].get(name)))
        per_class.add_row(*cells)
    console.print(per_class)
    if official:
        console.print(official_comparison(result), markup=False, highlight=False)


def official_comparison(result) -> str:
    ours, theirs = result.scores["miou"], result.official["miou"]
    classes = len(result.scores["per_class_iou"])
    difference = f"{abs(ours - theirs):.2e}" if ours is not None and theirs is not None else "n/a"
    return (f"mIoU: segq {number(ours, 6)} ({classes} classes, {result.protocol['label_mode']}) | "
            f"official averageScoreClasses {number(theirs, 6)} ({len(result.official['per_class_iou'])} classes) | "
            f"difference {difference}")


def number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
