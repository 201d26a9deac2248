"""What every Ray Train worker of a trial runs: train, evaluate, publish, checkpoint, resume."""
from __future__ import annotations

import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from seg_models.base import count_parameters, split_outputs
from seg_models.losses import build_loss, class_weights_from_histogram
from seg_models.metrics import ConfusionMatrix
from seg_models.registry import build_model
from workers.augment import Normalize, train_transform
from workers.checkpointing import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from workers.data import SplitDataset, make_loader
from workers.optim import build_optimizer, build_scheduler
from workers.publisher import MetricsPublisher
from workers.shards import ShardedSplit, rank_indices

EVAL_SPLITS = ("val", "test")


@dataclass
class Progress:
    """What a checkpoint restores: where training stopped and the best result so far."""

    next_epoch: int = 1
    best_metric: float | None = None
    best_epoch: int = 0
    epochs_without_improvement: int = 0


def train_loop_per_worker(config: dict) -> None:
    trial = config["trial"]
    train = trial["train"]
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    is_main = rank == 0
    device = ray.train.torch.get_device()
    torch.manual_seed(train["seed"])

    data_root = config["data"]
    splits = {name: ShardedSplit(data_root, name) for name in ("train", *EVAL_SPLITS)
              if name in _labeled_splits(data_root)}
    manifest = splits["train"].manifest
    num_classes, ignore_index = manifest["num_classes"], manifest["ignore_index"]
    height, width = manifest["image_size"]
    normalize = Normalize(manifest["mean"], manifest["std"])
    datasets = {
        name: SplitDataset(split, train_transform(train["augment"], height, width, ignore_index)
                           if name == "train" else None, normalize)
        for name, split in splits.items()
    }

    model = build_model(trial["arch"], num_classes, trial["model"])
    num_params = count_parameters(model)
    if train["sync_batchnorm"] and world_size > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    use_cuda = device.type == "cuda"
    memory_format = torch.channels_last if train["channels_last"] and use_cuda else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    model = ray.train.torch.prepare_model(model)
    core = model.module if hasattr(model, "module") else model

    weights = train["class_weights"]
    if train["loss"] == "weighted_ce" and weights is None:
        weights = class_weights_from_histogram(manifest["splits"]["train"]["class_pixels"])
    criterion = build_loss(train["loss"], num_classes, ignore_index, weights).to(device)
    optimizer = build_optimizer(model.parameters(), train["optimizer"], train["lr"], train["weight_decay"],
                                train["momentum"])
    scheduler = build_scheduler(optimizer, train["scheduler"], train["epochs"], train["warmup_epochs"])
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(train["amp"]) if use_cuda else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    progress = Progress()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint(Path(directory) / CHECKPOINT_FILE, map_location=device)
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        progress = Progress(**state["progress"])

    iteration = config.get("iteration", 1)
    publisher = MetricsPublisher(config["redis_url"], config["job_id"], trial["name"]) if is_main else None
    aux_weight = getattr(core, "aux_weight", 0.0)
    if publisher:
        publisher.trial_event(num_params=num_params, protocol=evaluation_protocol(manifest))

    for epoch in range(progress.next_epoch, train["epochs"] + 1):
        rows = rank_indices(len(splits["train"]), rank, world_size, epoch, train["seed"], shuffle=True, pad=True)
        started = time.perf_counter()
        model.train()
        loss_sum = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of losses x images, images)
        for images, masks in make_loader(datasets["train"], rows, train["batch_size"], training=True):
            images = images.to(device, non_blocking=True).to(memory_format=memory_format)
            masks = masks.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits, aux_logits = split_outputs(model(images))
                loss = criterion(logits.float(), masks)
                if aux_logits is not None:
                    loss = loss + aux_weight * criterion(aux_logits.float(), masks)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += torch.tensor([loss.item() * len(images), len(images)], dtype=torch.float64, device=device)
        if dist.is_initialized():
            dist.all_reduce(loss_sum)
        epoch_time = time.perf_counter() - started
        train_metrics = {
            "loss": float(loss_sum[0] / loss_sum[1]),
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_time_s": epoch_time,
            "images": int(loss_sum[1]),
            "images_per_s": float(loss_sum[1]) / epoch_time,
            "peak_memory_mb": peak_memory_mb(device),
        }

        scores = {name: evaluate(core, datasets[name], rank, world_size, train["batch_size"], device,
                                 num_classes, ignore_index, manifest["class_names"], memory_format)
                  for name in EVAL_SPLITS if name in datasets}
        target = scores["val"]["miou"] if "val" in scores else -train_metrics["loss"]
        target = -1.0 if target is None else target
        improved = progress.best_metric is None or target > progress.best_metric
        if improved:
            progress.best_metric, progress.best_epoch, progress.epochs_without_improvement = target, epoch, 0
        else:
            progress.epochs_without_improvement += 1
        step_scheduler(scheduler, target)
        progress.next_epoch = epoch + 1

        report = {"epoch": epoch, "iteration": iteration, "train_loss": train_metrics["loss"],
                  "best_epoch": progress.best_epoch, "num_params": num_params}
        for name, split_scores in scores.items():
            for metric in ("miou", "mdice", "pixel_acc", "mean_acc", "fwiou"):
                report[f"{name}_{metric}"] = split_scores[metric] if split_scores[metric] is not None else -1.0

        # Publish before the checkpoint is reported: a restart re-runs this epoch and its events
        # replace these (same trial, iteration, epoch, split), so nothing is lost or doubled.
        if publisher:
            publisher.metrics_event("train", epoch, train_metrics, iteration)
            for name, split_scores in scores.items():
                publisher.metrics_event(name, epoch, split_scores, iteration)
        with tempfile.TemporaryDirectory() as directory:
            checkpoint = None
            if is_main:
                save_checkpoint(Path(directory), {
                    "format": "segq-checkpoint",
                    "model": core.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "progress": vars(progress).copy(),
                    "epoch": epoch,
                    "trial": trial,
                    "job_id": config["job_id"],
                    "num_classes": num_classes,
                    "dataset": dataset_facts(manifest, data_root),
                    "metrics": report,
                })
                checkpoint = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(report, checkpoint=checkpoint)
        stop = train["early_stop_patience"] and progress.epochs_without_improvement >= train["early_stop_patience"]
        if stop:
            break
    if publisher:
        publisher.close()


def _labeled_splits(root: str) -> set[str]:
    splits = ShardedSplit(root, "train").manifest["splits"]
    return {name for name, info in splits.items() if info["has_masks"] and info["rows"] > 0}


def dataset_facts(manifest: dict, root: str) -> dict:
    """What predict/eval need to preprocess exactly as in training."""
    return {
        "root": root,
        "source": manifest["source"],
        "image_size": manifest["image_size"],
        "class_names": manifest["class_names"],
        "palette": manifest["palette"],
        "ignore_index": manifest["ignore_index"],
        "label_mode": manifest.get("label_mode"),
        "mean": manifest["mean"],
        "std": manifest["std"],
    }


def evaluation_protocol(manifest: dict) -> dict:
    """How the scores were obtained, so results are never compared across protocols by accident."""
    height, width = manifest["image_size"]
    return {
        "source": manifest["source"],
        "label_mode": manifest.get("label_mode") or "dataset",
        "ignore_index": manifest["ignore_index"],
        "resolution": f"{height}x{width}",
        "inference": "whole-image",
    }


def step_scheduler(scheduler, target: float) -> None:
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(target)
    else:
        scheduler.step()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: SplitDataset, rank: int, world_size: int, batch_size: int,
             device: torch.device, num_classes: int, ignore_index: int, class_names: list[str],
             memory_format=torch.contiguous_format) -> dict:
    """Scores over the whole split: each rank counts its rows, the matrices are summed as integers.

    Runs the unwrapped model: ranks may see a different number of batches, and DDP's forward
    would try to synchronise buffers on each of them.
    """
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index, device=device)
    rows = rank_indices(len(dataset), rank, world_size, epoch=0, seed=0, shuffle=False, pad=False)
    for images, masks in make_loader(dataset, rows, batch_size, training=False):
        images = images.to(device).to(memory_format=memory_format)
        logits = model(images)
        matrix.update(masks.to(device), logits.argmax(dim=1))
    matrix.all_reduce()
    return matrix.compute(class_names)
