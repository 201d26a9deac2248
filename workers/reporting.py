"""What a trial tells the outside after each epoch: rank 0's events to Redis, and the report (with
its checkpoint) through the trial's channel (workers.trial_channel) to Tune's scheduler.

An epoch's events are published once its checkpoint is stored, and the checkpoint holds them: a
restart (a lost worker, an elastic resize) resumes from the newest stored checkpoint, so it never
trains a published epoch again, and it publishes the restored epoch's events if the stream does not
hold them yet (workers.publisher.MetricsPublisher.publish_unless_sent). Every (epoch, split) is
published once, whatever the world size the trial goes on with."""
from __future__ import annotations

import dataclasses
import resource
import tempfile
from pathlib import Path

import torch

from seg_models.metrics import SCORE_NAMES
from workers.checkpointing import RETENTION_SCORE, BestWeights, checkpoint_state, save_checkpoint, scoring_setup
from workers.events import BestEvent, MetricsEvent, encode_event
from workers.trial_run import IterationState, Progress, TrialRun

# The last report of a trial says so: Tune's schedulers may stop a trial at any report, so the
# driver tells a trial that ran to its end from one a scheduler cut short by this flag.
FINAL_REPORT = "final_report"
# Reported by every rank once the trial's work is all done: after its last report, rank 0's events
# sent (or their drops counted) and a saliency trial's last iteration stored. It carries nothing
# for Tune: the trial function ends the trial on it, while the worker group shuts down.
TRIAL_DONE = "trial_done"


def epoch_events(run: TrialRun, iteration: int, epoch: int, train_metrics: dict, scores: dict,
                 progress: Progress, test_epoch: int | None = None) -> list[str]:
    """Rank 0's events of an epoch, encoded: its training figures, each scored split's scores (the
    test split's at `test_epoch` when it was scored once, with the best epoch's weights) and the
    best-epoch decision after it."""
    trial = run.trial.name
    events = [MetricsEvent(trial=trial, iteration=iteration, epoch=epoch, split="train", metrics=train_metrics)]
    events += [MetricsEvent(trial=trial, iteration=iteration, split=name, metrics=split_scores,
                            epoch=test_epoch if name == "test" and test_epoch else epoch)
               for name, split_scores in scores.items()]
    events.append(BestEvent(trial=trial, iteration=iteration, epoch=epoch, best_epoch=progress.best_epoch,
                            value=progress.best_metric, metric=run.target.metric, mode=run.target.mode))
    return [encode_event(event) for event in events]


def rankable(value: float | None, mode: str) -> float:
    # Reports and the plateau schedule take numbers: a missing score becomes the worst number for
    # the mode, below every real score, 0.0 included.
    if value is not None:
        return value
    return float("-inf") if mode == "max" else float("inf")


def epoch_report(run: TrialRun, state: IterationState, progress: Progress, epoch: int, train_metrics: dict,
                 scores: dict, final: bool) -> dict:
    """The epoch's figures, the job's target metric always among them, the decision, and the score
    Ray Train keeps checkpoints by (workers.checkpointing.RETENTION_SCORE)."""
    mode = run.context.target.mode
    report = {"epoch": epoch, "iteration": state.iteration, "train_loss": train_metrics["loss"],
              "best_epoch": progress.best_epoch, RETENTION_SCORE: float(progress.best_epoch == epoch),
              "num_params": run.num_params, "lr": train_metrics["lr"], FINAL_REPORT: final}
    for name, split_scores in scores.items():
        report.update({f"{name}_{score}": rankable(split_scores[score], mode) for score in SCORE_NAMES})
    report.setdefault(run.context.target.metric, rankable(None, mode))  # a dataset without its split
    if final and run.target == run.context.target:
        # A search algorithm (Optuna) learns a trial's value from its last report: the value of its
        # best epoch, as the summary ranks it. No scheduler decides on a final report.
        report[run.target.metric] = rankable(progress.best_metric, mode)
    return report


def report_with_checkpoint(run: TrialRun, state: IterationState, progress: Progress, best: BestWeights,
                           epoch: int, report: dict, events: list[str]) -> None:
    """The checkpoint also holds the iteration's best weights when they are not its own model, so
    a restart still ends the iteration (and scores its test split) with the model its best epoch
    scored; and the epoch's `events`, which rank 0 publishes once the checkpoint is stored."""
    scoring = scoring_setup(run.world_size, run.trial.train.batch_size)
    with tempfile.TemporaryDirectory() as directory:
        if run.is_main:
            save_checkpoint(Path(directory), checkpoint_state(
                run.core, run.trial, run.context, run.manifest, optimizer=state.optimizer.state_dict(),
                scheduler=state.scheduler.state_dict() if state.scheduler is not None else None,
                scaler=state.scaler.state_dict(), progress=dataclasses.asdict(progress), epoch=epoch, metrics=report,
                best_model=best.checkpoint_entry(epoch), scoring=scoring, lr_scale=run.lr_scale, events=events))
        run.channel.report(report, Path(directory) if run.is_main else None,
                           publish=lambda: run.publisher.publish_encoded(events) if run.publisher else None)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
