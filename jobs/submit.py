"""Submission: the job record goes to Redis, the driver to the Ray Jobs API under the segq id."""
from __future__ import annotations

import hashlib
import json
import sys
import time

import redis
from pydantic import BaseModel

from cluster.connect import Endpoints, jobs_client
from cluster.exceptions import ClusterError
from jobs.records import JobRecord, JobStatus, new_job_id, set_status

RAY_FINAL_FAILURES = ("FAILED", "STOPPED")


def spec_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def submit(client: redis.Redis, endpoints: Endpoints, kind: str, spec: BaseModel, storage: str | None,
           embedded: bool, cluster_redis_url: str | None = None) -> JobRecord:
    """Record the job, then hand its driver to Ray. `cluster_redis_url` is Redis as the
    cluster's nodes see it, when that differs from this machine's view."""
    job_id = new_job_id(kind)
    spec_data = spec.model_dump(mode="json")
    record = JobRecord(id=job_id, kind=kind, spec=spec_data, name=getattr(spec, "name", "") or job_id,
                       ray_submission_id=job_id,
                       dashboard_url=f"{endpoints.dashboard_url}/#/jobs/{job_id}")
    jobs = jobs_client(endpoints.dashboard_url)
    record.save(client)
    # The embedded head runs on this machine with this interpreter; a real cluster has segq
    # installed in its image, on PATH as `python`.
    python = sys.executable if embedded else "python"
    env_vars = {"SEGQ_REDIS_URL": cluster_redis_url or endpoints.redis_url, "RAY_AUTH_MODE": "token",
                "PYTHONUNBUFFERED": "1"}
    if storage:
        env_vars["SEGQ_STORAGE"] = storage
    try:
        jobs.submit_job(
            entrypoint=f"{python} -m jobs.driver {job_id}",
            submission_id=job_id,
            metadata={"segq_id": job_id, "kind": kind, "spec_hash": spec_hash(spec_data),
                      "name": record.name},
            runtime_env={"env_vars": env_vars},
        )
    except Exception as error:  # the Jobs client raises RuntimeError/ConnectionError
        set_status(client, job_id, JobStatus.FAILED, error=f"submission failed: {error}")
        raise ClusterError(f"submitting {job_id} to {endpoints.dashboard_url} failed: {error}") from None
    return record


def ray_job_status(dashboard_url: str, submission_id: str) -> str | None:
    try:
        return str(jobs_client(dashboard_url).get_job_status(submission_id).value)
    except Exception:  # the cluster may be gone; the record in Redis is still the truth we have
        return None


def reconcile(client: redis.Redis, record: JobRecord, dashboard_url: str) -> JobRecord:
    """If Ray says the driver ended but the record was never finalised (driver killed), fix the record."""
    if record.status.is_final or not record.ray_submission_id:
        return record
    status = ray_job_status(dashboard_url, record.ray_submission_id)
    if status in RAY_FINAL_FAILURES:
        set_status(client, record.id, JobStatus.FAILED if status == "FAILED" else JobStatus.CANCELLED,
                   error=f"the job's driver ended (Ray status {status}); see `segq jobs logs {record.id}`")
        return JobRecord.load(client, record.id)
    if status == "SUCCEEDED":
        time.sleep(0.5)  # the driver writes the final status just before it exits
        return JobRecord.load(client, record.id)
    return record


def cancel(client: redis.Redis, record: JobRecord, dashboard_url: str) -> None:
    if record.status.is_final:
        return
    try:
        jobs_client(dashboard_url).stop_job(record.ray_submission_id)
    except Exception as error:
        raise ClusterError(f"could not stop {record.id} on Ray: {error}") from None
    set_status(client, record.id, JobStatus.CANCELLED)
