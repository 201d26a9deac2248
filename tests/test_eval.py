"""`segq eval` on a tiny Cityscapes tree: segq's trainId mIoU equals the official evaluation's."""
import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from jobs.preparation.prepare import prepare
from jobs.preparation.sources.cityscapes import cityscapes_dataset, load_cityscapes
from seg_models.registry import build_model
from tests.conftest import run_segq
from tests.test_source_cityscapes import run_inline
from workers.checkpointing import checkpoint_state, save_checkpoint
from workers.shards import read_manifest
from workers.trial_spec import TrainParams, TrialContext, TrialSpec

TREE = {"train": {"aachen": 2}, "val": {"frankfurt": 3, "lindau": 2}}
MODEL = {"base_width": 4, "depth": 2}
# Label ids 0..26: about 40% of the pixels are ignored (255 as train ids), and truck, bus, train,
# motorcycle and bicycle never occur in the ground truth.
LABEL_IDS = 27


def write_tree(root, seed=3):
    """Images and gtFine labelIds in the official layout; label ids constant over 2x2 blocks."""
    rng = np.random.default_rng(seed)
    for split, cities in TREE.items():
        for city, count in cities.items():
            for folder in ("leftImg8bit", "gtFine"):
                (root / folder / split / city).mkdir(parents=True)
            for frame in range(count):
                base = f"{city}_{frame:06d}_000019"
                image = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
                labels = rng.integers(0, LABEL_IDS, (32, 64), dtype=np.uint8).repeat(2, 0).repeat(2, 1)
                Image.fromarray(image).save(root / "leftImg8bit" / split / city / f"{base}_leftImg8bit.png")
                Image.fromarray(labels).save(root / "gtFine" / split / city / f"{base}_gtFine_labelIds.png")


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    write_tree(root)
    return root


def prepare_inline(dataset, out):
    prepare(dataset, load_cityscapes, out, (32, 64), 4, "none", False, run_inline)
    return out


@pytest.fixture(scope="module")
def train_ids_data(cityscapes_root, tmp_path_factory):
    return prepare_inline(cityscapes_dataset(cityscapes_root), tmp_path_factory.mktemp("data") / "train_ids")


@pytest.fixture(scope="module")
def checkpoint(train_ids_data, tmp_path_factory):
    """A random 19-class unet, saved as the train loop saves a trial's checkpoint."""
    torch.manual_seed(0)
    model = build_model("unet", 19, MODEL)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 1.0)  # wide weights: predictions spread over many classes, not one
    trial = TrialSpec(name="000_unet", arch="unet", model=MODEL, train=TrainParams())
    context = TrialContext(job_id="sweep-eval", data=str(train_ids_data), storage=str(train_ids_data),
                           redis_url="redis://unused", events_stream="unused")
    state = checkpoint_state(model, trial, context, read_manifest(train_ids_data), epoch=1)
    return save_checkpoint(tmp_path_factory.mktemp("checkpoint"), state)


def env():
    return {k: v for k, v in os.environ.items() if not k.startswith("SEGQ_")}


def test_segq_and_official_miou_agree(checkpoint, train_ids_data, tmp_path):
    out = tmp_path / "eval"
    result = run_segq("eval", str(checkpoint), "--data", str(train_ids_data), "--official", "--out", str(out),
                      env=env(), timeout=300, check=True)
    scores = json.loads((out / "scores.json").read_text())
    ours, official = scores["scores"], scores["official"]
    assert scores["split"] == "val" and scores["images"] == 5 and official["images"] == 5
    assert 0.0 < ours["miou"] < 1.0 and abs(ours["miou"] - official["miou"]) < 1e-4
    assert set(official["per_class_iou"]) == set(ours["per_class_iou"])
    for name, iou in ours["per_class_iou"].items():
        assert (iou is None) == (official["per_class_iou"][name] is None), name
        assert iou is None or abs(iou - official["per_class_iou"][name]) < 1e-9, name
    # The comparison means something: many classes predicted, some absent from truth and prediction.
    assert sum(1 for iou in ours["per_class_iou"].values() if iou) >= 5
    assert any(iou is None for iou in ours["per_class_iou"].values())
    assert len(list((out / "official" / "predictions").rglob("*_labelIds.png"))) == 5
    # Both mIoUs are printed, side by side.
    assert f"mIoU: segq {ours['miou']:.6f} (19 classes, train_ids)" in result.stdout
    assert f"official averageScoreClasses {official['miou']:.6f} (19 classes)" in result.stdout
    for label in ("mDice", "pixel acc", "mean acc", "FWIoU", "per-class IoU", "traffic light"):
        assert label in result.stdout


def test_checkpoint_and_dataset_classes_must_match(checkpoint, cityscapes_root, tmp_path):
    raw_ids = prepare_inline(cityscapes_dataset(cityscapes_root, label_mode="label_ids"), tmp_path / "label_ids")
    result = run_segq("eval", str(checkpoint), "--data", str(raw_ids), env=env(), timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: class mismatch: {checkpoint} was trained on 19 classes (road, sidewalk, building, wall, ...) "
        f"but {raw_ids} has 34 classes (unlabeled, ego vehicle, rectification border, out of roi, ...); "
        "evaluate on data prepared with the checkpoint's classes")


def test_official_needs_cityscapes_data(checkpoint, cityscapes_root, tmp_path):
    other = dataclasses.replace(cityscapes_dataset(cityscapes_root), source="folder")
    data = prepare_inline(other, tmp_path / "folder")
    result = run_segq("eval", str(checkpoint), "--data", str(data), "--official", env=env(), timeout=300)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: --official: {data} is a 'folder' dataset;")


def test_eval_replays_the_trial_scoring(checkpoint, train_ids_data, tmp_path):
    """The checkpoint says how its trial scored it; eval sums the same ranks' matrices, each from
    the same batches (a lone last image included) on as many threads, and leaves the caller's
    thread count alone."""
    from jobs.checkpoints.evaluate import evaluate_checkpoint
    from jobs.checkpoints.inference import load_trained_model
    from seg_models.metrics import scores_from_matrix
    from workers.augment import Normalize
    from workers.checkpointing import load_checkpoint
    from workers.data import SplitDataset
    from workers.evaluation import count_rank_rows
    from workers.shards import ShardedSplit

    scoring = {"world_size": 2, "batch_size": 2, "threads": 1}
    replayed = save_checkpoint(tmp_path, load_checkpoint(checkpoint) | {"scoring": scoring})
    manifest = read_manifest(train_ids_data)
    dataset = SplitDataset(ShardedSplit(train_ids_data, "val"), None, Normalize(manifest["mean"], manifest["std"]))
    model = load_trained_model(replayed).model
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        matrices = [count_rank_rows(model, dataset, rank, 2, 2, torch.device("cpu"), manifest).matrix
                    for rank in (0, 1)]
        torch.set_num_threads(2)
        result = evaluate_checkpoint(replayed, train_ids_data)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert result.scoring == scoring and result.images == 5
    assert result.scores == scores_from_matrix(matrices[0] + matrices[1], manifest["class_names"])
    assert evaluate_checkpoint(replayed, train_ids_data, batch_size=5).scoring == {**scoring, "world_size": 1,
                                                                                   "batch_size": 5}
    assert evaluate_checkpoint(checkpoint, train_ids_data).scoring == {"world_size": 1, "batch_size": 8, "threads": 1}
