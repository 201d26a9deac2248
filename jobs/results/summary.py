"""Trial rows of a job, built from the aggregator's state in Redis.

A row's best epoch is rank 0's published decision (workers.target decides it once); the row's
val and test scores are those of that epoch.
"""
from __future__ import annotations

import json
from collections.abc import Iterator

import redis

from jobs import keys
from jobs.results.aggregator import latest_decisions, parse_measurements
from jobs.records import JobRecord
from seg_models.metrics import SCORE_NAMES
from workers.target import Target

ROW_SCORES = (*SCORE_NAMES, "per_class_iou")
# Trials whose two hashes one pipelined read fetches: one round trip per this many trials, not two per
# trial (a watch of a job of 1,000 trials on a Redis 1 ms away would spend 2 s a refresh waiting), and a
# reply of a bounded size (a trial's metrics of 50 epochs are about 150 kB).
TRIALS_PER_READ = 50


def trial_facts(client: redis.Redis, job_id: str, trial: str) -> dict:
    return parse_facts(client.hgetall(keys.trial(job_id, trial)))


def parse_facts(stored: dict[str, str]) -> dict:
    return {name: json.loads(value) for name, value in stored.items()}


def trial_metrics(client: redis.Redis, job_id: str, trial: str) -> dict[tuple[int, int, str], dict]:
    return parse_measurements(client.hgetall(keys.trial_metrics(job_id, trial)))


def scores_at(measurements: dict, iteration: int, epoch: int | None, split: str) -> dict | None:
    found = measurements.get((iteration, epoch, split)) if epoch else None
    if found is None:
        return None
    return {name: found.get(name) for name in ROW_SCORES}


def trial_rows(client: redis.Redis, job_id: str) -> list[dict]:
    """One row per trial (per trial and iteration for saliency jobs), sorted by trial name."""
    record = JobRecord.load(client, job_id)
    rows = []
    for trial, facts, measurements in trial_states(client, job_id, sorted(client.smembers(keys.trials(job_id)))):
        decisions = latest_decisions(measurements)
        iterations = sorted({iteration for iteration, epoch, _ in measurements if epoch > 0}) or [1]
        for iteration in iterations:
            rows.append(build_row(record, trial, facts, measurements, decisions.get(iteration), iteration))
    mark_leader(rows, record.target)
    return rows


def trial_states(client: redis.Redis, job_id: str, trials: list[str]) -> Iterator[tuple[str, dict, dict]]:
    """(trial, facts, measurements) of each trial in turn, read TRIALS_PER_READ trials at a time."""
    for start in range(0, len(trials), TRIALS_PER_READ):
        chunk = trials[start:start + TRIALS_PER_READ]
        pipe = client.pipeline(transaction=False)
        for trial in chunk:
            pipe.hgetall(keys.trial(job_id, trial))
            pipe.hgetall(keys.trial_metrics(job_id, trial))
        stored = pipe.execute()
        for trial, facts, measurements in zip(chunk, stored[0::2], stored[1::2]):
            yield trial, parse_facts(facts), parse_measurements(measurements)


def deciding_target(job_target: Target, rows: list[dict]) -> Target:
    """What the job's trials decide their best epochs on, as their decisions name it: the job's
    target, or the training loss where the dataset has no split to score the target on
    (workers.trial_run.deciding_target; one dataset per job, so one target); before any decision,
    the job's target. Everything that ranks a job's trials ranks by this."""
    return next((Target(**row["target"]) for row in rows if row.get("target")), job_target)


def mark_leader(rows: list[dict], job_target: Target) -> None:
    """`best`: whether the row is the job's best so far by its deciding target (ties: the first)."""
    target = deciding_target(job_target, rows)
    leader = target.best((index, row["best_value"]) for index, row in enumerate(rows) if row["best_value"] is not None)
    for index, row in enumerate(rows):
        row["best"] = leader is not None and index == leader[0]


def build_row(record: JobRecord, trial: str, facts: dict, measurements: dict, decision: dict | None,
              iteration: int) -> dict:
    train_epochs = sorted(epoch for it, epoch, split in measurements if it == iteration and split == "train")
    train_events = [measurements[(iteration, epoch, "train")] for epoch in train_epochs]
    val = {epoch: m for (it, epoch, split), m in measurements.items() if it == iteration and split == "val"}
    best_epoch = decision["best_epoch"] if decision else None
    row = {
        "job": record.id,
        "trial": trial,
        "arch": facts.get("arch"),
        "params": facts.get("params", {}),
        "status": facts.get("status", "pending"),
        "epochs": len(train_epochs),
        "best_epoch": best_epoch,
        "best_value": decision["value"] if decision else None,
        "target": {"metric": decision["metric"], "mode": decision["mode"]} if decision else None,
        "val": scores_at(measurements, iteration, best_epoch, "val"),
        "test": scores_at(measurements, iteration, best_epoch, "test"),
        "train_loss": [event["loss"] for event in train_events],
        "world_sizes": [event.get("world_size") for event in train_events],  # per epoch (elastic trials vary)
        "workers": world_size_changes(train_events),
        "val_miou_curve": [val[epoch].get("miou") for epoch in sorted(val)],
        "num_params": facts.get("num_params"),
        "best_checkpoint": facts.get("best_checkpoint"),
        "protocol": facts.get("protocol"),
        "attempts": len(facts.get("attempts") or {}),  # worker group starts: 1 + restarts after failures
        "nodes": [rank.get("node") for rank in facts.get("ranks") or []],  # the node of each rank, latest attempt
        "dropped_events": facts.get("dropped_events", 0),
    }
    row |= cost_fields(facts, train_events)
    if record.kind == "saliency":
        row |= saliency_fields(measurements.get((iteration, 0, keys.SALIENCY_SPLIT)) or {}, iteration)
    row |= tuning_fields(facts, measurements, iteration, decision)
    planned = ((facts.get("params") or {}).get("train") or {}).get("epochs")
    row["stopped_early"] = bool(planned and row["status"] == "finished" and len(train_epochs) < planned)
    if facts.get("error"):
        row["error"] = facts["error"]
    return row


def cost_fields(facts: dict, train_events: list[dict]) -> dict:
    """Training time, throughput and device-hours: the GPUs and, apart, the CPUs the trial held,
    each times the wall time of its runs (start-up, epochs and evaluation); an elastic trial's
    (elastic_hours) count each epoch at the world size it ran on. `device_hours` is the GPU-hours
    of a trial on GPUs, the CPU-hours of one on CPUs."""
    train_time = sum(event["epoch_time_s"] for event in train_events)
    images = sum(event["images"] for event in train_events)
    wall_time = sum(segment["seconds"] for segment in (facts.get("run_segments") or {}).values())
    gpus, cpus = facts.get("gpus") or 0, facts.get("cpus") or 0
    gpu_hours, cpu_hours = round(wall_time * gpus / 3600, 6), round(wall_time * cpus / 3600, 6)
    if facts.get("workers_max"):
        gpu_hours, cpu_hours = elastic_hours(facts, train_events)
    images_per_s = round(images / train_time, 3) if train_time else None
    return {
        "train_time_s": round(train_time, 3),
        "eval_time_s": round(sum(event.get("eval_time_s") or 0 for event in train_events), 3),
        "wall_time_s": round(wall_time, 3),
        "images_per_s": images_per_s,
        "cost": {
            "device": "gpu" if gpus else "cpu",
            "device_hours": gpu_hours if gpus else cpu_hours,
            "gpu_hours": gpu_hours,
            "cpu_hours": cpu_hours,
            "images_per_s": images_per_s,
            "peak_memory_mb": max((event.get("peak_memory_mb") or 0 for event in train_events), default=None),
        },
    }


def elastic_hours(facts: dict, train_events: list[dict]) -> tuple[float, float]:
    """An elastic trial's GPU- and CPU-hours: each epoch's time (training and evaluation) x the
    world size it ran on x each worker's GPUs and CPUs."""
    worker_seconds = sum((event.get("world_size") or facts.get("workers") or 1)
                         * (event["epoch_time_s"] + (event.get("eval_time_s") or 0)) for event in train_events)
    return (round(worker_seconds * (facts.get("gpus_per_worker") or 0) / 3600, 6),
            round(worker_seconds * (facts.get("cpus_per_worker") or 0) / 3600, 6))


def world_size_changes(train_events: list[dict]) -> str | None:
    """The workers each epoch ran on, a change at a time: `2`, or `1->2->1` for an elastic trial
    that grew and shrank (None before the first epoch, or from events without it)."""
    sizes = [event.get("world_size") for event in train_events if event.get("world_size")]
    changes = [size for index, size in enumerate(sizes) if index == 0 or size != sizes[index - 1]]
    return "->".join(map(str, changes)) or None


def saliency_fields(step: dict, iteration: int) -> dict:
    return {
        "iteration": iteration,
        "kept_fraction": step.get("kept_fraction"),
        "best_checkpoint": step.get("checkpoint"),  # the model of this iteration's best epoch
        "samples": step.get("samples"),
    }


def tuning_fields(facts: dict, measurements: dict, iteration: int, decision: dict | None) -> dict:
    """What a scheduler did to the trial: why and where it stopped it, PBT's exploits, and the
    target's value after each epoch with the time it was decided (for budget curves)."""
    fields = {"target_curve": target_curve(measurements, iteration, decision),
              "perturbations": [perturbation(measurements, iteration, epoch, value)
                                for (it, epoch, split), value in sorted(measurements.items(), key=lambda kv: kv[0][:2])
                                if it == iteration and split == keys.PERTURBATION_SPLIT]}
    if facts.get("reason"):
        fields["stop"] = {"reason": facts["reason"], "rung": facts.get("rung"), "epoch": facts.get("stopped_at_epoch")}
    return fields


def perturbation(measurements: dict, iteration: int, epoch: int, value: dict) -> dict:
    """PBT's exploit at `epoch`: the donor, the mutated hyperparameters (`train`), what the optimizer
    held in the epoch after it (`in_effect`: lr, weight_decay, momentum; empty until it ran), and
    `lr`, the lr in effect then (the schedule's value; the mutated base lr until it ran)."""
    after = measurements.get((iteration, epoch + 1, "train")) or {}
    in_effect = {name: after.get(name) for name in ("lr", "weight_decay", "momentum") if name in after}
    return {"epoch": epoch, "donor": value["donor"], "train": value["train"], "in_effect": in_effect,
            "lr": in_effect.get("lr", value["train"].get("lr"))}


def target_curve(measurements: dict, iteration: int, decision: dict | None) -> list[dict]:
    """[{epoch, value, ts}]: the target metric's value at each scored epoch of the iteration."""
    if decision is None:
        return []
    target = Target(metric=decision["metric"], mode=decision["mode"])
    curve = []
    for (it, epoch, split), value in sorted(measurements.items(), key=lambda kv: kv[0][:2]):
        if it == iteration and split == keys.BEST_SPLIT:
            scores = {name: measurements.get((it, epoch, name)) for name in ("train", "val", "test")}
            curve.append({"epoch": epoch, "value": target.value_of(scores), "ts": value.get("ts")})
    return curve


def job_budget(rows: list[dict]) -> dict:
    """One job's spend: trial-epochs and device-hours run, the trial-epochs every trial would have
    run to its end (a full grid under FIFO), and the best target value against trial-epochs spent."""
    points = sorted((point["ts"] or 0, point["value"]) for row in rows for point in row.get("target_curve", []))
    target = next((Target(**row["target"]) for row in rows if row.get("target")), Target())
    best, curve = None, []
    for spent, (_, value) in enumerate(points, start=1):
        if target.better(value, best):
            best = value
        curve.append([spent, best])
    planned = sum(((row.get("params") or {}).get("train") or {}).get("epochs") or row["epochs"] for row in rows)
    return {"trial_epochs": sum(row["epochs"] for row in rows), "planned_trial_epochs": planned,
            "device_hours": round(sum(row["cost"]["device_hours"] for row in rows), 6),
            "gpu_hours": round(sum(row["cost"].get("gpu_hours", 0) for row in rows), 6),
            "cpu_hours": round(sum(row["cost"].get("cpu_hours", 0) for row in rows), 6),
            "stopped_trials": sum(row["status"] == "stopped" for row in rows),
            "best_vs_trial_epochs": curve}
