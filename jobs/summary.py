"""Trial rows of a job, built from the aggregator's state in Redis (SPEC section 7)."""
from __future__ import annotations

import json

import redis

from jobs import keys
from jobs.records import JobRecord

SCORE_FIELDS = ("miou", "pixel_acc", "mean_acc", "mdice", "fwiou", "per_class_iou")


def trial_facts(client: redis.Redis, job_id: str, trial: str) -> dict:
    return {name: json.loads(value) for name, value in client.hgetall(keys.trial(job_id, trial)).items()}


def trial_metrics(client: redis.Redis, job_id: str, trial: str) -> dict[tuple[int, int, str], dict]:
    raw = client.hgetall(keys.trial_metrics(job_id, trial))
    return {keys.parse_metrics_field(field): json.loads(value) for field, value in raw.items()}


def scores_at(metrics: dict, iteration: int, epoch: int, split: str) -> dict | None:
    found = metrics.get((iteration, epoch, split))
    if found is None:
        return None
    return {name: found.get(name) for name in SCORE_FIELDS}


def trial_rows(client: redis.Redis, job_id: str) -> list[dict]:
    """One row per trial (per trial and iteration for saliency jobs), sorted by trial name."""
    record = JobRecord.load(client, job_id)
    rows = []
    for trial in sorted(client.smembers(keys.trials(job_id))):
        facts = trial_facts(client, job_id, trial)
        metrics = trial_metrics(client, job_id, trial)
        iterations = sorted({iteration for iteration, epoch, _ in metrics if epoch > 0}) or [1]
        for iteration in iterations:
            rows.append(build_row(record, trial, facts, metrics, iteration))
    return rows


def build_row(record: JobRecord, trial: str, facts: dict, metrics: dict, iteration: int) -> dict:
    train_epochs = sorted(epoch for it, epoch, split in metrics if it == iteration and split == "train")
    val = {epoch: m for (it, epoch, split), m in metrics.items() if it == iteration and split == "val"}
    best_epoch = max(val, key=lambda e: (val[e].get("miou") or -1.0, -e)) if val else None
    train_events = [metrics[(iteration, epoch, "train")] for epoch in train_epochs]
    train_time = sum(event["epoch_time_s"] for event in train_events)
    images = sum(event["images"] for event in train_events)
    workers = facts.get("workers", 1)
    gpus = facts.get("gpus_per_worker", 0) or 0
    device_hours = train_time * workers * (gpus if gpus else 1) / 3600
    val_scores = scores_at(metrics, iteration, best_epoch, "val") if best_epoch else None
    row = {
        "job": record.id,
        "trial": trial,
        "arch": facts.get("arch"),
        "params": facts.get("params", {}),
        "status": facts.get("status", "pending"),
        "epochs": len(train_epochs),
        "best_epoch": best_epoch,
        "val": val_scores,
        "test": scores_at(metrics, iteration, best_epoch, "test") if best_epoch else None,
        "train_loss": [metrics[(iteration, epoch, "train")]["loss"] for epoch in train_epochs],
        "val_miou_curve": [val[epoch].get("miou") for epoch in sorted(val)],
        "train_time_s": round(train_time, 3),
        "images_per_s": round(images / train_time, 3) if train_time else None,
        "num_params": facts.get("num_params"),
        "best_checkpoint": facts.get("best_checkpoint"),
        "protocol": facts.get("protocol"),
        "cost": {
            "device": "gpu" if gpus else "cpu",
            "device_hours": round(device_hours, 6),
            "images_per_s": round(images / train_time, 3) if train_time else None,
            "peak_memory_mb": max((event.get("peak_memory_mb", 0) for event in train_events), default=None),
        },
    }
    if record.kind == "saliency":
        step = metrics.get((iteration, 0, "saliency")) or {}
        row["iteration"] = iteration
        row["kept_fraction"] = step.get("kept_fraction")
        row["best_checkpoint"] = step.get("checkpoint")  # the model this iteration ended with
        row["samples"] = step.get("samples")
    planned = ((facts.get("params") or {}).get("train") or {}).get("epochs")
    row["stopped_early"] = bool(planned and row["status"] == "finished" and len(train_epochs) < planned)
    if facts.get("error"):
        row["error"] = facts["error"]
    return row
