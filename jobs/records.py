"""Job records: one Redis hash per job, written through to_dict()/from_dict()."""
from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from enum import Enum

import redis

from jobs.exceptions import NoSuchJob
from jobs import keys
from workers.target import Target


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED)


def new_job_id(kind: str) -> str:
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


@dataclass
class JobRecord:
    id: str
    kind: str
    spec: dict
    trials: list[dict] = field(default_factory=list)  # the resolved TrialSpecs, exactly as they run
    status: JobStatus = JobStatus.QUEUED
    name: str = ""
    ray_submission_id: str = ""
    dashboard_url: str = ""
    error: str = ""
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    priority: int = 0  # higher runs first (jobs.lifecycle.queue)
    max_running_jobs: int = 1  # the job waits while this many jobs run on the cluster
    attempts: list[dict] = field(default_factory=list)  # each run of the driver: start, end, kind, reason
    tensorboard_dir: str = ""  # where its driver writes the trials' TensorBoard runs ("" : none yet)

    @property
    def target(self) -> Target:
        """The job's target metric (default val_miou, max), as the spec gave it."""
        return Target(metric=self.spec.get("metric", "val_miou"), mode=self.spec.get("mode", "max"))

    def to_dict(self) -> dict[str, str]:
        return {
            "id": self.id,
            "kind": self.kind,
            "spec": json.dumps(self.spec, sort_keys=True),
            "trials": json.dumps(self.trials, sort_keys=True),
            "status": self.status.value,
            "name": self.name,
            "ray_submission_id": self.ray_submission_id,
            "dashboard_url": self.dashboard_url,
            "error": self.error,
            "created_at": repr(self.created_at),
            "started_at": "" if self.started_at is None else repr(self.started_at),
            "ended_at": "" if self.ended_at is None else repr(self.ended_at),
            "priority": str(self.priority),
            "max_running_jobs": str(self.max_running_jobs),
            "attempts": json.dumps(self.attempts),
            "tensorboard_dir": self.tensorboard_dir,
        }

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> "JobRecord":
        return cls(
            id=data["id"],
            kind=data["kind"],
            spec=json.loads(data["spec"]),
            trials=json.loads(data.get("trials") or "[]"),
            status=JobStatus(data["status"]),
            name=data.get("name", ""),
            ray_submission_id=data.get("ray_submission_id", ""),
            dashboard_url=data.get("dashboard_url", ""),
            error=data.get("error", ""),
            created_at=float(data["created_at"]),
            started_at=float(data["started_at"]) if data.get("started_at") else None,
            ended_at=float(data["ended_at"]) if data.get("ended_at") else None,
            priority=int(data.get("priority") or 0),
            max_running_jobs=int(data.get("max_running_jobs") or 1),
            attempts=json.loads(data.get("attempts") or "[]"),
            tensorboard_dir=data.get("tensorboard_dir", ""),
        )

    def save(self, client: redis.Redis, pipeline=None) -> None:
        target = pipeline if pipeline is not None else client
        target.hset(keys.job(self.id), mapping=self.to_dict())
        target.zadd(keys.jobs_index(), {self.id: self.created_at})

    @classmethod
    def load(cls, client: redis.Redis, job_id: str) -> "JobRecord":
        data = client.hgetall(keys.job(job_id))
        if not data:
            raise NoSuchJob(job_id)
        return cls.from_dict(data)


# The statuses a job may move to from each. A queued job runs when its driver starts; a running job
# ends finished or failed; a job that has not ended may be cancelled, or fail (its submission or its
# driver died); a failed job may be queued again (`segq jobs resume`). Finished and cancelled never
# change: `segq jobs cancel` has the last word over a driver still finishing, and a finished job
# cannot be cancelled into another status.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED}),
    JobStatus.FINISHED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def set_status(client: redis.Redis, job_id: str, status: JobStatus, error: str = "",
               fields: dict[str, str] | None = None, also=None) -> bool:
    """Move the job to `status` (with its times, `error` and the record's other `fields`) if
    TRANSITIONS allows it from the status the job has now; a final status also closes the open
    attempt, and `also(pipeline)` adds commands that must happen with the change. The status is read
    and written in one WATCH/MULTI transaction: a status another client writes in between (a
    cancel) makes it read again and decide on that. False, with nothing written, when the change
    is not allowed."""
    key = keys.job(job_id)

    def apply(pipe: redis.client.Pipeline) -> bool:
        current, attempts = pipe.hmget(key, "status", "attempts")
        if current is None:
            raise NoSuchJob(job_id)
        if status not in TRANSITIONS[JobStatus(current)]:
            return False
        now = time.time()
        mapping = {**(fields or {}), "status": status.value}
        if status == JobStatus.RUNNING:
            mapping["started_at"] = repr(now)
        if status.is_final:
            mapping["ended_at"] = repr(now)
            mapping["attempts"] = json.dumps(closed(json.loads(attempts or "[]"), now, error.strip().splitlines()[-1]
                                                    if error.strip() else status.value))
        if error:
            mapping["error"] = error[-2000:]
        pipe.multi()
        pipe.hset(key, mapping=mapping)
        if also is not None:
            also(pipe)
        return True

    return client.transaction(apply, key, value_from_callable=True)


def closed(attempts: list[dict], now: float, reason: str) -> list[dict]:
    """The attempts with the open one, if any, ended now for `reason` (finished, the error, why the
    driver ended)."""
    if attempts and attempts[-1]["end"] is None:
        attempts[-1].update(end=now, reason=reason[-500:])
    return attempts


def update_attempts(client: redis.Redis, job_id: str, change) -> None:
    """Apply `change` to the record's attempts list atomically (WATCH, like every read-then-write)."""
    def apply(pipe: redis.client.Pipeline) -> None:
        attempts = json.loads(pipe.hget(keys.job(job_id), "attempts") or "[]")
        change(attempts)
        pipe.multi()
        pipe.hset(keys.job(job_id), "attempts", json.dumps(attempts))

    client.transaction(apply, keys.job(job_id))


def open_attempt(client: redis.Redis, job_id: str, kind: str, submission_id: str) -> None:
    """A run of the job's driver begins (`kind`: submitted or resumed)."""
    update_attempts(client, job_id, lambda attempts: attempts.append(
        {"start": time.time(), "end": None, "kind": kind, "ray_submission_id": submission_id, "reason": ""}))


def list_jobs(client: redis.Redis, limit: int = 50) -> list[JobRecord]:
    ids = client.zrevrange(keys.jobs_index(), 0, limit - 1)
    records = []
    for job_id in ids:
        data = client.hgetall(keys.job(job_id))
        if data:
            records.append(JobRecord.from_dict(data))
    return records


def resolve_job_id(client: redis.Redis, prefix: str) -> str:
    """A full job id from a unique prefix (like git), so users can type less."""
    if client.exists(keys.job(prefix)):
        return prefix
    matches = [job_id for job_id in client.zrange(keys.jobs_index(), 0, -1) if job_id.startswith(prefix)]
    if len(matches) == 1:
        return matches[0]
    raise NoSuchJob(prefix if not matches else f"{prefix} (ambiguous: {', '.join(matches[:5])})")
