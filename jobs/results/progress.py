"""What a followed job looks like at one moment: its record and trial rows read from Redis, the
best row so far, the trials finished and the work planned. Read by the follow loop
(jobs.lifecycle.follow) and drawn by the displays (jobs.results.displays)."""
from __future__ import annotations

from dataclasses import dataclass

import redis

from jobs.records import JobRecord
from jobs.results.aggregator import Aggregator
from jobs.results.summary import deciding_target, trial_rows
from workers.trial_spec import TrialSpec

FINAL_TRIAL_STATUSES = ("finished", "failed", "stopped")


@dataclass
class Snapshot:
    record: JobRecord
    rows: list[dict]
    note: str = ""  # why the numbers may be stale


def take_snapshot(client: redis.Redis, job_id: str) -> Snapshot:
    # The record first: if it is final, the events it follows are all in the stream already.
    record = JobRecord.load(client, job_id)
    # drain() only applies what is in the stream (idempotent, safe beside the driver's own
    # aggregator): the rows stay current even when no aggregator runs for this job.
    Aggregator(client, job_id).drain()
    return Snapshot(record, trial_rows(client, job_id))


def best_so_far(record: JobRecord, rows: list[dict]) -> tuple[dict, float] | None:
    """The best row by the job's target (ties: the first row), with its value; None before any value."""
    target = deciding_target(record.target, rows)
    return target.best((row, row["best_value"]) for row in rows if row["best_value"] is not None)


def finished_trials(rows: list[dict]) -> int:
    return len({row["trial"] for row in rows if row["status"] in FINAL_TRIAL_STATUSES})


def planned_work(record: JobRecord) -> tuple[int, int]:
    """(trials, epochs a trial trains in all) of the record's resolved trials, or of the `samples`
    trials Optuna will suggest (their epochs: the spec's most)."""
    trials = [TrialSpec.model_validate(trial) for trial in record.trials]
    if not trials and record.spec.get("search") == "optuna":
        from jobs.spec import SPEC_KINDS

        spec = SPEC_KINDS[record.kind].model_validate(record.spec)
        return spec.samples, spec.max_epochs(spec.sections()[1])
    return len(trials), max((trial.train.epochs * trial.iterations for trial in trials), default=1)
