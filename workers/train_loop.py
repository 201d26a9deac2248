"""What every process that trains a trial runs, a Ray Train worker or a Tune trial itself (see
workers.trial_channel): train, evaluate, decide the best epoch, publish, checkpoint, resume.

A sweep trial is one iteration. A saliency trial runs `iterations` of them in the same processes
(workers.saliency_iterations prepares and finishes each one).
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
import torch.distributed as dist

from seg_models.base import split_outputs
from workers.checkpointing import BestWeights, load_checkpoint
from workers.data import EpochRows, IterationLoader, SplitDataset, make_loader, to_model_input, to_model_target
from workers.evaluation import broadcast_buffers, evaluate
from workers.optim import apply_hyperparameters, build_optimizer, build_scheduler, rescale_lr, step_scheduler
from workers.reporting import epoch_events, epoch_report, peak_memory_mb, rankable, report_with_checkpoint
from workers.saliency_iterations import finish_iteration, last_finished_iteration, masks_dir, prepare_iteration
from workers.seeding import loader_seed, seed_globals, worker_seed
from workers.shards import rank_indices
from workers.trial_run import IterationState, Progress, TrialRun, build_trial_run
from workers.trial_channel import RayTrainChannel
from workers.trial_spec import StartFrom, TrialContext, TrialSpec


def train_loop_per_worker(config: dict) -> None:
    """A Ray Train worker's loop function (jobs.execution.sweep.trainer_for)."""
    start_from = StartFrom.model_validate(config["start_from"]) if config.get("start_from") else None
    train_trial(TrialSpec.model_validate(config["trial"]), TrialContext.model_validate(config["context"]),
                RayTrainChannel(config.get("decisions"), config.get("run_dir")), start_from)


def train_trial(trial: TrialSpec, context: TrialContext, channel, start_from: StartFrom | None) -> None:
    """The whole trial, every iteration of it, in this process; `channel` is what runs it."""
    run = dataclasses.replace(build_trial_run(trial, context, channel.rank, channel.world_size, channel.device,
                                              channel.prepare_model), channel=channel)
    try:
        train_iterations(run, start_from)
    finally:
        if run.publisher:
            run.publisher.close()
    channel.done()


def train_iterations(run: TrialRun, start_from: StartFrom | None) -> None:
    progress, saved = restore(run, start_from)
    while progress.iteration <= run.trial.iterations:
        resuming = saved is not None and saved["progress"]["iteration"] == progress.iteration
        state = start_iteration(run, progress.iteration, saved if resuming else None)
        try:
            best = BestWeights.from_checkpoint(saved) if resuming else BestWeights()
            trained = train_epochs(run, state, progress, best)
            if not trained and resuming and progress.iteration == run.trial.iterations:
                run.channel.report(saved["metrics"], None)  # its last report was made before the restart: made again
            if run.trial.saliency:
                finish_iteration(run, state, best, last=progress.iteration == run.trial.iterations)
        finally:
            state.loader.close()  # its loader workers and their shared memory, whatever ended the iteration
        progress = Progress(iteration=progress.iteration + 1)


def restore(run: TrialRun, start_from: StartFrom | None) -> tuple[Progress, dict | None]:
    """Where to start: the checkpoint this process was restarted from (a Ray Train worker group
    after a worker failure), else the checkpoint Tune hands the trial (its own after a pause or a
    restart, another trial's when PBT exploits it), or the last finished saliency iteration on disk
    if that is further along (Ray may not have registered the newest checkpoints when a worker died,
    and a restarted trial has none)."""
    saved = run.channel.restored()
    if saved is None and start_from:
        saved = load_checkpoint(start_from.checkpoint, map_location=run.device)
        if start_from.trial != run.trial.name:
            saved = taken_over(saved)
    finished = last_finished_iteration(run)
    if finished and (saved is None or saved["progress"]["iteration"] <= finished):
        run.core.load_state_dict(load_checkpoint(masks_dir(run, finished), map_location=run.device)["model"])
        return Progress(iteration=finished + 1), None
    if saved is None:
        if run.trial.load_from:  # the spec's starting weights (checked at submission to fit)
            run.core.load_state_dict(load_checkpoint(run.trial.load_from, map_location=run.device)["model"])
        return Progress(), None
    if run.publisher and saved.get("events"):  # stored, but the process that stored it may not have sent them
        run.publisher.publish_unless_sent(saved["events"])
    run.core.load_state_dict(saved["model"])
    return Progress(**saved["progress"]), saved


def taken_over(saved: dict) -> dict:
    """Another trial's checkpoint as PBT hands it over: its weights, optimizer, schedule and epoch,
    but not its best epoch: the trial that takes it over decides its own best among the epochs it
    trains from here on (and scores its test split with that epoch's weights)."""
    progress = {**saved["progress"], "best_metric": None, "best_epoch": 0, "epochs_without_improvement": 0}
    return {**saved, "progress": progress, "best_model": None, "events": None}  # the donor's events are its own


def start_iteration(run: TrialRun, iteration: int, saved: dict | None) -> IterationState:
    """Fresh optimizer and schedule per iteration, or the saved ones when resuming inside it."""
    keep_masks = prepare_iteration(run, iteration, resuming=saved is not None)
    train = run.trial.train
    optimizer = build_optimizer(run.model.parameters(), train.optimizer, train.lr * run.lr_scale, train.weight_decay,
                                train.momentum)
    scheduler = build_scheduler(optimizer, train.scheduler, train.epochs, train.warmup_epochs, run.target.mode)
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved.get("scheduler"):
            scheduler.load_state_dict(saved["scheduler"])
        # PBT hands over another trial's state under mutated hyperparameters: written into every group
        apply_hyperparameters(optimizer, scheduler, train, saved["trial"]["train"]["lr"])
        # an elastic trial restarted on another world size: the lr follows it (lr_scaling: linear)
        rescale_lr(optimizer, scheduler, run.lr_scale / saved.get("lr_scale", 1.0))
    scaler = torch.amp.GradScaler("cuda", enabled=run.amp_dtype == torch.float16)
    if saved is not None and saved.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(saved["scaler"])
    train_data = run.datasets["train"].with_keep_masks(keep_masks)
    return IterationState(iteration=iteration, train_data=train_data, keep_masks=keep_masks,
                          loader=iteration_loader(run, train_data, iteration), optimizer=optimizer, scheduler=scheduler,
                          scaler=scaler)


def train_epochs(run: TrialRun, state: IterationState, progress: Progress, best: BestWeights) -> int:
    """Every rank decides the best epoch from the same all-reduced scores (early stopping, the
    plateau schedule and a saliency iteration's best weights need it everywhere); rank 0 publishes it.
    The number of epochs trained (0 when a checkpoint of the iteration's last epoch was restored)."""
    train = run.trial.train
    trained = 0
    for epoch in range(progress.next_epoch, train.epochs + 1):
        trained += 1
        train_metrics = train_one_epoch(run, state, epoch)
        broadcast_buffers(run.core)
        started = time.perf_counter()
        scores = {name: evaluate_split(run, name) for name in epoch_splits(run)}
        train_metrics["eval_time_s"] = time.perf_counter() - started
        value = run.target.value_of({"train": train_metrics, **scores})
        progress.record_epoch(epoch, value, run.target)
        if progress.best_epoch == epoch:
            best.take(run.core, epoch)
        step_scheduler(state.scheduler, rankable(value, run.target.mode))
        final = epoch == train.epochs or progress.patience_exhausted(train.early_stop_patience)
        if final:  # the checkpoint says the iteration is over: a restart from it trains no more epochs
            progress.next_epoch = train.epochs + 1
        test_epoch = None
        if final and "test" in run.datasets and "test" not in scores:
            scores["test"], test_epoch = score_test_once(run, best), best.epoch
        events = (epoch_events(run, state.iteration, epoch, train_metrics, scores, progress, test_epoch)
                  if run.is_main else [])
        report = epoch_report(run, state, progress, epoch, train_metrics, scores, final)
        report_with_checkpoint(run, state, progress, best, epoch, report, events)
        if final:
            break
    return trained


def epoch_splits(run: TrialRun) -> list[str]:
    """Scored every epoch: val, and test only when the target is a test score. Otherwise the test
    split is scored once, by score_test_once: per epoch it would change no reported number."""
    return [name for name in ("val", "test") if name in run.datasets and (name == "val" or run.target.split == "test")]


def evaluate_split(run: TrialRun, name: str) -> dict:
    train = run.trial.train
    return evaluate(run.core, run.datasets[name], run.rank, run.world_size, train.batch_size, run.device,
                    run.manifest, run.memory_format, train.loader_workers, run.pin_memory)


def score_test_once(run: TrialRun, best: BestWeights) -> dict:
    """The test split, scored with the best epoch's weights before the last report (a scheduler
    may end the trial at any report), published as that epoch's test scores."""
    current = {name: value.detach().clone() for name, value in run.core.state_dict().items()}
    run.core.load_state_dict(best.weights)
    scores = evaluate_split(run, "test")
    run.core.load_state_dict(current)
    return scores


def train_one_epoch(run: TrialRun, state: IterationState, epoch: int) -> dict:
    train = run.trial.train
    seed_globals(worker_seed(train.seed, run.rank, state.iteration, epoch))
    started = time.perf_counter()
    run.model.train()
    totals = torch.zeros(2, dtype=torch.float64, device=run.device)  # (sum of loss x images, images)
    normalize = state.train_data.normalize
    for images, masks in state.loader.epoch(epoch):  # this rank's rows, augmented as the epoch draws them
        loss = training_loss(run, to_model_input(images, normalize, run.device, run.memory_format),
                             to_model_target(masks, run.device))
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
        totals += torch.tensor([loss.item() * len(images), len(images)], dtype=torch.float64, device=run.device)
    if dist.is_initialized():
        dist.all_reduce(totals)
    elapsed = time.perf_counter() - started
    group = state.optimizer.param_groups[0]
    return {"loss": float(totals[0] / totals[1]), "lr": group["lr"], "weight_decay": group["weight_decay"],
            "momentum": group.get("momentum"),
            "epoch_time_s": elapsed, "images": int(totals[1]), "images_per_s": float(totals[1]) / elapsed,
            "peak_memory_mb": peak_memory_mb(run.device), "world_size": run.world_size}


def epoch_rows(run: TrialRun, iteration: int, epoch: int) -> np.ndarray:
    train = run.trial.train
    return rank_indices(len(run.splits["train"]), run.rank, run.world_size, epoch, train.seed, shuffle=True,
                        pad=True, iteration=iteration)


def iteration_loader(run: TrialRun, train_data: SplitDataset, iteration: int) -> IterationLoader:
    """The iteration's training loader: its workers (`loader_workers`) persist from epoch to epoch."""
    train = run.trial.train
    rows = EpochRows(lambda epoch: epoch_rows(run, iteration, epoch), train.batch_size)
    return make_loader(train_data, rows, train.batch_size, training=True,
                       seed=loader_seed(train.seed, run.rank, iteration, 0), workers=train.loader_workers,
                       pin_memory=run.pin_memory)


def training_loss(run: TrialRun, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    with torch.autocast(run.device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
        logits, aux_logits = split_outputs(run.model(images))
        loss = run.criterion(logits.float(), masks)
        if aux_logits is not None:
            loss = loss + getattr(run.core, "aux_weight", 0.0) * run.criterion(aux_logits.float(), masks)
    return loss
