"""MLflow runs for a job's trials: the experiment is named after the job (its id), each trial is
a run named after the trial (a saliency trial: a parent run, and one child run per iteration).

A run holds the trial's parameters (`model.*`, `train.*`, `saliency.*`, `arch`; as first logged:
MLflow never changes a logged parameter, and PBT's later values are in the summary), per-epoch
metrics with step = epoch (`train_loss`, `lr`, `images_per_s`, `epoch_time_s`, `val_miou`, ...,
`test_*` at the epoch they were scored with, `best_{target}`), its status (finished, stopped as
KILLED, failed; the tag `segq.status` says which) and its best checkpoint's location (tag
`segq.best_checkpoint`; the file itself as an artifact `checkpoint/` when asked).

Requests go from a thread of their own, so a slow or absent tracking server never holds a trial
or the driver up. The first request that fails ends MLflow recording for the job, with one line
in the job's log: the Redis events remain the record of every number.
"""
from __future__ import annotations

import logging
import os
import queue
import tempfile
import threading
from pathlib import Path

from jobs.results.exports import TRAIN_SCALARS, hyperparameters
from seg_models.metrics import SCORE_NAMES
from workers import storage
from workers.checkpointing import CHECKPOINT_FILE, stored_checkpoint_file
from workers.events import BestEvent, Event, MetricsEvent, TrialEvent

log = logging.getLogger(__name__)
MLFLOW_STATUS = {"finished": "FINISHED", "failed": "FAILED", "stopped": "KILLED"}
CLOSE_TIMEOUT_S = 120.0  # what the driver waits, at the job's end, for requests still queued
# MLflow's client retries a failed request 7 times with a growing backoff (minutes in all): two
# short retries here, and each request waits at most this long.
REQUEST_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class MlflowRuns:
    name = "MLflow"

    def __init__(self, uri: str, job_id: str, upload_checkpoints: bool = False):
        self.uri, self.job_id, self.upload_checkpoints = uri, job_id, upload_checkpoints
        self.pending: queue.Queue = queue.Queue()
        self.failed = False
        self.sender = threading.Thread(target=self.send, name="segq-mlflow", daemon=True)
        self.sender.start()

    def event(self, event: Event) -> None:
        self.pending.put(event)

    def flush(self) -> None:
        pass  # the sender thread sends as events come

    def close(self) -> None:
        self.pending.put(None)
        self.sender.join(CLOSE_TIMEOUT_S)
        if self.sender.is_alive():
            log.warning("segq: MLflow at %s took longer than %.0f s for this job's last records; what was still "
                        "queued is not recorded there", self.uri, CLOSE_TIMEOUT_S)

    def send(self) -> None:
        recorder = None
        while (event := self.pending.get()) is not None:
            if self.failed:
                continue
            try:
                recorder = recorder or RunRecorder(self.uri, self.job_id, self.upload_checkpoints)
                recorder.record(event)
            except Exception as error:  # noqa: BLE001 (the tracking server's failures never reach the job)
                self.failed = True
                log.warning("segq: MLflow at %s failed (%s: %s); this job's runs are not recorded there from "
                            "here on; the Redis events and `segq summary` hold every number", self.uri,
                            type(error).__name__, storage.first_line(error))


class RunRecorder:
    """The requests, on the sender thread: one experiment, a run per trial (and per iteration)."""

    def __init__(self, uri: str, job_id: str, upload_checkpoints: bool):
        for name, value in REQUEST_ENV.items():
            os.environ.setdefault(name, value)
        from mlflow import MlflowClient

        self.client, self.job_id, self.upload_checkpoints = MlflowClient(tracking_uri=uri), job_id, upload_checkpoints
        experiment = self.client.get_experiment_by_name(job_id)
        self.experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(job_id)
        self.runs: dict[str, str] = {}  # run name -> MLflow run id
        self.params: dict[str, dict] = {}  # trial -> its parameters
        self.saliency: set[str] = set()

    def record(self, event: Event) -> None:
        if isinstance(event, TrialEvent):
            self.trial_event(event)
        elif isinstance(event, MetricsEvent):
            self.log_metrics(event.trial, event.iteration, event.epoch, event.ts, split_metrics(event))
        elif isinstance(event, BestEvent) and event.value is not None:
            self.log_metrics(event.trial, event.iteration, event.epoch, event.ts, {f"best_{event.metric}": event.value})

    def trial_event(self, event: TrialEvent) -> None:
        from mlflow.entities import Param

        if event.params is not None and event.trial not in self.params:
            self.params[event.trial] = hyperparameters(event.arch, event.params)
            if "saliency" in event.params:
                self.saliency.add(event.trial)
            params = [Param(name, str(value)) for name, value in self.params[event.trial].items()]
            self.client.log_batch(self.run_id(event.trial), params=params)
        trial_run = self.run_id(event.trial)
        if event.best_checkpoint:
            self.client.set_tag(trial_run, "segq.best_checkpoint", event.best_checkpoint)
            if self.upload_checkpoints:
                self.upload_checkpoint(trial_run, event.best_checkpoint)
        if event.status is not None and event.status.is_final:
            for name, run_id in self.runs.items():
                if name == event.trial or name.startswith(f"{event.trial}/"):
                    self.client.set_tag(run_id, "segq.status", event.status.value)
                    self.client.set_terminated(run_id, MLFLOW_STATUS[event.status.value])

    def log_metrics(self, trial: str, iteration: int, epoch: int, ts: float, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        timestamp = int(ts * 1000)
        metrics = [Metric(name, value, timestamp, epoch) for name, value in values.items()]
        self.client.log_batch(self.run_id(trial, iteration), metrics=metrics)

    def run_id(self, trial: str, iteration: int | None = None) -> str:
        """The run of a trial (a saliency trial's iteration: a child run of it), made when first needed;
        a run an earlier driver of the job made is found by its name."""
        name = f"{trial}/iteration-{iteration}" if iteration and (trial in self.saliency or iteration > 1) else trial
        if name not in self.runs:
            parent = self.run_id(trial) if name != trial else None
            self.runs[name] = self.existing_run(name) or self.new_run(name, trial, parent)
        return self.runs[name]

    def existing_run(self, name: str) -> str | None:
        found = self.client.search_runs([self.experiment_id], filter_string=f"tags.`segq.run` = '{name}'",
                                        max_results=1)
        return found[0].info.run_id if found else None

    def new_run(self, name: str, trial: str, parent: str | None) -> str:
        tags = {"segq.job": self.job_id, "segq.trial": trial, "segq.run": name}
        if parent:
            tags["mlflow.parentRunId"] = parent
        return self.client.create_run(self.experiment_id, tags=tags, run_name=name).info.run_id

    def upload_checkpoint(self, run_id: str, location: str) -> None:
        with tempfile.TemporaryDirectory() as directory:
            local = Path(directory) / CHECKPOINT_FILE
            local.write_bytes(storage.read_bytes(stored_checkpoint_file(location)))
            self.client.log_artifact(run_id, str(local), artifact_path="checkpoint")


def split_metrics(event: MetricsEvent) -> dict[str, float]:
    """A metrics event as MLflow metrics: `train_loss`, `lr`, ..., `val_miou`, `test_miou`, ..."""
    values = event.metrics.model_dump()
    if event.split == "train":
        return {("train_loss" if name == "loss" else name): values[name] for name in TRAIN_SCALARS
                if values.get(name) is not None}
    return {f"{event.split}_{name}": values[name] for name in SCORE_NAMES if values.get(name) is not None}
