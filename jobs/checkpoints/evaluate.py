"""`segq eval`: score a checkpoint on a prepared split with the training loop's own evaluation
(one confusion matrix over the whole split), and on Cityscapes data cross-check it with the
official pixel-level evaluation of the `cityscapesscripts` package.

By default the scoring replays the trial's own: each of its ranks' rows in the same batches, on as
many CPU threads as a train worker had (the checkpoint records them). Float sums depend on both,
and a near-tied argmax can follow them, so only the replay gives a row's scores exactly; any other
batch size gives the same scores up to the rare pixel whose top two logits differ by float rounding.
The replay is exact on the CPU; on a GPU, kernels may sum in another order from run to run (cuDNN)."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from seg_models.exceptions import SpecError
from seg_models.metrics import ConfusionMatrix
from workers.exceptions import DataError
from workers.data import SplitDataset, make_loader, to_model_input
from workers.evaluation import EVAL_SPLITS, count_rank_rows, evaluation_protocol
from jobs.checkpoints.inference import TrainedModel, load_trained_model
from workers.shards import ShardedSplit, read_manifest

SHOWN_CLASS_NAMES = 4  # in a mismatch message, enough names to tell two class lists apart
# For a checkpoint that does not record its scoring: one process, and one thread as in a train
# worker with less than two CPUs (Ray sets OMP_NUM_THREADS from the worker's CPUs).
DEFAULT_SCORING = {"world_size": 1, "batch_size": 8, "threads": 1}


@dataclass
class Evaluation:
    checkpoint: str
    data: str
    split: str
    trial: str
    images: int
    protocol: dict
    scores: dict
    scoring: dict | None = None  # the ranks, batches and threads the scores were computed with
    official: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_checkpoint(checkpoint: str | Path, data: Path, split: str = "val", official: bool = False,
                        out: Path | None = None, batch_size: int | None = None, device: str = "cpu") -> Evaluation:
    """`batch_size` None replays the trial's scoring (see the module's docstring)."""
    if split not in EVAL_SPLITS:
        raise SpecError(f"--split {split!r}: expected one of {', '.join(EVAL_SPLITS)}")
    trained = load_trained_model(checkpoint, device)
    manifest = read_manifest(data)
    check_same_classes(trained, manifest, checkpoint, data)
    evaluator = official_evaluator(manifest, data) if official else None
    dataset = SplitDataset(labeled_split(data, split, manifest), None, trained.normalize)
    scoring = scoring_of(trained, batch_size)
    scores = replay_scores(trained.model, dataset, manifest, torch.device(device), scoring)
    protocol = evaluation_protocol(manifest) | {"trained_resolution": f"{trained.height}x{trained.width}"}
    result = Evaluation(checkpoint=str(checkpoint), data=str(data), split=split, trial=trained.trial.get("name", ""),
                        images=len(dataset), protocol=protocol, scores=scores, scoring=scoring)
    batch_size = scoring["batch_size"]
    if evaluator and out:
        result.official = official_scores(evaluator, trained, dataset, manifest, out / "official", batch_size, device)
    elif evaluator:
        with tempfile.TemporaryDirectory() as folder:
            result.official = official_scores(evaluator, trained, dataset, manifest, Path(folder), batch_size, device)
        result.official["folder"] = None  # removed with the temporary directory
    return result


def scoring_of(trained: TrainedModel, batch_size: int | None) -> dict:
    """The trial's scoring setup, or one pass over all rows in batches of `batch_size` if given."""
    scoring = trained.scoring or DEFAULT_SCORING
    if batch_size is None:
        return scoring
    return {"world_size": 1, "batch_size": batch_size, "threads": scoring["threads"]}


def replay_scores(model: torch.nn.Module, dataset: SplitDataset, manifest: dict, device: torch.device,
                  scoring: dict) -> dict:
    """One confusion matrix summed over the ranks' rows, as the train loop's all-reduce sums it."""
    total = ConfusionMatrix(manifest["num_classes"], manifest["ignore_index"], device=device)
    with torch_threads(scoring["threads"]):
        for rank in range(scoring["world_size"]):
            total.matrix += count_rank_rows(model, dataset, rank, scoring["world_size"], scoring["batch_size"],
                                            device, manifest).matrix
    return total.compute(manifest["class_names"])


@contextlib.contextmanager
def torch_threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def write_scores(result: Evaluation, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "scores.json"
    path.write_text(json.dumps(result.to_dict(), indent=2))
    return path


def check_same_classes(trained: TrainedModel, manifest: dict, checkpoint: Path, data: Path) -> None:
    if trained.class_names != manifest["class_names"]:
        raise DataError(
            f"class mismatch: {checkpoint} was trained on {describe_classes(trained.class_names)} but {data} has "
            f"{describe_classes(manifest['class_names'])}; evaluate on data prepared with the checkpoint's classes"
        )


def describe_classes(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN_CLASS_NAMES]) + (", ..." if len(names) > SHOWN_CLASS_NAMES else "")
    return f"{len(names)} classes ({shown})"


def labeled_split(data: Path, split: str, manifest: dict) -> ShardedSplit:
    info = manifest["splits"].get(split)
    if not info or not info["rows"]:
        raise DataError(f"{data}: no {split} split (has {', '.join(manifest['splits'])}); pick another --split")
    if not info["has_masks"]:
        raise DataError(f"{data}: the {split} split has no masks to score against (Cityscapes test labels are "
                        "not public); use --split val")
    return ShardedSplit(data, split, manifest=manifest)


def official_evaluator(manifest: dict, data: Path):
    """cityscapesscripts' pixel-level evaluation module, checked for before any work is done."""
    if manifest["source"] != "cityscapes":
        raise SpecError(f"--official: {data} is a {manifest['source']!r} dataset; the official evaluation "
                        "needs one prepared from Cityscapes (`segq data prepare cityscapes`)")
    try:
        from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling
    except ImportError:
        raise SpecError("--official needs the cityscapesscripts package: pip install 'segq[cityscapes]'") from None
    return evalPixelLevelSemanticLabeling


def official_scores(evaluator, trained: TrainedModel, dataset: SplitDataset, manifest: dict, folder: Path,
                    batch_size: int, device: str) -> dict:
    """The official evaluation of the model on the same rows, its predictions written as labelIds
    PNGs at the prepared resolution. Ground truth comes from the shard masks: trainId 255 becomes
    labelId 0 ('unlabeled'), which the official script ignores just as segq ignores 255."""
    to_label_ids = label_id_lookup(manifest["label_mode"])
    predictions, truths = write_label_id_pngs(trained, dataset, folder, to_label_ids, batch_size, device)
    results = run_official(evaluator, predictions, truths)
    evaluated = [label.name for label in evaluator.labels if label.id >= 0 and not label.ignoreInEval]
    return {
        "miou": finite(results["averageScoreClasses"]),
        "per_class_iou": {name: finite(results["classScores"][name]) for name in evaluated},
        "images": len(truths),
        "folder": str(folder),
    }


def label_id_lookup(label_mode: str | None) -> np.ndarray:
    """Class id -> official labelId, as a 256-entry table (ignore 255 -> 0 'unlabeled')."""
    from jobs.preparation.sources.cityscapes import LABELS

    lookup = np.zeros(256, np.uint8)
    for _, label_id, train_id, _ in LABELS:
        if label_mode == "label_ids":
            lookup[label_id] = label_id
        elif train_id != 255:
            lookup[train_id] = label_id
    return lookup


@torch.no_grad()
def write_label_id_pngs(trained: TrainedModel, dataset: SplitDataset, folder: Path, to_label_ids: np.ndarray,
                        batch_size: int, device: str) -> tuple[list[str], list[str]]:
    split = dataset.split
    rows = np.arange(len(split))
    keys = [split.row(int(row))[0] for row in rows]
    predictions = [folder / "predictions" / f"{key}_labelIds.png" for key in keys]
    truths = [folder / "ground_truth" / f"{key}_gtFine_labelIds.png" for key in keys]
    for path in predictions + truths:
        path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    for images, masks in make_loader(dataset, rows, batch_size, training=False):
        logits = trained.model(to_model_input(images, dataset.normalize, torch.device(device)))
        classes = logits.argmax(dim=1).to(torch.uint8).cpu().numpy()
        for predicted, mask in zip(classes, masks.numpy().astype(np.uint8)):
            Image.fromarray(to_label_ids[predicted]).save(predictions[written])
            Image.fromarray(to_label_ids[mask]).save(truths[written])
            written += 1
    return [str(path) for path in predictions], [str(path) for path in truths]


def run_official(evaluator, predictions: list[str], truths: list[str]) -> dict:
    args = copy.copy(evaluator.args)  # the module's own args object stays untouched
    args.evalInstLevelScore = False  # needs instanceIds images; segq reports no nIoU
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    args.colorized, args.bold, args.nocol = False, "", ""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            return evaluator.evaluateImgLists(predictions, truths, args)
    except SystemExit:  # the script's printError() prints the problem and exits
        lines = printed.getvalue().strip().splitlines() or ["no message"]
        raise DataError(f"the official Cityscapes evaluation failed: {lines[-1]}") from None


def finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)
