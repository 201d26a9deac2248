"""TensorBoard event files for a job's trials, in the job's storage: `{storage}/tensorboard/{job}/`
holds one run per trial (a saliency trial: one per iteration, `{trial}/iteration-{n}`).

Each run has, per epoch (the step): `train/loss`, `train/lr`, `train/images_per_s`,
`train/epoch_time_s`, every val score (`val/miou`, `val/mdice`, `val/pixel_acc`, `val/mean_acc`,
`val/fwiou`) and the best-epoch decision (`best/{target}`); the test scores at the epoch they were
scored with (`test/...`); and, once the trial ended, its hyperparameters with its best target value
(TensorBoard's HParams view). Written with tensorboardX. On a storage URI the runs are written
locally and uploaded as each trial ends (and when the driver finishes).

An epoch a restarted trial runs again publishes its events again: a step below the last one written
is written (TensorBoard's reader then drops the later steps, as for any restarted run), the last
step itself is not written twice (the replay of an epoch from the same checkpoint gives the same
numbers).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tensorboardX import SummaryWriter
from tensorboardX.summary import hparams

from jobs.results.exports import TRAIN_SCALARS, hyperparameters
from seg_models.metrics import SCORE_NAMES
from workers import storage
from workers.events import BestEvent, Event, MetricsEvent, SaliencyEvent, TrialEvent



def tensorboard_location(job_storage: str, job_id: str) -> str:
    return storage.join(job_storage, "tensorboard", job_id)


class TensorBoardRuns:
    name = "TensorBoard"

    def __init__(self, location: str):
        self.location = location
        self.staged = storage.is_uri(location)
        self.root = Path(tempfile.mkdtemp(prefix="segq-tensorboard-")) if self.staged else Path(location)
        self.writers: dict[tuple[str, int], SummaryWriter] = {}
        self.params: dict[str, dict] = {}  # trial -> its hyperparameters, flattened
        self.saliency: set[str] = set()  # trials that run iterations: one run per iteration
        self.best: dict[tuple[str, int], BestEvent] = {}  # (trial, iteration) -> its latest decision
        self.touched: set[tuple[str, int]] = set()
        self.last_step: dict[tuple[str, int, str], int] = {}  # (trial, iteration, tag) -> last step written

    def run_dir(self, trial: str, iteration: int) -> str:
        return f"{trial}/iteration-{iteration}" if trial in self.saliency or iteration > 1 else trial

    def writer(self, trial: str, iteration: int) -> SummaryWriter:
        key = (trial, iteration)
        if key not in self.writers:
            self.writers[key] = SummaryWriter(str(self.root / self.run_dir(trial, iteration)), flush_secs=30)
        self.touched.add(key)
        return self.writers[key]

    def scalar(self, trial: str, iteration: int, tag: str, value: float, step: int) -> None:
        key = (trial, iteration, tag)
        if self.last_step.get(key) == step:
            return
        self.last_step[key] = step
        self.writer(trial, iteration).add_scalar(tag, value, step)

    def event(self, event: Event) -> None:
        if isinstance(event, TrialEvent):
            self.trial_event(event)
        elif isinstance(event, MetricsEvent):
            self.scalars(event)
        elif isinstance(event, BestEvent):
            self.best[(event.trial, event.iteration)] = event
            if event.value is not None:
                self.scalar(event.trial, event.iteration, f"best/{event.metric}", event.value, event.epoch)
        elif isinstance(event, SaliencyEvent):
            self.scalar(event.trial, event.iteration, "saliency/kept_fraction", event.kept_fraction, 0)

    def trial_event(self, event: TrialEvent) -> None:
        if event.params is not None:
            self.params[event.trial] = hyperparameters(event.arch, event.params)
            if "saliency" in event.params:
                self.saliency.add(event.trial)
        if event.status is not None and event.status.is_final:
            self.end_trial(event.trial, event.status.value)

    def scalars(self, event: MetricsEvent) -> None:
        values = event.metrics.model_dump()
        names = TRAIN_SCALARS if event.split == "train" else SCORE_NAMES
        for name in names:
            if values.get(name) is not None:
                self.scalar(event.trial, event.iteration, f"{event.split}/{name}", values[name], event.epoch)

    def end_trial(self, trial: str, status: str) -> None:
        """Its runs' hyperparameters and best values (the HParams view), then its files closed."""
        for key in [key for key in self.writers if key[0] == trial]:
            writer = self.writers.pop(key)
            decision = self.best.get(key)
            metrics = ({f"hparams/best_{decision.metric}": decision.value}
                       if decision and decision.value is not None else {})
            for summary in hparams({**self.params.get(trial, {}), "status": status}, metrics):
                writer.file_writer.add_summary(summary)
            for tag, value in metrics.items():
                writer.add_scalar(tag, value, decision.epoch)
            writer.close()
            self.touched.discard(key)
        if self.staged:
            self.upload(trial)

    def flush(self) -> None:
        for key in self.touched:
            self.writers[key].flush()
        self.touched.clear()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        if self.staged:
            for trial in {key[0] for key in self.writers}:
                self.upload(trial)
            shutil.rmtree(self.root, ignore_errors=True)
        self.writers.clear()

    def upload(self, trial: str) -> None:
        local = self.root / trial
        if local.is_dir():
            storage.upload_dir(local, storage.join(self.location, trial))

