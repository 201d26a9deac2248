"""The one seam between a trial's train loop and what runs it.

A trial trains in one of two places: in the processes of a Ray Train worker group (DDP over two or
more workers, or one worker when a spec asks for Ray Train's worker restarts), or in its own Tune
trial (one worker, no new process; jobs.execution.tuning.InTrialChannel). The train loop (workers.train_loop)
is the same for both; what differs sits behind this interface:

    rank, world_size, device   where this process trains
    prepare_model(model)       the model as the loop trains it (DDP-wrapped across workers)
    restored()                 the checkpoint.pt this process was restarted from, by whatever runs
                               it (a Ray Train worker group restarted after a failure or a resize):
                               the newest one stored, or None
    report(metrics, directory, publish)
                               one epoch's report, with the directory holding its checkpoint.pt on
                               rank 0 (None elsewhere); calls `publish` once the checkpoint is stored
                               (rank 0 sends the epoch's events then), and returns once a scheduler
                               let the trial go on
    done()                     the trial's work is all done (its last report, events and files)
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch

from workers import storage
from workers.checkpointing import CHECKPOINT_FILE, load_checkpoint
from workers.exceptions import CheckpointError
from workers.reporting import FINAL_REPORT, TRIAL_DONE


class TrialChannel(Protocol):
    rank: int
    world_size: int
    device: torch.device

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module: ...

    def restored(self) -> dict | None: ...

    def report(self, metrics: dict, directory: Path | None, publish: Callable[[], None] = lambda: None) -> None: ...

    def done(self) -> None: ...


class RayTrainChannel:
    """A worker of a Ray Train worker group. `decisions`: a Tune scheduler's channel (None under
    FIFO): after each report but the last, rank 0 waits there until Tune has decided on it, so a
    stopped trial runs no epoch past its stop (the other ranks wait in the next collective).
    `run_dir`: where the Train run stores its checkpoints."""

    def __init__(self, decisions=None, run_dir: str | None = None):
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.decisions, self.run_dir = decisions, run_dir

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def restored(self) -> dict | None:
        """The newest checkpoint the run stored: Ray Train hands a restarted group the newest it
        registered, and a worker lost (or a group resized) right after storing one may have left a
        newer one unregistered, whose epoch was published: training it again would publish it twice."""
        import ray.train

        stored = newest_stored_checkpoint(self.run_dir, self.device) if self.run_dir else None
        if stored is not None:
            return stored
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return load_checkpoint(Path(directory) / CHECKPOINT_FILE, map_location=self.device)

    def report(self, metrics: dict, directory: Path | None, publish: Callable[[], None] = lambda: None) -> None:
        import ray.train

        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory) if directory else None)
        publish()  # the checkpoint is stored: a restart resumes from it, and never trains this epoch again
        if self.decisions is not None and self.rank == 0 and not metrics[FINAL_REPORT]:
            self.decisions.get()

    def done(self) -> None:
        import ray.train

        ray.train.report({TRIAL_DONE: True})


def newest_stored_checkpoint(run_dir: str, device: torch.device) -> dict | None:
    """The newest checkpoint in a Train run's folder (Ray names them checkpoint_<time>), or None;
    one cut off mid-upload does not load, and the one before it is taken."""
    stored = [location for location in storage.list_dirs(run_dir)
              if location.rstrip("/").split("?")[0].rpartition("/")[2].startswith("checkpoint_")]
    for location in sorted(stored, reverse=True):
        try:
            return load_checkpoint(location, map_location=device)
        except CheckpointError:
            continue
    return None
