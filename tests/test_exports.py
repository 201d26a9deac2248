"""The driver's exports without a cluster: the follower over a real Redis stream, TensorBoard files
read back with TensorBoard's reader, and MLflow against a port where no server answers."""
from __future__ import annotations

import logging
import time

import pytest

from jobs import keys
from jobs.results.exports.follower import ExportFollower
from jobs.results.exports.mlflow_runs import MlflowRuns
from jobs.results.exports.tensorboard_runs import TensorBoardRuns
from cluster.local import free_port
from tests.tracking_checks import tensorboard_scalars
from workers.events import MetricsEvent, TrialEvent, encode_event

TRAIN = {"loss": 1.0, "lr": 0.01, "epoch_time_s": 1.0, "images": 8, "images_per_s": 8.0}


def val(miou: float) -> dict:
    return {"pixel_acc": 0.9, "mean_acc": 0.8, "miou": miou, "mdice": 0.7, "fwiou": 0.6}


def publish(client, job_id: str, *events) -> None:
    for event in events:
        client.xadd(keys.events(job_id), {"data": encode_event(event)})


class Collecting:
    name = "collecting"

    def __init__(self):
        self.events, self.flushes, self.closed = [], 0, False

    def event(self, event):
        self.events.append(event)

    def flush(self):
        self.flushes += 1

    def close(self):
        self.closed = True


class Failing(Collecting):
    name = "failing"

    def event(self, event):
        raise OSError("disk full")


def test_the_follower_hands_every_event_once_in_order_and_drops_a_failing_exporter(redis_client, caplog):
    trial_events = [MetricsEvent(trial="t", epoch=epoch, split="val", metrics=val(epoch / 10)) for epoch in (1, 2, 3)]
    publish(redis_client, "job", *trial_events[:2])
    first, failing = Collecting(), Failing()
    with caplog.at_level(logging.WARNING):
        follower = ExportFollower(redis_client, "job", [first, failing])
        assert follower.step() == 2
        publish(redis_client, "job", trial_events[2])
        follower.finish()
    assert [event.epoch for event in first.events] == [1, 2, 3] and first.closed
    assert follower.exporters == [first] and not failing.closed
    said = [record.message for record in caplog.records if "failing" in record.message]
    assert len(said) == 1 and "disk full" in said[0]
    again = Collecting()
    ExportFollower(redis_client, "job", [again]).finish()  # a restarted driver: nothing is handed twice
    assert again.events == []


def test_a_replayed_epoch_is_in_the_tensorboard_run_once(tmp_path):
    runs = TensorBoardRuns(str(tmp_path))
    runs.event(TrialEvent(trial="t", status="running", arch="unet", params={"train": {"lr": 0.01, "epochs": 3}}))
    for epoch, miou in [(1, 0.1), (2, 0.2), (2, 0.2), (3, 0.3)]:  # epoch 2 again: a restart from epoch 1's checkpoint
        runs.event(MetricsEvent(trial="t", epoch=epoch, split="val", metrics=val(miou)))
        runs.flush()
    runs.event(TrialEvent(trial="t", status="finished"))
    runs.close()
    assert tensorboard_scalars(tmp_path / "t", "val/miou") == [(1, pytest.approx(0.1)), (2, pytest.approx(0.2)),
                                                                (3, pytest.approx(0.3))]


def test_an_absent_mlflow_server_holds_nothing_up_and_is_said_once(caplog):
    runs = MlflowRuns(f"http://127.0.0.1:{free_port()}", "job-offline")
    with caplog.at_level(logging.WARNING):
        started = time.monotonic()
        for epoch in range(1, 201):
            runs.event(MetricsEvent(trial="t", epoch=epoch, split="val", metrics=val(0.5)))
        handed = time.monotonic() - started
        runs.close()
    assert handed < 0.5  # the events only went to the sender's queue
    said = [record.message for record in caplog.records if "MLflow" in record.message]
    assert len(said) == 1 and "not recorded there" in said[0], said
