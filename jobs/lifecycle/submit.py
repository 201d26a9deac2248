"""Submission: the job record goes to Redis, the driver to the Ray Jobs API under the segq id.

The Redis client and the Ray Jobs client (`ray.job_submission.JobSubmissionClient`) are built by
the control plane and passed in.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from typing import TYPE_CHECKING

import redis

from jobs.lifecycle import queue
from jobs.deployment import Deployment
from jobs.exceptions import ClusterError, JobAlreadyEnded
from jobs.records import JobRecord, JobStatus, new_job_id, set_status
from jobs.spec import JobSpec, Resources
from workers.trial_spec import TrialSpec

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

RAY_FINAL_FAILURES = ("FAILED", "STOPPED")
CANCEL_DEADLINE_S = 15.0  # a cancelled job's driver and trial workers are gone within this


def spec_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def new_record(spec: JobSpec, trials: list[TrialSpec], dashboard_url: str) -> JobRecord:
    job_id = new_job_id(spec.kind)
    return JobRecord(id=job_id, kind=spec.kind, spec=spec.model_dump(mode="json"),
                     trials=[trial.model_dump(mode="json") for trial in trials], name=spec.name or job_id,
                     ray_submission_id=job_id, dashboard_url=f"{dashboard_url}/#/jobs/{job_id}")


def submit(client: redis.Redis, jobs: "JobSubmissionClient", spec: JobSpec, trials: list[TrialSpec],
           deployment: Deployment, dashboard_url: str, priority: int = 0, max_running_jobs: int = 1) -> JobRecord:
    """Record the job with its resolved trials and put it in the queue (one atomic batch), then
    hand its driver to Ray: the driver waits there for the job's turn (jobs.lifecycle.queue)."""
    record = new_record(spec, trials, dashboard_url)
    record.priority, record.max_running_jobs = priority, max_running_jobs
    pipe = client.pipeline()
    record.save(client, pipeline=pipe)
    queue.enqueue(pipe, record.id, priority, record.created_at)
    pipe.execute()
    submit_driver(client, jobs, record, deployment, dashboard_url)
    return record


def submit_driver(client: redis.Redis, jobs: "JobSubmissionClient", record: JobRecord, deployment: Deployment,
                  dashboard_url: str, resume: bool = False) -> None:
    """Hand `python -m jobs.lifecycle.driver JOB` (with --resume: restore the job's Tune run) to the Ray Jobs
    API under the record's current submission id."""
    # The embedded head runs on this machine with this interpreter; a real cluster has segq
    # installed in its image, on PATH as `python`.
    python = sys.executable if deployment.embedded else "python"
    try:
        jobs.submit_job(
            entrypoint=f"{python} -m jobs.lifecycle.driver {record.id}" + (" --resume" if resume else ""),
            submission_id=record.ray_submission_id,
            metadata={"segq_id": record.id, "kind": record.kind, "spec_hash": spec_hash(record.spec),
                      "name": record.name},
            runtime_env={"env_vars": deployment.to_env() | job_env(record)},
        )
    except Exception as error:  # the Jobs client raises RuntimeError/ConnectionError
        queue.release(client, record.id)
        set_status(client, record.id, JobStatus.FAILED, error=f"submission failed: {error}")
        raise ClusterError(f"submitting {record.id} to {dashboard_url} failed: {error}") from None


def job_env(record: JobRecord) -> dict[str, str]:
    """What the job's own resources set in its environment: how long Ray Train waits for a worker group."""
    resources = Resources.model_validate(record.spec.get("resources") or {})
    return {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": f"{resources.start_timeout_s:g}"}


def ray_job_status(jobs: "JobSubmissionClient", submission_id: str) -> str | None:
    """Ray's status of the job (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED); None if Ray cannot tell."""
    try:
        return str(jobs.get_job_status(submission_id).value)
    except Exception:  # the cluster may be gone; the record in Redis is still the truth we have
        return None


def reconcile(client: redis.Redis, record: JobRecord, jobs: "JobSubmissionClient") -> JobRecord:
    """If Ray says the driver ended but the record was never finalised (driver killed), fix the record."""
    if record.status.is_final or not record.ray_submission_id:
        return record
    return reconcile_status(client, record, ray_job_status(jobs, record.ray_submission_id))


def reconcile_status(client: redis.Redis, record: JobRecord, status: str | None) -> JobRecord:
    """The record, marked failed (or cancelled) when Ray's `status` says its driver ended without a word."""
    if record.status.is_final:
        return record
    if status in RAY_FINAL_FAILURES:
        current = JobRecord.load(client, record.id)
        if current.status.is_final:  # the driver recorded its own, better reason before it exited
            return current
        queue.release(client, record.id)
        set_status(client, record.id, JobStatus.FAILED if status == "FAILED" else JobStatus.CANCELLED,
                   error=f"the job's driver ended (Ray status {status}); see `segq jobs logs {record.id}`")
        return JobRecord.load(client, record.id)
    if status == "SUCCEEDED":
        time.sleep(0.5)  # the driver writes the final status just before it exits
        return JobRecord.load(client, record.id)
    return record


def cancel(client: redis.Redis, record: JobRecord, jobs: "JobSubmissionClient",
           deadline_s: float = CANCEL_DEADLINE_S) -> str | None:
    """Cancel a queued or running job: the record says cancelled first (a driver never overwrites
    that), the job leaves the queue, and Ray stops its driver, which takes the job's trial workers
    with it. Waits up to `deadline_s` for Ray to say the driver ended; returns Ray's final status,
    or None if it had not ended by then."""
    if not set_status(client, record.id, JobStatus.CANCELLED, error=f"cancelled with `segq jobs cancel {record.id}`"):
        raise JobAlreadyEnded(f"{record.id} is already {JobRecord.load(client, record.id).status.value}; there is "
                              f"nothing to cancel (`segq jobs show {record.id}` has its record)")
    queue.release(client, record.id)
    try:
        jobs.stop_job(record.ray_submission_id)
    except Exception as error:
        raise ClusterError(f"could not stop {record.id} on Ray: {error}; the record says cancelled, stop its "
                           f"driver with `ray job stop {record.ray_submission_id}` once Ray answers") from None
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        status = ray_job_status(jobs, record.ray_submission_id)
        if status in (*RAY_FINAL_FAILURES, "SUCCEEDED"):
            return status
        time.sleep(0.5)
    return None
