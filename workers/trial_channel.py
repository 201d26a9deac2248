"""The one seam between a trial's train loop and what runs it.

A trial trains in one of two places: in the processes of a Ray Train worker group (DDP over two or
more workers, or one worker when a spec asks for Ray Train's worker restarts), or in its own Tune
trial (one worker, no new process; jobs.execution.tuning.InTrialChannel). The train loop (workers.train_loop)
is the same for both; what differs sits behind this interface:

    rank, world_size, device   where this process trains
    prepare_model(model)       the model as the loop trains it (DDP-wrapped across workers)
    restored()                 the checkpoint.pt this process was restarted from, by whatever runs
                               it (a Ray Train worker group restarted after a failure), or None
    report(metrics, directory) one epoch's report, with the directory holding its checkpoint.pt
                               on rank 0 (None elsewhere); returns once a scheduler let the trial go on
    done()                     the trial's work is all done (its last report, events and files)
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from workers.checkpointing import CHECKPOINT_FILE, load_checkpoint
from workers.reporting import FINAL_REPORT, TRIAL_DONE


class TrialChannel(Protocol):
    rank: int
    world_size: int
    device: torch.device

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module: ...

    def restored(self) -> dict | None: ...

    def report(self, metrics: dict, directory: Path | None) -> None: ...

    def done(self) -> None: ...


class RayTrainChannel:
    """A worker of a Ray Train worker group. `decisions`: a Tune scheduler's channel (None under
    FIFO): after each report but the last, rank 0 waits there until Tune has decided on it, so a
    stopped trial runs no epoch past its stop (the other ranks wait in the next collective)."""

    def __init__(self, decisions=None):
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.decisions = decisions

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def restored(self) -> dict | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return load_checkpoint(Path(directory) / CHECKPOINT_FILE, map_location=self.device)

    def report(self, metrics: dict, directory: Path | None) -> None:
        import ray.train

        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory) if directory else None)
        if self.decisions is not None and self.rank == 0 and not metrics[FINAL_REPORT]:
            self.decisions.get()

    def done(self) -> None:
        import ray.train

        ray.train.report({TRIAL_DONE: True})
