"""The exports of one job's driver, built from the job's spec and run on a thread beside its trials."""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from jobs.records import JobRecord
from jobs.results.exports.follower import ExportFollower, Exporter
from jobs.spec import Tracking
from workers import storage

log = logging.getLogger(__name__)


def tracking_of(record: JobRecord) -> Tracking:
    return Tracking.model_validate(record.spec.get("tracking") or {})


def tensorboard_dir(record: JobRecord, job_storage: str) -> str:
    """The job's TensorBoard folder in its storage ("" when the spec turns TensorBoard off)."""
    return storage.join(job_storage, "tensorboard", record.id) if tracking_of(record).tensorboard else ""


def exporters_for(record: JobRecord, job_storage: str) -> list[Exporter]:
    """Ray metrics always, TensorBoard unless turned off, MLflow when a server is named. One that
    cannot start is left out, with one line in the job's log."""
    from jobs.results.exports.mlflow_runs import MlflowRuns
    from jobs.results.exports.ray_metrics import RayMetrics
    from jobs.results.exports.tensorboard_runs import TensorBoardRuns

    tracking = tracking_of(record)
    trials = len(record.trials) or int(record.spec.get("samples") or 0)  # Optuna's: suggested as it runs
    wanted = [("Ray metrics", lambda: RayMetrics(record.id, trials))]
    if tracking.tensorboard:
        wanted.append(("TensorBoard", lambda: TensorBoardRuns(tensorboard_dir(record, job_storage))))
    if tracking.mlflow:
        wanted.append(("MLflow", lambda: MlflowRuns(tracking.mlflow, record.id, tracking.mlflow_checkpoints)))
    exporters = []
    for name, build in wanted:
        try:
            exporters.append(build())
        except Exception as error:  # noqa: BLE001 (an export that cannot start must not stop the job)
            log.warning("segq: %s export not started: %s: %s; the Redis events and `segq summary` hold every "
                        "number", name, type(error).__name__, error)
    return exporters


@contextmanager
def exports_running(client: redis.Redis, record: JobRecord, job_storage: str) -> Iterator[ExportFollower]:
    """The job's events exported while the block runs, and all of them (what came last included)
    once it ends."""
    follower = ExportFollower(client, record.id, [])
    stop = threading.Event()

    def export() -> None:  # the exporters start here, beside the job's start rather than before it
        follower.exporters.extend(exporters_for(record, job_storage))
        follower.follow(stop)

    thread = threading.Thread(target=export, name="segq-exports", daemon=True)
    thread.start()
    try:
        yield follower
    finally:
        stop.set()
        thread.join(60)
        follower.finish()
