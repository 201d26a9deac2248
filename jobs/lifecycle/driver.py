"""The entrypoint of every segq job on the cluster: `python -m jobs.lifecycle.driver JOB_ID`.

Runs under the Ray Jobs API, so the job shows in the dashboard; it keeps the job record in Redis
up to date and runs the aggregator for its own job while the trials train. It runs the trials
the job record holds, exactly as they were resolved at submission, and reads where to find Redis
and storage from its own environment (jobs.deployment).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import traceback

import redis

from jobs.results.aggregator import Aggregator
from jobs.results.exports.running import exports_running, tensorboard_dir
from jobs.deployment import Deployment
from jobs.lifecycle.queue import Heartbeat, wait_for_turn
from jobs.records import JobRecord, JobStatus, open_attempt, set_status
from jobs.lifecycle.resume import restorable, restore_trials
from jobs.spec import SPEC_KINDS, Resources
from jobs.execution.sweep import run_trials
from seg_models.exceptions import SegqError, SpecError
from workers.redis_client import open_redis
from workers.trial_spec import TrialSpec

log = logging.getLogger("segq.driver")
FOLLOW_BLOCK_MS = 200


def check_fits_cluster(resources: Resources) -> None:
    import ray

    available = ray.cluster_resources()
    workers, cpus_per_worker = resources.min_workers, resources.cpus_per_worker  # an elastic trial starts with its min
    cpus_needed = resources.trial_cpus
    if cpus_needed > available.get("CPU", 0) + 1e-9:
        raise SpecError(
            f"resources: a trial needs {cpus_needed:g} CPUs ({workers} workers x {cpus_per_worker:g}"
            f"{'' if resources.trains_in_trial else ' + its Tune trial'}) but the cluster has "
            f"{available.get('CPU', 0):g}; lower resources.cpus_per_worker or resources.workers_per_trial"
        )
    gpus_needed = resources.trial_gpus
    if gpus_needed > available.get("GPU", 0) + 1e-9:
        raise SpecError(
            f"resources: a trial needs {gpus_needed:g} GPUs but the cluster has {available.get('GPU', 0):g}"
        )


def run_job(client: redis.Redis, job_id: str, deployment: Deployment, resume: bool = False) -> int:
    """Wait for the job's turn in the queue (jobs.lifecycle.queue), then run it; the heartbeat keeps its
    place and then its slot for as long as this driver lives, and gives both up when it ends."""
    with Heartbeat(client, job_id):
        record = JobRecord.load(client, job_id)
        if not wait_for_turn(client, job_id, record.max_running_jobs, lambda: not cancelled(client, job_id)):
            print(f"segq job {job_id} was cancelled while queued")
            return 0
        if not start_running(client, record, deployment):
            return 0
        open_attempt(client, job_id, "resumed" if resume else "submitted", record.ray_submission_id)
        return run_admitted(client, record, deployment, resume)


def cancelled(client: redis.Redis, job_id: str) -> bool:
    return JobRecord.load(client, job_id).status == JobStatus.CANCELLED


def start_running(client: redis.Redis, record: JobRecord, deployment: Deployment) -> bool:
    """Mark the job running, with where its TensorBoard runs go, unless it was cancelled meanwhile (then False)."""
    return set_status(client, record.id, JobStatus.RUNNING,
                      fields={"tensorboard_dir": tensorboard_dir(record, deployment.storage)})


def run_admitted(client: redis.Redis, record: JobRecord, deployment: Deployment, resume: bool) -> int:
    job_id = record.id
    aggregator = Aggregator(client, job_id)
    stop = threading.Event()
    # Each wait for new events lasts at most FOLLOW_BLOCK_MS: the job's end waits for the last one.
    follower = threading.Thread(target=aggregator.follow, args=(stop, FOLLOW_BLOCK_MS), daemon=True)
    follower.start()
    try:
        import ray

        ray.init(address="auto", logging_level="ERROR")
        with exports_running(client, record, deployment.storage):
            failed = run(record, deployment, resume)
    except Exception as error:
        stop.set()
        follower.join(timeout=30)
        detail = str(error) if isinstance(error, SegqError) else traceback.format_exc()
        set_final_status(client, job_id, JobStatus.FAILED, error=detail)
        print(f"segq job {job_id} failed: {detail}", file=sys.stderr)
        return 1
    stop.set()
    follower.join(timeout=60)
    aggregator.drain()
    return finish(client, job_id, failed)


def set_final_status(client: redis.Redis, job_id: str, status: JobStatus, error: str = "") -> None:
    """The job's final status, unless it was cancelled: `segq jobs cancel` has the last word
    (jobs.records.TRANSITIONS)."""
    set_status(client, job_id, status, error=error)


def finish(client: redis.Redis, job_id: str, failed: list[str]) -> int:
    if failed:
        set_final_status(client, job_id, JobStatus.FAILED, error=f"trials failed: {', '.join(failed)}")
        print(f"segq job {job_id}: {len(failed)} trial(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    set_final_status(client, job_id, JobStatus.FINISHED)
    print(f"segq job {job_id} finished")
    return 0


def run(record: JobRecord, deployment: Deployment, resume: bool = False) -> list[str]:
    """Run the record's resolved trials; the spec was validated at submission and is only read here.
    `resume` restores the job's Tune run instead (jobs.lifecycle.resume): finished trials are not run again."""
    spec = SPEC_KINDS[record.kind].model_validate(record.spec)
    if not record.trials and spec.search != "optuna":  # Optuna suggests its trials as the job runs
        raise SpecError(f"job {record.id}: the record holds no resolved trials; submit the job again")
    trials = [TrialSpec.model_validate(trial) for trial in record.trials]
    resources = Resources.model_validate(record.spec.get("resources", {}))
    check_fits_cluster(resources)
    if resume and restorable(deployment, record.id):
        return restore_trials(record.id, deployment)
    return run_trials(record.id, record.spec["data"], trials, resources, record.target, deployment, spec)


def connect(redis_url: str) -> redis.Redis:
    """Retries ride out a Redis restart of up to about a minute (backoff capped at 2 s)."""
    return open_redis(redis_url, retries=30, decode_responses=True)


def main() -> None:
    if len(sys.argv) not in (2, 3) or sys.argv[2:] not in ([], ["--resume"]):
        raise SystemExit("usage: python -m jobs.lifecycle.driver JOB_ID [--resume]")
    try:
        deployment = Deployment.from_env()
    except SegqError as error:
        raise SystemExit(str(error)) from None
    logging.basicConfig(level=os.environ.get("SEGQ_LOG_LEVEL", "INFO"))
    # Ray stops a job (`segq jobs cancel`) with SIGTERM: end at once, and Ray ends the job's trial
    # processes with it; the record already says why.
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(128 + signum))
    # Tune saves the experiment's state this often: a driver killed right after a trial ended
    # leaves that trial marked finished for `segq jobs resume`.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    sys.exit(run_job(connect(deployment.redis_url), sys.argv[1], deployment, resume=sys.argv[2:] == ["--resume"]))


if __name__ == "__main__":
    main()
