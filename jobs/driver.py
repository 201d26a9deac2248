"""The entrypoint of every segq job on the cluster: `python -m jobs.driver JOB_ID`.

Runs under the Ray Jobs API, so the job shows in the dashboard; it keeps the job record in Redis
up to date and runs the aggregator for its own job while the trials train. It runs the trials
the job record holds, exactly as they were resolved at submission, and reads where to find Redis
and storage from its own environment (jobs.deployment).
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import traceback

import redis

from jobs.aggregator import Aggregator
from jobs.deployment import Deployment
from jobs.records import JobRecord, JobStatus, set_status
from jobs.spec import Resources
from jobs.sweep import TRIAL_DRIVER_CPUS, run_trials
from seg_models.exceptions import SegqError, SpecError
from workers.trial_spec import TrialSpec

log = logging.getLogger("segq.driver")


def check_fits_cluster(resources: Resources) -> None:
    import ray

    available = ray.cluster_resources()
    workers, cpus_per_worker = resources.workers_per_trial, resources.cpus_per_worker
    cpus_needed = TRIAL_DRIVER_CPUS + workers * cpus_per_worker
    if cpus_needed > available.get("CPU", 0) + 1e-9:
        raise SpecError(
            f"resources: a trial needs {cpus_needed:g} CPUs ({workers} workers x {cpus_per_worker:g} + "
            f"{TRIAL_DRIVER_CPUS:g}) but the cluster has {available.get('CPU', 0):g}; "
            "lower resources.cpus_per_worker or resources.workers_per_trial"
        )
    gpus_needed = workers * resources.gpus_per_worker
    if gpus_needed > available.get("GPU", 0) + 1e-9:
        raise SpecError(
            f"resources: a trial needs {gpus_needed:g} GPUs but the cluster has {available.get('GPU', 0):g}"
        )


def run_job(client: redis.Redis, job_id: str, deployment: Deployment) -> int:
    record = JobRecord.load(client, job_id)
    set_status(client, job_id, JobStatus.RUNNING)
    aggregator = Aggregator(client, job_id)
    stop = threading.Event()
    follower = threading.Thread(target=aggregator.follow, args=(stop,), daemon=True)
    follower.start()
    try:
        import ray

        ray.init(address="auto", logging_level="ERROR")
        failed = run(record, deployment)
    except Exception as error:
        stop.set()
        follower.join(timeout=30)
        detail = str(error) if isinstance(error, SegqError) else traceback.format_exc()
        set_status(client, job_id, JobStatus.FAILED, error=detail)
        print(f"segq job {job_id} failed: {detail}", file=sys.stderr)
        return 1
    stop.set()
    follower.join(timeout=60)
    aggregator.drain()
    return finish(client, job_id, failed)


def finish(client: redis.Redis, job_id: str, failed: list[str]) -> int:
    if failed:
        set_status(client, job_id, JobStatus.FAILED, error=f"trials failed: {', '.join(failed)}")
        print(f"segq job {job_id}: {len(failed)} trial(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    set_status(client, job_id, JobStatus.FINISHED)
    print(f"segq job {job_id} finished")
    return 0


def run(record: JobRecord, deployment: Deployment) -> list[str]:
    """Run the record's resolved trials; the spec was validated at submission and is only read here."""
    if not record.trials:
        raise SpecError(f"job {record.id}: the record holds no resolved trials; submit the job again")
    trials = [TrialSpec.model_validate(trial) for trial in record.trials]
    resources = Resources.model_validate(record.spec.get("resources", {}))
    check_fits_cluster(resources)
    return run_trials(record.id, record.spec["data"], trials, resources, record.target, deployment)


def connect(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True, socket_connect_timeout=5)


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m jobs.driver JOB_ID")
    try:
        deployment = Deployment.from_env()
    except SegqError as error:
        raise SystemExit(str(error)) from None
    logging.basicConfig(level=os.environ.get("SEGQ_LOG_LEVEL", "INFO"))
    sys.exit(run_job(connect(deployment.redis_url), sys.argv[1], deployment))


if __name__ == "__main__":
    main()
