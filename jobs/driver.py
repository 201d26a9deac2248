"""The entrypoint of every segq job on the cluster: `python -m jobs.driver JOB_ID`.

Runs under the Ray Jobs API, so the job shows in the dashboard; it keeps the job record in Redis
up to date and runs the aggregator for its own job while the trials train.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import traceback

from cluster.connect import connect_redis
from cluster.exceptions import SegqError, SpecError
from cluster.settings import Settings
from jobs.aggregator import Aggregator
from jobs.records import JobRecord, JobStatus, set_status
from jobs.spec import SPEC_KINDS
from jobs.sweep import TRIAL_DRIVER_CPUS, run_trials

log = logging.getLogger("segq.driver")


def check_fits_cluster(workers: int, cpus_per_worker: float, gpus_per_worker: float) -> None:
    import ray

    available = ray.cluster_resources()
    cpus_needed = TRIAL_DRIVER_CPUS + workers * cpus_per_worker
    if cpus_needed > available.get("CPU", 0) + 1e-9:
        raise SpecError(
            f"resources: a trial needs {cpus_needed:g} CPUs ({workers} workers x {cpus_per_worker:g} + "
            f"{TRIAL_DRIVER_CPUS:g}) but the cluster has {available.get('CPU', 0):g}; "
            "lower resources.cpus_per_worker or resources.workers_per_trial"
        )
    gpus_needed = workers * gpus_per_worker
    if gpus_needed > available.get("GPU", 0) + 1e-9:
        raise SpecError(
            f"resources: a trial needs {gpus_needed:g} GPUs but the cluster has {available.get('GPU', 0):g}"
        )


def run_job(job_id: str, settings: Settings) -> int:
    client = connect_redis(settings.redis_url)
    record = JobRecord.load(client, job_id)
    set_status(client, job_id, JobStatus.RUNNING)
    aggregator = Aggregator(client, job_id)
    stop = threading.Event()
    follower = threading.Thread(target=aggregator.follow, args=(stop,), daemon=True)
    follower.start()
    try:
        import ray

        ray.init(address="auto", logging_level="ERROR")
        failed = run(record, settings)
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
    if failed:
        set_status(client, job_id, JobStatus.FAILED, error=f"trials failed: {', '.join(failed)}")
        print(f"segq job {job_id}: {len(failed)} trial(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    set_status(client, job_id, JobStatus.FINISHED)
    print(f"segq job {job_id} finished")
    return 0


def run(record: JobRecord, settings: Settings) -> list[str]:
    storage = settings.resolved_storage()
    if record.kind not in SPEC_KINDS:
        raise SpecError(f"job {record.id}: unknown kind {record.kind!r}")
    spec = SPEC_KINDS[record.kind].model_validate(record.spec)
    check_fits_cluster(spec.resources.workers_per_trial, spec.resources.cpus_per_worker,
                       spec.resources.gpus_per_worker)
    return run_trials(record.id, spec, settings.redis_url, storage)


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m jobs.driver JOB_ID")
    settings = Settings()
    for name, value in (("SEGQ_REDIS_URL", settings.redis_url), ("SEGQ_STORAGE", settings.storage)):
        if not value:
            raise SystemExit(f"{name} is not set in the job's environment (set it on the cluster's nodes)")
    logging.basicConfig(level=os.environ.get("SEGQ_LOG_LEVEL", "INFO"))
    sys.exit(run_job(sys.argv[1], settings))


if __name__ == "__main__":
    main()
