"""What one worker of a trial holds: the trial-level setup, one iteration's training state, and
the progress a checkpoint restores. The first two are complete when built and never reassigned."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from seg_models.base import count_parameters
from seg_models.losses import build_loss, global_median_frequency_weights
from seg_models.registry import build_model
from workers.data import SplitDataset, build_datasets, open_labeled_splits
from workers.evaluation import EVAL_SPLITS, evaluation_protocol
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
    target: Target  # what decides this trial's best epoch (see deciding_target)
    publisher: MetricsPublisher | None  # rank 0 only

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def build_trial_run(trial: TrialSpec, context: TrialContext, rank: int, world_size: int, device: torch.device,
                    prepare_model: Callable[[torch.nn.Module], torch.nn.Module]) -> TrialRun:
    """`prepare_model` wraps the model for distributed training (Ray Train's, in a worker)."""
    configure_determinism(trial.train.deterministic)
    manifest = read_manifest(context.data)
    splits = open_labeled_splits(context.data, manifest, ("train", *EVAL_SPLITS))
    datasets = build_datasets(splits, manifest, trial.train.augment, trial.saliency.fill if trial.saliency else "zero",
                              trial.train.seed)
    # The same initial weights on every rank and every run: they depend on the trial seed alone.
    torch.manual_seed(trial.train.seed)
    built = build_model(trial.arch, manifest["num_classes"], trial.model)
    num_params = count_parameters(built)
    if trial.train.sync_batchnorm and world_size > 1:
        built = torch.nn.SyncBatchNorm.convert_sync_batchnorm(built)
    use_cuda = device.type == "cuda"
    memory_format = torch.channels_last if trial.train.channels_last and use_cuda else torch.contiguous_format
    model = prepare_model(built.to(memory_format=memory_format))
    publisher = MetricsPublisher(context.redis_url, context.events_stream, trial.name) if rank == 0 else None
    if publisher:
        publisher.trial_event(num_params=num_params, protocol=evaluation_protocol(manifest))
    return TrialRun(trial=trial, context=context, rank=rank, world_size=world_size, device=device,
                    manifest=manifest, splits=splits, datasets=datasets, model=model,
                    core=model.module if hasattr(model, "module") else model,
                    criterion=build_criterion(trial.train, manifest, device), num_params=num_params,
                    memory_format=memory_format, amp_dtype=amp_dtype(trial.train.amp, use_cuda),
                    target=deciding_target(context.target, splits), publisher=publisher)


def build_criterion(train: TrainParams, manifest: dict, device: torch.device) -> torch.nn.Module:
    weights = train.class_weights
    if train.loss == "weighted_ce" and weights is None:
        weights = global_median_frequency_weights(manifest["splits"]["train"]["class_pixels"])
    return build_loss(train.loss, manifest["num_classes"], manifest["ignore_index"], weights).to(device)


def amp_dtype(amp: str, use_cuda: bool) -> torch.dtype | None:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp) if use_cuda else None


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
