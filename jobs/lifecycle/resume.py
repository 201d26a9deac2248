"""`segq jobs resume JOB`: continue a job whose driver died (killed, its node lost, the cluster
restarted with the same storage and Redis).

A new driver goes to Ray under a new submission id (`JOB-r1`, `JOB-r2`, ...) and waits in the queue
like any job; it then restores the job's Tune run (`tune.Tuner.restore`, errored and unfinished
trials resumed): finished trials are not run again, and each interrupted trial's Train run (the same
name and storage) continues from its last checkpoint at the epoch after it. Every run of a driver is
one attempt in the job record (start, end, kind, reason).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import redis

from jobs.lifecycle import queue
from jobs.deployment import Deployment
from jobs.exceptions import JobNotResumable
from jobs.records import JobRecord, JobStatus, set_status
from workers.storage import join as join_location

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient


def tune_experiment_path(storage: str, job_id: str) -> str:
    """Where jobs.execution.sweep.run_trials keeps the job's Tune run."""
    return join_location(storage, "tune", job_id)


def restorable(deployment: Deployment, job_id: str) -> bool:
    """Whether Tune saved enough of the job's run to restore it (not if the driver died first)."""
    from ray import tune

    return tune.Tuner.can_restore(tune_experiment_path(deployment.storage, job_id))


def restore_trials(job_id: str, deployment: Deployment) -> list[str]:
    """Restore and finish the job's Tune run; the names of the trials that failed."""
    from ray import tune

    from jobs.execution.sweep import trial_trainable

    tuner = tune.Tuner.restore(tune_experiment_path(deployment.storage, job_id), trial_trainable(),
                               resume_unfinished=True, resume_errored=True)
    # named as jobs.execution.sweep.run_trials names them
    return [Path(result.path).name for result in tuner.fit() if result.error]


def check_resumable(record: JobRecord) -> None:
    """One line that says why a job cannot be resumed, and what to do instead."""
    if record.status == JobStatus.FINISHED:
        raise JobNotResumable(f"job {record.id} finished; there is nothing to resume (see `segq summary {record.id}`)")
    if record.status == JobStatus.CANCELLED:
        raise JobNotResumable(f"job {record.id} was cancelled; a cancelled job is not resumed, submit it again")
    if not record.status.is_final:
        raise JobNotResumable(f"job {record.id} is {record.status.value} and its driver still runs; "
                              f"wait for it or `segq jobs cancel {record.id}`")


def settle_dead_driver(client: redis.Redis, jobs: "JobSubmissionClient", record: JobRecord) -> JobRecord:
    """The record, marked failed if its driver died without a word: Ray says it ended, or Ray does
    not know it (the cluster was restarted) and its heartbeat stopped."""
    from jobs.lifecycle.submit import ray_job_status, reconcile_status

    status = ray_job_status(jobs, record.ray_submission_id)
    record = reconcile_status(client, record, status)
    if status is None and not record.status.is_final and not queue.heartbeat_fresh(client, record.id):
        queue.release(client, record.id)
        set_status(client, record.id, JobStatus.FAILED, error=f"the job's driver is gone: Ray does not know "
                   f"{record.ray_submission_id} and its heartbeat stopped (the cluster was restarted?)")
        record = JobRecord.load(client, record.id)
    return record


def next_submission_id(record: JobRecord) -> str:
    """JOB-r1 for the first resume, JOB-r2 for the next (Ray keeps every submission id it saw)."""
    _, _, count = record.ray_submission_id.removeprefix(record.id).partition("-r")
    return f"{record.id}-r{int(count or 0) + 1}"


def resume(client: redis.Redis, jobs: "JobSubmissionClient", record: JobRecord, deployment: Deployment,
           dashboard_url: str) -> JobRecord:
    """Queue a new driver for a job whose last driver died or failed; the updated record."""
    from jobs.lifecycle.submit import submit_driver

    record = settle_dead_driver(client, jobs, record)
    check_resumable(record)
    record.ray_submission_id = next_submission_id(record)
    record.dashboard_url = f"{dashboard_url}/#/jobs/{record.ray_submission_id}"
    record.status, record.error, record.ended_at = JobStatus.QUEUED, "", None
    fields = {name: record.to_dict()[name] for name in ("ray_submission_id", "dashboard_url", "error", "ended_at")}
    if not set_status(client, record.id, JobStatus.QUEUED, fields=fields,
                      also=lambda pipe: queue.enqueue(pipe, record.id, record.priority, record.created_at)):
        raise JobNotResumable(f"job {record.id} changed status meanwhile "
                              f"({JobRecord.load(client, record.id).status.value}); see `segq jobs show {record.id}`")
    submit_driver(client, jobs, record, deployment, dashboard_url, resume=True)
    return record
