"""What every Ray Train worker of a trial runs: train, evaluate, publish, checkpoint, resume.

A sweep trial is one iteration. A saliency trial runs `iterations` of them in the same worker
group: after each one the model scores every training pixel, the least relevant are removed
from the next iteration's images, and the masks and model are stored next to the shards.
"""
from __future__ import annotations

import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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
from workers.saliency import (KeepMasks, foreground_relevance, iteration_dir, random_relevance, read_meta,
                              select_keep, write_meta, write_rank_masks)
from workers.samples import write_sample_grid
from workers.shards import ShardedSplit, rank_indices, read_manifest

EVAL_SPLITS = ("val", "test")
REPORTED_SCORES = ("miou", "mdice", "pixel_acc", "mean_acc", "fwiou")


@dataclass
class Progress:
    """What a checkpoint restores: where training stopped and the best result of this iteration."""

    iteration: int = 1
    next_epoch: int = 1
    best_metric: float | None = None
    best_epoch: int = 0
    epochs_without_improvement: int = 0


@dataclass
class TrialRun:
    """Everything one worker builds for its trial."""

    config: dict
    rank: int
    world_size: int
    device: torch.device
    manifest: dict
    splits: dict[str, ShardedSplit]
    datasets: dict[str, SplitDataset]
    model: torch.nn.Module  # as prepared by Ray Train (DDP-wrapped when distributed)
    core: torch.nn.Module  # the model itself
    criterion: torch.nn.Module
    num_params: int
    memory_format: torch.memory_format
    amp_dtype: torch.dtype | None
    publisher: MetricsPublisher | None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: object = None
    scaler: torch.amp.GradScaler | None = None
    keep_masks: KeepMasks | None = None

    @property
    def trial(self) -> dict:
        return self.config["trial"]

    @property
    def train(self) -> dict:
        return self.config["trial"]["train"]

    @property
    def saliency(self) -> dict | None:
        return self.config["trial"].get("saliency")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def train_loop_per_worker(config: dict) -> None:
    run = setup(config)
    progress, saved = restore(run)
    iterations = run.saliency["iterations"] if run.saliency else 1
    while progress.iteration <= iterations:
        resuming = saved is not None and saved["progress"]["iteration"] == progress.iteration
        start_iteration(run, progress.iteration, saved if resuming else None)
        train_epochs(run, progress)
        if run.saliency:
            finish_saliency_iteration(run, progress.iteration, last=progress.iteration == iterations)
        progress = Progress(iteration=progress.iteration + 1)
    if run.publisher:
        run.publisher.close()


def setup(config: dict) -> TrialRun:
    trial, train = config["trial"], config["trial"]["train"]
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(train["seed"])

    data_root = config["data"]
    manifest = read_manifest(data_root)
    labeled = [name for name, info in manifest["splits"].items() if info["has_masks"] and info["rows"] > 0]
    splits = {name: ShardedSplit(data_root, name, manifest=manifest) for name in ("train", *EVAL_SPLITS)
              if name in labeled}
    height, width = manifest["image_size"]
    ignore_index = manifest["ignore_index"]
    normalize = Normalize(manifest["mean"], manifest["std"])
    fill = trial["saliency"]["fill"] if trial.get("saliency") else "zero"
    datasets = {
        name: SplitDataset(split, train_transform(train["augment"], height, width, ignore_index)
                           if name == "train" else None, normalize, fill=fill)
        for name, split in splits.items()
    }

    model = build_model(trial["arch"], manifest["num_classes"], trial["model"])
    num_params = count_parameters(model)
    if train["sync_batchnorm"] and world_size > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    use_cuda = device.type == "cuda"
    memory_format = torch.channels_last if train["channels_last"] and use_cuda else torch.contiguous_format
    model = ray.train.torch.prepare_model(model.to(memory_format=memory_format))
    core = model.module if hasattr(model, "module") else model

    weights = train["class_weights"]
    if train["loss"] == "weighted_ce" and weights is None:
        weights = class_weights_from_histogram(manifest["splits"]["train"]["class_pixels"])
    criterion = build_loss(train["loss"], manifest["num_classes"], ignore_index, weights).to(device)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(train["amp"]) if use_cuda else None
    publisher = MetricsPublisher(config["redis_url"], config["job_id"], trial["name"]) if rank == 0 else None
    if publisher:
        publisher.trial_event(num_params=num_params, protocol=evaluation_protocol(manifest))
    return TrialRun(config=config, rank=rank, world_size=world_size, device=device, manifest=manifest,
                    splits=splits, datasets=datasets, model=model, core=core, criterion=criterion,
                    num_params=num_params, memory_format=memory_format, amp_dtype=amp_dtype, publisher=publisher)


def restore(run: TrialRun) -> tuple[Progress, dict | None]:
    """Where to start: Ray Train's last checkpoint of this trial (after a worker failure), or the
    last finished saliency iteration on disk if that is further along (Ray may not have
    registered the newest checkpoints when a worker died, and a restarted trial has none)."""
    saved = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            saved = load_checkpoint(Path(directory) / CHECKPOINT_FILE, map_location=run.device)
    finished = last_finished_iteration(run)
    if finished and (saved is None or saved["progress"]["iteration"] <= finished):
        state = load_checkpoint(masks_dir(run, finished), map_location=run.device)
        run.core.load_state_dict(state["model"])
        return Progress(iteration=finished + 1), None
    if saved is None:
        return Progress(), None
    run.core.load_state_dict(saved["model"])
    return Progress(**saved["progress"]), saved


def last_finished_iteration(run: TrialRun) -> int:
    """The highest saliency iteration whose model, masks and meta.json are all stored (0: none)."""
    if not run.saliency:
        return 0
    finished = 0
    for iteration in range(1, run.saliency["iterations"] + 1):
        if read_meta(masks_dir(run, iteration)) is None:
            break
        finished = iteration
    return finished


def start_iteration(run: TrialRun, iteration: int, saved: dict | None) -> None:
    """Fresh optimizer and schedule per iteration (or the saved ones when resuming inside it);
    from the second saliency iteration on, the training images carry the previous keep-masks."""
    train = run.train
    if run.saliency and iteration > 1:
        height, width = run.manifest["image_size"]
        run.keep_masks = KeepMasks(masks_dir(run, iteration - 1), height, width)
        run.datasets["train"].keep_masks = run.keep_masks
        if run.saliency["reinit"] and saved is None:
            torch.manual_seed(train["seed"] + iteration)
            fresh = build_model(run.trial["arch"], run.manifest["num_classes"], run.trial["model"])
            run.core.load_state_dict(fresh.state_dict())
    run.optimizer = build_optimizer(run.model.parameters(), train["optimizer"], train["lr"], train["weight_decay"],
                                    train["momentum"])
    run.scheduler = build_scheduler(run.optimizer, train["scheduler"], train["epochs"], train["warmup_epochs"])
    run.scaler = torch.amp.GradScaler("cuda", enabled=run.amp_dtype == torch.float16)
    if saved is not None:
        run.optimizer.load_state_dict(saved["optimizer"])
        if run.scheduler is not None and saved.get("scheduler"):
            run.scheduler.load_state_dict(saved["scheduler"])


def train_epochs(run: TrialRun, progress: Progress) -> None:
    train = run.train
    iteration = progress.iteration
    for epoch in range(progress.next_epoch, train["epochs"] + 1):
        train_metrics = train_one_epoch(run, epoch, iteration)
        broadcast_buffers(run.core)
        scores = {name: evaluate(run.core, run.datasets[name], run.rank, run.world_size, train["batch_size"],
                                 run.device, run.manifest, run.memory_format)
                  for name in EVAL_SPLITS if name in run.datasets}
        target = scores["val"]["miou"] if "val" in scores else -train_metrics["loss"]
        target = -1.0 if target is None else target
        if progress.best_metric is None or target > progress.best_metric:
            progress.best_metric, progress.best_epoch, progress.epochs_without_improvement = target, epoch, 0
        else:
            progress.epochs_without_improvement += 1
        step_scheduler(run.scheduler, target)
        progress.next_epoch = epoch + 1

        report = {"epoch": epoch, "iteration": iteration, "train_loss": train_metrics["loss"],
                  "best_epoch": progress.best_epoch, "num_params": run.num_params}
        for name, split_scores in scores.items():
            for metric in REPORTED_SCORES:
                value = split_scores[metric]
                report[f"{name}_{metric}"] = value if value is not None else -1.0
        # Publish before the checkpoint is reported: a restart re-runs this epoch and its events
        # replace these (same trial, iteration, epoch, split), so nothing is lost or doubled.
        if run.publisher:
            run.publisher.metrics_event("train", epoch, train_metrics, iteration)
            for name, split_scores in scores.items():
                run.publisher.metrics_event(name, epoch, split_scores, iteration)
        report_with_checkpoint(run, progress, epoch, report)
        patience = train["early_stop_patience"]
        if patience and progress.epochs_without_improvement >= patience:
            progress.next_epoch = train["epochs"] + 1
            break


def train_one_epoch(run: TrialRun, epoch: int, iteration: int) -> dict:
    train = run.train
    rows = rank_indices(len(run.splits["train"]), run.rank, run.world_size, epoch + 1000 * iteration,
                        train["seed"], shuffle=True, pad=True)
    started = time.perf_counter()
    run.model.train()
    totals = torch.zeros(2, dtype=torch.float64, device=run.device)  # (sum of loss x images, images)
    aux_weight = getattr(run.core, "aux_weight", 0.0)
    for images, masks in make_loader(run.datasets["train"], rows, train["batch_size"], training=True):
        images = images.to(run.device, non_blocking=True).to(memory_format=run.memory_format)
        masks = masks.to(run.device, non_blocking=True)
        with torch.autocast(run.device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
            logits, aux_logits = split_outputs(run.model(images))
            loss = run.criterion(logits.float(), masks)
            if aux_logits is not None:
                loss = loss + aux_weight * run.criterion(aux_logits.float(), masks)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        totals += torch.tensor([loss.item() * len(images), len(images)], dtype=torch.float64, device=run.device)
    if dist.is_initialized():
        dist.all_reduce(totals)
    elapsed = time.perf_counter() - started
    return {
        "loss": float(totals[0] / totals[1]),
        "lr": run.optimizer.param_groups[0]["lr"],
        "epoch_time_s": elapsed,
        "images": int(totals[1]),
        "images_per_s": float(totals[1]) / elapsed,
        "peak_memory_mb": peak_memory_mb(run.device),
    }


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics). Each rank's last training
    forward updated them with its own batch; without this, ranks would evaluate slightly
    different models, and none of them exactly the one rank 0 checkpoints."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def report_with_checkpoint(run: TrialRun, progress: Progress, epoch: int, report: dict) -> None:
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if run.is_main:
            save_checkpoint(Path(directory), checkpoint_state(run, progress, epoch, report))
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(report, checkpoint=checkpoint)


def checkpoint_state(run: TrialRun, progress: Progress, epoch: int, report: dict) -> dict:
    return {
        "format": "segq-checkpoint",
        "model": run.core.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "progress": vars(progress).copy(),
        "epoch": epoch,
        "trial": run.trial,
        "job_id": run.config["job_id"],
        "num_classes": run.manifest["num_classes"],
        "dataset": dataset_facts(run.manifest, run.config["data"]),
        "metrics": report,
    }


def masks_dir(run: TrialRun, iteration: int) -> Path:
    return iteration_dir(run.config["data"], run.config["job_id"], run.trial["name"], iteration)


def finish_saliency_iteration(run: TrialRun, iteration: int, last: bool) -> None:
    """Store the iteration's model, derive the next keep-masks (all ranks share the rows), record."""
    directory = masks_dir(run, iteration)
    directory.mkdir(parents=True, exist_ok=True)
    if not last:
        compute_keep_masks(run, iteration, directory)
    if dist.is_initialized():
        dist.barrier()
    if not run.is_main:
        return
    model_path = save_checkpoint(directory, {
        "format": "segq-checkpoint", "model": run.core.state_dict(), "trial": run.trial,
        "job_id": run.config["job_id"], "num_classes": run.manifest["num_classes"],
        "dataset": dataset_facts(run.manifest, run.config["data"]), "iteration": iteration,
    })
    height, width = run.manifest["image_size"]
    trained_fraction = run.keep_masks.kept_fraction() if run.keep_masks is not None else 1.0
    next_fraction = KeepMasks(directory, height, width).kept_fraction() if not last else None
    grid = write_sample_grid(run.datasets["train"], directory / "samples.png", run.keep_masks,
                             title=f"{run.trial['name']} iteration {iteration}: kept {trained_fraction:.1%}")
    meta = {
        "iteration": iteration,
        "kept_fraction": trained_fraction,
        "next_kept_fraction": next_fraction,
        "saliency": run.saliency,
        "checkpoint": str(model_path),
        "samples": str(grid),
        "trial": run.trial,
        "rows": len(run.splits["train"]),
    }
    write_meta(directory, meta)
    run.publisher.metrics_event("saliency", 0, {k: meta[k] for k in ("kept_fraction", "next_kept_fraction",
                                                                      "checkpoint", "samples")}, iteration)


@torch.no_grad()
def compute_keep_masks(run: TrialRun, iteration: int, directory: Path) -> None:
    """This rank's share of the training rows: relevance of each still-kept pixel, keep the top P%."""
    saliency = run.saliency
    background = saliency["background_classes"] or run.manifest.get("background_classes") or [0]
    height, width = run.manifest["image_size"]
    plain = SplitDataset(run.splits["train"], None, run.datasets["train"].normalize, run.keep_masks,
                         fill=saliency["fill"])  # the images as this iteration trained on them
    rows = rank_indices(len(plain), run.rank, run.world_size, epoch=0, seed=0, shuffle=False, pad=False)
    run.core.eval()
    keeps = []
    for start in range(0, len(rows), run.train["batch_size"]):
        batch_rows = rows[start:start + run.train["batch_size"]].tolist()
        images = torch.stack([plain[row][0] for row in batch_rows]).to(run.device).to(memory_format=run.memory_format)
        if saliency["relevance"] == "random":
            relevance = random_relevance(batch_rows, height * width, run.train["seed"], iteration, run.device)
        else:
            relevance = foreground_relevance(run.core(images), background).reshape(len(batch_rows), -1)
        if run.keep_masks is None:
            kept = torch.ones(len(batch_rows), height * width, dtype=torch.bool, device=run.device)
        else:
            kept = torch.from_numpy(np.stack([run.keep_masks.get(row) for row in batch_rows])).to(run.device)
            kept = kept.reshape(len(batch_rows), -1).bool()
        selected = select_keep(relevance, kept, saliency["keep_percent"])
        keeps.append(selected.reshape(-1, height, width).cpu().numpy())
    stacked = np.concatenate(keeps) if keeps else np.zeros((0, height, width), bool)
    write_rank_masks(directory, run.rank, rows, stacked)


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
             device: torch.device, manifest: dict, memory_format=torch.contiguous_format) -> dict:
    """Scores over the whole split: each rank counts its rows, the matrices are summed as integers.

    Runs the unwrapped model: ranks may see a different number of batches, and DDP's forward
    would try to synchronise buffers on each of them. Evaluation images are never masked.
    """
    model.eval()
    matrix = ConfusionMatrix(manifest["num_classes"], manifest["ignore_index"], device=device)
    rows = rank_indices(len(dataset), rank, world_size, epoch=0, seed=0, shuffle=False, pad=False)
    for images, masks in make_loader(dataset, rows, batch_size, training=False):
        logits = model(images.to(device).to(memory_format=memory_format))
        matrix.update(masks.to(device), logits.argmax(dim=1))
    matrix.all_reduce()
    return matrix.compute(manifest["class_names"])
