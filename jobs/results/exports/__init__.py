"""A job's numbers, exported where people already look, from the job's own event stream:
TensorBoard event files in the job's storage (always, unless the spec turns them off), an MLflow
run per trial (when the spec names a tracking server), and segq's figures as Ray metrics (beside
Ray's own on each node's Prometheus endpoint).

The job's driver runs one `ExportFollower` beside its aggregator. It reads the stream through a
consumer group of its own (`keys.EXPORTS_GROUP`), so exports never take events from an aggregator,
and hands every event, in stream order, to each exporter. The Redis events stay the record of
truth: an exporter that fails says so once in the job's log and never fails or slows a trial.
"""
from __future__ import annotations

TRAIN_SCALARS = ("loss", "lr", "images_per_s", "epoch_time_s")  # of each epoch's training figures


def hyperparameters(arch: str | None, params: dict) -> dict:
    """A trial's parameters, flattened for TensorBoard's HParams view and MLflow: `section.name` ->
    a number, a bool or a string (lists and missing values as text), and `arch`."""
    flat = {"arch": arch or ""}
    for section, values in params.items():
        for name, value in (values or {}).items():
            flat[f"{section}.{name}"] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat
