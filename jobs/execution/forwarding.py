"""The bridge from a trial's Train run to its Tune trial, on the Train controller's side.

Every trial starts a Train controller process, which unpickles this callback and so imports this
module first: it imports only what forwarding needs (jobs.execution.tuning, on the trial's side, imports
Tune's schedulers, and the worker modules behind them)."""
from __future__ import annotations

from ray.train.v2.api.callback import UserCallback

from workers import storage


class ForwardToTune(UserCallback):
    """Runs in the Train controller: rank 0's report and where its checkpoint was stored, to the
    trial function (jobs.execution.tuning.fit_reporting_to_tune), which reports them to Tune with a pointer
    checkpoint. `queue` is the trial's ray.util.queue.Queue."""

    def __init__(self, queue, storage_location: str):
        self.queue, self.storage_location = queue, storage_location

    def after_report(self, run_context, metrics: list[dict], checkpoint) -> None:
        # On URI storage Ray names the checkpoint by bucket and key: passed on as a URI that loads as it is.
        where = (storage.location_of(checkpoint.filesystem, checkpoint.path, self.storage_location)
                 if checkpoint else None)
        self.queue.put({"metrics": dict(metrics[0]), "checkpoint": where})
