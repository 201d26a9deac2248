"""The fixed cost of a segq trial: a 4-trial FIFO sweep against the same trainings in a plain loop.

Starts an embedded default in a scratch SEGQ_HOME, prepares the demo's synthetic data (320 images at
64x64: 224 train, 48 val, 48 test) and submits, through the CLI, a FIFO sweep of the demo U-Net
(base_width 16, depth 3) over 4 learning rates: 12 epochs each, batch 8, no augmentation, one DDP
worker of one CPU, one trial at a time. The same four trainings also run one after another in this
process in a plain PyTorch loop on the same threads (1): the same model, rows and batches, Adam, the
validation split scored every epoch, a checkpoint written every epoch, the test split scored once.
The plain trainings bracket the sweep, half before it and half after, on the same idle cluster: the
speed of this machine's cores drifts (they are shared with other virtual machines), and so the
drift falls on both sides alike.

    fixed cost per trial = (sweep wall time - the trials' own training and validation) / trials
    plain/segq           = plain loop wall time / sweep wall time

The sweep's wall time runs from `segq submit` to the end of `--wait`; the trials' own time is the
sum of their epochs' `epoch_time_s` and `eval_time_s` as their workers published them.

    .venv/bin/python bench/trial_overhead.py [--trials 4] [--epochs 12] [--no-results]
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from seg_models.metrics import ConfusionMatrix
from seg_models.registry import build_model
from workers.shards import ShardedSplit, read_manifest

from results_file import Run, add_arguments, publish, section, table, verdict  # noqa: E402 (bench/ is on the path)

SEGQ = str(Path(sys.executable).with_name("segq"))
MODEL = {"base_width": 16, "depth": 3}
LRS = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-4]
BATCH = 8
TARGETS = {"fixed cost per trial (s)": 6.0, "plain/segq": 0.75}


def segq(env: dict, *args: str) -> str:
    result = subprocess.run([SEGQ, *args], env=env, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise SystemExit(f"segq {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@dataclasses.dataclass
class Sweep:
    wall: float  # from `segq submit` to the end of `--wait`
    own: float  # the trials' own training + validation, as their workers published it
    breakdown: list[tuple[str, float, float, float, float]]  # per trial, where its time outside its epochs went
    to_driver: float  # from `segq submit` to the job driver's start
    after_last: float  # from the last trial's end to the job's
    to_return: float  # from the job's end to `--wait` returning


def run_sweep(env: dict, data: Path, trials: int, epochs: int) -> Sweep:
    lrs = ",".join(str(lr) for lr in LRS[:trials])
    spec = Path(env["SEGQ_HOME"]) / "overhead.yaml"
    spec.write_text(json.dumps({
        "data": str(data), "archs": ["unet"], "models": {"unet": MODEL},
        "train": {"epochs": epochs, "batch_size": BATCH, "augment": "none", "optimizer": "adam"},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1}}))
    submitted, started = time.time(), time.perf_counter()
    job = segq(env, "submit", "sweep", str(spec), "--lr", lrs, "--wait").strip().splitlines()[-1]
    wall = time.perf_counter() - started
    rows = json.loads(segq(env, "summary", job, "--format", "json"))
    own = sum(row["train_time_s"] for row in rows) + sum(row.get("eval_time_s") or 0 for row in rows)
    record, trial_rows, last_end = breakdown(env, job)
    return Sweep(wall, own, trial_rows, record.started_at - submitted, record.ended_at - last_end,
                 submitted + wall - record.ended_at)


def breakdown(env: dict, job: str):
    """Where each trial's time outside its epochs goes, from the job's event timestamps: from the
    previous trial's end (the job driver's start, for the first) to the trial function (Tune), to its
    worker group (Ray Train's start-up, the data and the model), to its first epoch; and from its last
    epoch until the trial ended. (the job's record, the rows, the last trial's end)"""
    from cluster import local
    from cluster.connect import connect_redis
    from jobs import keys
    from jobs.records import JobRecord
    from workers.events import BestEvent, MetricsEvent, TrialEvent, decode_event

    client = connect_redis(local.read_state(Path(env["SEGQ_HOME"]))["redis"]["url"])
    record = JobRecord.load(client, job)
    marks: dict[str, dict[str, float]] = {}
    for _, fields in client.xrange(keys.events(job)):
        event = decode_event(fields.get("data"))
        times = marks.setdefault(event.trial, {})
        if isinstance(event, TrialEvent) and event.status is not None:
            times.setdefault(event.status.value, event.ts)
        if isinstance(event, TrialEvent) and event.attempt_started:
            times.setdefault("workers", event.attempt_started)
        if isinstance(event, MetricsEvent) and event.split == "train":
            times.setdefault("first_epoch", event.ts - event.metrics.epoch_time_s - (event.metrics.eval_time_s or 0))
        if isinstance(event, BestEvent):
            times["last_epoch"] = event.ts
    previous, rows = record.started_at, []
    for trial, times in sorted(marks.items(), key=lambda item: item[1].get("running", 0)):
        end = times.get("finished", times.get("last_epoch", 0))
        rows.append((trial, times["running"] - previous, times["workers"] - times["running"],
                     times["first_epoch"] - times["workers"], end - times["last_epoch"]))
        previous = end
    return record, rows, previous


def split_arrays(data: Path, name: str, manifest: dict) -> tuple[torch.Tensor, torch.Tensor]:
    split = ShardedSplit(data, name, manifest=manifest)
    rows = [split.row(index) for index in range(len(split))]
    images = torch.from_numpy(np.stack([image for _, image, _ in rows])).permute(0, 3, 1, 2).contiguous()
    masks = torch.from_numpy(np.stack([mask for _, _, mask in rows]).astype(np.int64))
    return images, masks


def normalised(images: torch.Tensor, manifest: dict) -> torch.Tensor:
    mean = torch.tensor(manifest["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(manifest["std"]).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


@torch.no_grad()
def score(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, manifest: dict) -> float:
    model.eval()
    matrix = ConfusionMatrix(manifest["num_classes"], manifest["ignore_index"])
    for start in range(0, len(images), BATCH):
        logits = model(normalised(images[start:start + BATCH], manifest))
        matrix.update(masks[start:start + BATCH], logits.argmax(dim=1))
    return matrix.compute(manifest["class_names"])["miou"]


def plain_training(data: Path, lr: float, epochs: int, checkpoint: Path) -> None:
    manifest = read_manifest(data)
    train, val, test = (split_arrays(data, name, manifest) for name in ("train", "val", "test"))
    torch.manual_seed(0)
    model = build_model("unet", manifest["num_classes"], MODEL)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=manifest["ignore_index"])
    generator = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train[0]), generator=generator)
        for start in range(0, len(order), BATCH):
            rows = order[start:start + BATCH]
            loss = criterion(model(normalised(train[0][rows], manifest)), train[1][rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        score(model, *val, manifest)
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}, checkpoint)
    score(model, *test, manifest)


def plain_trainings(data: Path, lrs: list[float], epochs: int, checkpoint: Path) -> float:
    """Seconds for plain_training of each learning rate, one after another."""
    started = time.perf_counter()
    for lr in lrs:
        plain_training(data, lr, epochs, checkpoint)
    return time.perf_counter() - started


@contextlib.contextmanager
def demo_cluster(scratch: Path):
    """An embedded default in SCRATCH/home with the demo's synthetic data (320 images at 64x64):
    (the CLI's environment, the data folder); stopped on the way out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGQ_")} | {"SEGQ_HOME": str(scratch / "home")}
    data = scratch / "synthetic-64"
    segq(env, "up")
    try:
        segq(env, "data", "prepare", "synthetic", "--out", str(data), "--size", "64x64", "--count", "320", "--seed", "0")
        yield env, data
    finally:
        segq(env, "down")


SECTION_TITLE = "# Trial overhead: a 4-trial FIFO sweep against the same trainings in a plain loop"

DESCRIPTION = """`bench/trial_overhead.py` starts an embedded default in a scratch SEGQ_HOME, prepares the demo's
synthetic data (320 images at 64x64: 224 train, 48 val, 48 test) and submits through the CLI a FIFO
sweep of the demo U-Net (base_width 16, depth 3) over 4 learning rates, 12 epochs each, batch 8, no
augmentation, one worker of one CPU, one trial at a time. The same four trainings also run one
after another in a plain PyTorch loop on 1 thread (per-epoch validation and checkpoint, test once),
half before the sweep and half after, so that a drift in the machine's speed falls on both alike.
From the job's event timestamps it also gives where each trial's time outside its epochs goes.
It takes about 8 minutes; `make bench` rewrites this section."""

READING = """Reading: the fixed cost is almost all Ray Train starting each trial's worker group (the "worker
group up" column): a controller process, then its placement-group cleaner, synchronisation and
dataset-manager actors, then the worker processes, each a new Python process; the controller and
the workers each import Ray Train's torch integration (about 3.5 s of imports on this machine), and
the workers start torch's process group. Ray starts a new process for every actor (its pool of idle
workers serves tasks), so neither prestarted workers nor preloaded modules (`RAY_preload_python_modules`)
shorten it. segq's own share is small: the train modules import in about 0.6 s (matplotlib only where
a picture is drawn), the Train controller imports only the forwarding callback (jobs.forwarding), a
trial ends as soon as its workers report that they are done, while its worker group shuts down
beside the next trial's start (the "trial ended" column), and under FIFO the next trial runs in the
same Tune process (the "trial function" column). The 6 s target needs worker processes that outlive
a trial, which Ray Train's per-run worker group does not offer."""


def results_section(run: Run, sweep: Sweep, plain: float, figures: dict[str, float]) -> str:
    body = table(["figure", "measured", "target"], [
        ["sweep wall time", f"{sweep.wall:.1f} s", ""],
        ["the trials' own training + validation", f"{sweep.own:.1f} s", ""],
        ["plain loop, the same trainings", f"{plain:.1f} s", ""],
        *[[name, f"{value:.2f}", target_text(name, value)] for name, value in figures.items()]])
    body += ["", "Per trial (s), from the job's events:", ""] + table(
        ["trial", "previous trial's end -> trial function", "-> worker group up", "-> first epoch",
         "last epoch -> trial ended"], [[row[0], *(f"{value:.1f}" for value in row[1:])] for row in sweep.breakdown])
    body += ["", f"From `segq submit` to the job driver's start: {sweep.to_driver:.1f} s; from the last trial's end "
                 f"to the job's: {sweep.after_last:.1f} s; from the job's end to `--wait` returning: "
                 f"{sweep.to_return:.1f} s. That leaves {rest_of(sweep):.1f} s of the fixed cost for the "
                 f"epochs' reports and checkpoints."]
    return section(SECTION_TITLE, DESCRIPTION, run, body, READING)


def rest_of(sweep: Sweep) -> float:
    """The fixed cost outside the per-trial columns and the job's start and end."""
    accounted = sum(sum(row[1:]) for row in sweep.breakdown) + sweep.to_driver + sweep.after_last + sweep.to_return
    return sweep.wall - sweep.own - accounted


def target_text(name: str, value: float) -> str:
    target = TARGETS[name]
    if name.startswith("fixed"):
        return f"<= {target}: {verdict(value <= target)}"
    return f">= {target}: {verdict(value >= target)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, choices=range(1, len(LRS) + 1))
    parser.add_argument("--epochs", type=int, default=12)
    add_arguments(parser)
    args = parser.parse_args()
    run = Run()
    print(f"machine: {run.describe()}")
    torch.set_num_threads(1)
    lrs = LRS[:args.trials]
    with tempfile.TemporaryDirectory(prefix="segq-bench-") as scratch:
        with demo_cluster(Path(scratch)) as (env, data):
            plain = plain_trainings(data, lrs[0::2], args.epochs, Path(scratch) / "plain.pt")
            sweep = run_sweep(env, data, args.trials, args.epochs)
            plain += plain_trainings(data, lrs[1::2], args.epochs, Path(scratch) / "plain.pt")
    figures = {"fixed cost per trial (s)": (sweep.wall - sweep.own) / args.trials, "plain/segq": plain / sweep.wall}
    print(f"segq sweep: {sweep.wall:.1f} s wall, of which the trials' own training and validation {sweep.own:.1f} s "
          f"({args.trials} trials x {args.epochs} epochs)")
    print("per trial (s): previous trial's end -> trial function -> worker group -> first epoch | last epoch -> ended")
    for trial, *seconds in sweep.breakdown:
        print(f"  {trial}: " + "  ".join(f"{value:5.1f}" for value in seconds))
    print(f"submit -> job driver {sweep.to_driver:.1f} s; last trial -> job end {sweep.after_last:.1f} s; "
          f"job end -> --wait returned {sweep.to_return:.1f} s")
    print(f"plain loop: {plain:.1f} s for the same {args.trials} trainings, one after another, 1 thread "
          f"(half before the sweep, half after)")
    for name, value in figures.items():
        print(f"{name:26} {value:7.2f}  (target {target_text(name, value).replace('**not met**', 'NOT met')})")
    run.finish()
    publish(args, SECTION_TITLE, results_section(run, sweep, plain, figures))


if __name__ == "__main__":
    main()
