"""The one loop that follows a job to its end, for `segq watch` and `segq submit --wait`.

The loop reads the job record and its trial rows from Redis and hands them to a display (the
live table or the progress bar of jobs.watch). Every few seconds it also asks Ray whether the
job's driver still runs: a driver that died without a word (SIGKILL, a lost node) ends the
wait, and the job record is marked failed with the reason.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

import redis

from jobs.aggregator import Aggregator
from jobs.records import JobRecord, JobStatus
from jobs.submit import ray_job_status, reconcile_status
from jobs.summary import trial_rows
from workers.trial_spec import TrialSpec

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

RAY_CHECK_S = 5.0  # how often Ray is asked about the driver: a dead one is noticed well within 30 s
FINAL_TRIAL_STATUSES = ("finished", "failed", "stopped")


@dataclass
class Snapshot:
    record: JobRecord
    rows: list[dict]
    note: str = ""  # why the numbers may be stale


class Display(Protocol):
    def __enter__(self) -> "Display": ...

    def __exit__(self, *exc) -> None: ...

    def show(self, snapshot: Snapshot) -> None: ...

    def say(self, message: str) -> None:
        """One line beside the display (it must not break it)."""


def take_snapshot(client: redis.Redis, job_id: str) -> Snapshot:
    # The record first: if it is final, the events it follows are all in the stream already.
    record = JobRecord.load(client, job_id)
    # drain() only applies what is in the stream (idempotent, safe beside the driver's own
    # aggregator): the rows stay current even when no aggregator runs for this job.
    Aggregator(client, job_id).drain()
    return Snapshot(record, trial_rows(client, job_id))


def refresh(client: redis.Redis, job_id: str, previous: Snapshot) -> Snapshot:
    try:
        return take_snapshot(client, job_id)
    except redis.exceptions.ConnectionError as error:
        return Snapshot(previous.record, previous.rows, note=f"Redis unreachable, retrying ({error})")


class DriverCheck:
    """Asks Ray, at most every `every` seconds, whether the job's driver ended without a word."""

    def __init__(self, client: redis.Redis, jobs: "JobSubmissionClient | None", every: float,
                 say: Callable[[str], None]):
        self.client, self.jobs, self.every, self.say = client, jobs, every, say
        self.due = time.monotonic()
        self.warned = False

    def check(self, snapshot: Snapshot) -> Snapshot:
        record = snapshot.record
        if not self.is_due(record):
            return snapshot
        self.due = time.monotonic() + self.every
        status = ray_job_status(self.jobs, record.ray_submission_id)
        if status is None:
            self.warn_once(f"Ray cannot tell the status of {record.id}: following it from Redis only")
            return snapshot
        try:
            return Snapshot(reconcile_status(self.client, record, status), snapshot.rows, snapshot.note)
        except redis.exceptions.ConnectionError:
            return snapshot  # the next refresh says that Redis is unreachable

    def is_due(self, record: JobRecord) -> bool:
        asked_lately = time.monotonic() < self.due
        return bool(self.jobs and record.ray_submission_id and not record.status.is_final and not asked_lately)

    def warn_once(self, message: str) -> None:
        if not self.warned:
            self.warned = True
            self.say(message)


def follow(client: redis.Redis, job_id: str, display: Display, jobs: "JobSubmissionClient | None" = None,
           interval: float = 1.0, ray_check_s: float = RAY_CHECK_S) -> Snapshot:
    """Show the job every `interval` seconds until its record is final (or Ray says its driver
    ended, which makes it final); returns the last snapshot. Without `jobs`, Redis alone is read."""
    snapshot = take_snapshot(client, job_id)
    driver = DriverCheck(client, jobs, ray_check_s, display.say)
    with display:
        snapshot = driver.check(snapshot)
        display.show(snapshot)
        while not snapshot.record.status.is_final:
            time.sleep(interval)
            snapshot = driver.check(refresh(client, job_id, snapshot))
            display.show(snapshot)
    return snapshot


def outcome(record: JobRecord) -> str | None:
    """None for a finished job, else one line: `job ID failed: <the last line of the reason>`."""
    if record.status == JobStatus.FINISHED:
        return None
    reason = record.error.strip().splitlines()[-1] if record.error.strip() else "no error recorded"
    return f"job {record.id} {record.status.value}: {reason}"


def best_so_far(record: JobRecord, rows: list[dict]) -> tuple[dict, float] | None:
    """The best row by the job's target (ties: the first row), with its value; None before any value."""
    return record.target.best((row, row["best_value"]) for row in rows if row["best_value"] is not None)


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
