"""The one loop that follows a job to its end, for `segq watch` and `segq submit --wait`.

The loop reads the job record and its trial rows from Redis and hands them to a display (the
live table or the progress bar of jobs.results.displays). Every few seconds it also asks Ray whether the
job's driver still runs: a driver that died without a word (SIGKILL, a lost node) ends the
wait, and the job record is marked failed with the reason.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Protocol

import redis

from jobs import keys
from jobs.lifecycle.submit import ray_job_status, reconcile_status
from jobs.records import JobRecord, JobStatus
from jobs.results.progress import Snapshot, take_snapshot

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

RAY_CHECK_S = 5.0  # how often Ray is asked about the driver: a dead one is noticed well within 30 s


class Display(Protocol):
    def __enter__(self) -> "Display": ...

    def __exit__(self, *exc) -> None: ...

    def show(self, snapshot: Snapshot) -> None: ...

    def say(self, message: str) -> None:
        """One line beside the display (it must not break it)."""


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
            pause(client, job_id, interval)
            snapshot = driver.check(refresh(client, job_id, snapshot))
            display.show(snapshot)
    return snapshot


def pause(client: redis.Redis, job_id: str, seconds: float, step: float = 0.1) -> None:
    """Up to `seconds` between two refreshes, cut short once the job's record is final: a job that
    ends is shown (and `--wait` returns) within `step`, not within a whole refresh interval."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(step, left))
        try:
            if JobStatus(client.hget(keys.job(job_id), "status") or "queued").is_final:
                return
        except (redis.exceptions.RedisError, ValueError):
            pass  # Redis away: the refresh after the pause says so


def outcome(record: JobRecord) -> str | None:
    """None for a finished job, else one line: `job ID failed: <the last line of the reason>`."""
    if record.status == JobStatus.FINISHED:
        return None
    reason = record.error.strip().splitlines()[-1] if record.error.strip() else "no error recorded"
    return f"job {record.id} {record.status.value}: {reason}"
