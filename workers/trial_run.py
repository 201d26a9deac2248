"""What one worker of a trial holds: the trial-level setup, one iteration's training state, and
the progress a checkpoint restores. The first two are complete when built and never reassigned."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from seg_models.base import count_parameters
from seg_models.losses import build_loss, global_median_frequency_weights
from seg_models.registry import build_model
from workers.augment import limit_augmentation_threads
from workers.data import IterationLoader, SplitDataset, build_datasets, open_labeled_splits
from workers.evaluation import EVAL_SPLITS, evaluation_protocol
from workers.placement import gather_ranks, name_nodes
from workers.publisher import MetricsPublisher
from workers.saliency import KeepMasks
from workers.seeding import configure_determinism
from workers.shards import ShardedSplit, read_manifest
from workers.target import Target
from workers.trial_spec import TrainParams, TrialContext, TrialSpec


@dataclass(frozen=True)
class TrialRun:
    """Everything a worker builds once for its trial."""

    trial: TrialSpec
    context: TrialContext
    rank: int
    world_size: int
    device: torch.device
    manifest: dict
    splits: dict[str, ShardedSplit]
    datasets: dict[str, SplitDataset]  # train (augmented), val, test: none of them masked
    model: torch.nn.Module  # as prepared by Ray Train (DDP-wrapped when distributed)
    core: torch.nn.Module  # the model itself
    criterion: torch.nn.Module
    num_params: int
    memory_format: torch.memory_format
    amp_dtype: torch.dtype | None
    pin_memory: bool  # page-locked loader batches, for asynchronous copies to a CUDA device
    target: Target  # what decides this trial's best epoch (see deciding_target)
    publisher: MetricsPublisher | None  # rank 0 only
    channel: Any = None  # what runs the trial: reports and restores go through it (workers.trial_channel)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def lr_scale(self) -> float:
        """What the spec's lr is multiplied by on this world size: world size / the job's minimum
        workers under `lr_scaling: linear` (the global batch grows with the world), else 1."""
        if self.trial.train.lr_scaling == "linear":
            return self.world_size / self.context.min_workers
        return 1.0


def build_trial_run(trial: TrialSpec, context: TrialContext, rank: int, world_size: int, device: torch.device,
                    prepare_model: Callable[[torch.nn.Module], torch.nn.Module]) -> TrialRun:
    """`prepare_model` wraps the model for distributed training (Ray Train's, in a worker)."""
    configure_determinism(trial.train.deterministic)
    # Loader workers augment one core each and the worker itself then only trains; without them the
    # worker augments on the CPUs Ray gave it, which Ray also sized torch's threads to.
    if trial.train.augment != "none":
        limit_augmentation_threads(1 if trial.train.loader_workers else torch.get_num_threads())
    manifest = read_manifest(context.data)
    splits = open_labeled_splits(context.data, manifest, ("train", *EVAL_SPLITS))
    datasets = build_datasets(splits, manifest, trial.train.augment, trial.saliency.fill if trial.saliency else "zero",
                              trial.train.seed)
    # The same initial weights on every rank and every run: they depend on the trial seed alone.
    torch.manual_seed(trial.train.seed)
    built = build_model(trial.arch, manifest["num_classes"], trial.model)
    num_params = count_parameters(built)
    options = device_options(trial.train, device, world_size)
    if rank == 0 and options.ignored:
        print(ignored_notice(options.ignored, device, world_size), flush=True)
    if options.sync_batchnorm:
        built = torch.nn.SyncBatchNorm.convert_sync_batchnorm(built)
    model = prepare_model(built.to(memory_format=options.memory_format))
    ranks = gather_ranks(rank, world_size)  # every rank takes part; rank 0 records one attempt
    publisher = MetricsPublisher(context.redis_url, context.events_stream, trial.name) if rank == 0 else None
    if publisher:
        publisher.trial_event(num_params=num_params, protocol=evaluation_protocol(manifest),
                              ranks=name_nodes(ranks), attempt_started=time.time())
    return TrialRun(trial=trial, context=context, rank=rank, world_size=world_size, device=device,
                    manifest=manifest, splits=splits, datasets=datasets, model=model,
                    core=model.module if hasattr(model, "module") else model,
                    criterion=build_criterion(trial.train, manifest, device), num_params=num_params,
                    memory_format=options.memory_format, amp_dtype=options.amp_dtype,
                    pin_memory=options.pin_memory,
                    target=deciding_target(context.target, splits), publisher=publisher)


def build_criterion(train: TrainParams, manifest: dict, device: torch.device) -> torch.nn.Module:
    weights = train.class_weights
    if train.loss == "weighted_ce" and weights is None:
        weights = global_median_frequency_weights(manifest["splits"]["train"]["class_pixels"])
    return build_loss(train.loss, manifest["num_classes"], manifest["ignore_index"], weights).to(device)


@dataclass(frozen=True)
class DeviceOptions:
    """The spec's GPU-only options as this worker applies them, and those it has to ignore."""

    amp_dtype: torch.dtype | None
    memory_format: torch.memory_format
    sync_batchnorm: bool
    pin_memory: bool
    ignored: tuple[str, ...]


def device_options(train: TrainParams, device: torch.device, world_size: int) -> DeviceOptions:
    """The one place GPU-only options are read: each applies on a CUDA device (SyncBatchNorm also
    needs more than one worker to synchronise with) and is ignored, by name, elsewhere."""
    use_cuda = device.type == "cuda"
    requested = {f"amp: {train.amp}": train.amp != "off", "channels_last: true": train.channels_last,
                 "sync_batchnorm: true": train.sync_batchnorm}
    applied = {"amp": use_cuda and train.amp != "off", "channels_last": use_cuda and train.channels_last,
               "sync_batchnorm": use_cuda and train.sync_batchnorm and world_size > 1}
    ignored = tuple(name for name, wanted in requested.items() if wanted and not applied[name.split(":")[0]])
    return DeviceOptions(
        amp_dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[train.amp] if applied["amp"] else None,
        memory_format=torch.channels_last if applied["channels_last"] else torch.contiguous_format,
        sync_batchnorm=applied["sync_batchnorm"], pin_memory=use_cuda,
        ignored=ignored)


def ignored_notice(ignored: tuple[str, ...], device: torch.device, world_size: int) -> str:
    """One line for the trial's log, whatever the number of ignored options."""
    workers = f"{world_size} worker{'s' if world_size > 1 else ''}"
    return (f"segq: ignoring {', '.join(ignored)}: GPU-only (sync_batchnorm also needs 2 or more workers), and this "
            f"trial runs on {device.type} with {workers}; it trains without them")


def deciding_target(target: Target, splits: dict[str, ShardedSplit]) -> Target:
    """The job's target, or the training loss when the dataset has no split to score the target on."""
    if target.split != "train" and target.split not in splits:
        return Target(metric="train_loss", mode="min")
    return target


@dataclass(frozen=True)
class IterationState:
    """One iteration's training: its images (saliency-masked from iteration 2 on) and a fresh
    optimizer, schedule and scaler (or the checkpoint's, when resuming inside the iteration)."""

    iteration: int
    train_data: SplitDataset
    keep_masks: KeepMasks | None
    loader: IterationLoader  # one per iteration, its workers persistent across the epochs (EpochRows)
    optimizer: torch.optim.Optimizer
    scheduler: object  # an LR scheduler, or None
    scaler: torch.amp.GradScaler


@dataclass
class Progress:
    """What a checkpoint restores: where training stopped and the best epoch of this iteration."""

    iteration: int = 1
    next_epoch: int = 1
    best_metric: float | None = None  # the target's value at best_epoch
    best_epoch: int = 0
    epochs_without_improvement: int = 0

    def record_epoch(self, epoch: int, value: float | None, target: Target) -> None:
        """The one "best" rule (workers.target): the first epoch stands until one beats it strictly."""
        if self.best_epoch == 0 or target.better(value, self.best_metric):
            self.best_metric, self.best_epoch, self.epochs_without_improvement = value, epoch, 0
        else:
            self.epochs_without_improvement += 1
        self.next_epoch = epoch + 1

    def patience_exhausted(self, patience: int | None) -> bool:
        return bool(patience) and self.epochs_without_improvement >= patience
