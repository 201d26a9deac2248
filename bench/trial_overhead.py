"""The fixed cost of a segq trial: a 4-trial FIFO sweep against the same trainings in a plain loop.

Starts an embedded default in a scratch SEGQ_HOME, prepares the demo's synthetic data (320 images at
64x64: 224 train, 48 val, 48 test) and submits, through the CLI, a FIFO sweep of the demo U-Net
(base_width 16, depth 3) over 4 learning rates: 12 epochs each, batch 8, no augmentation, one DDP
worker of one CPU, one trial at a time. Then the same four trainings run one after another in this
process in a plain PyTorch loop on the same threads (1): the same model, rows and batches, Adam, the
validation split scored every epoch, a checkpoint written every epoch, the test split scored once.

    fixed cost per trial = (sweep wall time - the trials' own training and validation) / trials
    plain/segq           = plain loop wall time / sweep wall time

The sweep's wall time runs from `segq submit` to the end of `--wait`; the trials' own time is the
sum of their epochs' `epoch_time_s` and `eval_time_s` as their workers published them.

    .venv/bin/python bench/trial_overhead.py [--trials 4] [--epochs 12]
"""
from __future__ import annotations

import argparse
import contextlib
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


def run_sweep(env: dict, data: Path, trials: int, epochs: int) -> tuple[float, float]:
    """(wall time, the trials' own training + evaluation time) of the segq sweep."""
    lrs = ",".join(str(lr) for lr in LRS[:trials])
    spec = Path(env["SEGQ_HOME"]) / "overhead.yaml"
    spec.write_text(json.dumps({
        "data": str(data), "archs": ["unet"], "models": {"unet": MODEL},
        "train": {"epochs": epochs, "batch_size": BATCH, "augment": "none", "optimizer": "adam"},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1}}))
    started = time.perf_counter()
    job = segq(env, "submit", "sweep", str(spec), "--lr", lrs, "--wait").strip().splitlines()[-1]
    wall = time.perf_counter() - started
    rows = json.loads(segq(env, "summary", job, "--format", "json"))
    own = sum(row["train_time_s"] for row in rows) + sum(row.get("eval_time_s") or 0 for row in rows)
    print_breakdown(env, job)
    return wall, own


def print_breakdown(env: dict, job: str) -> None:
    """Where each trial's time outside its epochs goes, from the job's event timestamps: from the
    driver's start to the trial function (Tune), to its worker group (Ray Train start-up, data and
    model), to its first epoch published, after its last epoch until the trial ended."""
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
    previous = record.started_at
    print("per trial (s): since the previous trial ended -> trial function -> worker group -> first epoch; "
          "last epoch -> trial ended")
    for trial, times in sorted(marks.items(), key=lambda item: item[1].get("running", 0)):
        end = times.get("finished", times.get("last_epoch", 0))
        print(f"  {trial}: {times['running'] - previous:5.1f}  {times['workers'] - times['running']:5.1f}  "
              f"{times['first_epoch'] - times['workers']:5.1f}  |  {end - times['last_epoch']:5.1f}")
        previous = end
    print(f"  after the last trial until the job ended: {record.ended_at - previous:5.1f}")


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


def print_machine() -> None:
    import platform

    import ray

    lines = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")
    print(f"machine: {os.cpu_count()} CPUs, {model}; Python {platform.python_version()}, torch {torch.__version__}, "
          f"Ray {ray.__version__}; {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; load average before: "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, choices=range(1, len(LRS) + 1))
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    print_machine()
    with tempfile.TemporaryDirectory(prefix="segq-bench-") as scratch:
        with demo_cluster(Path(scratch)) as (env, data):
            wall, own = run_sweep(env, data, args.trials, args.epochs)
        torch.set_num_threads(1)
        started = time.perf_counter()
        for lr in LRS[:args.trials]:
            plain_training(data, lr, args.epochs, Path(scratch) / "plain.pt")
        plain = time.perf_counter() - started
    figures = {"fixed cost per trial (s)": (wall - own) / args.trials, "plain/segq": plain / wall}
    print(f"segq sweep: {wall:.1f} s wall, of which the trials' own training and validation {own:.1f} s "
          f"({args.trials} trials x {args.epochs} epochs)")
    print(f"plain loop: {plain:.1f} s for the same {args.trials} trainings, one after another, 1 thread")
    for name, value in figures.items():
        target = TARGETS[name]
        met = value <= target if name.startswith("fixed") else value >= target
        print(f"{name:26} {value:7.2f}  (target {'<=' if name.startswith('fixed') else '>='} {target}: "
              f"{'met' if met else 'NOT met'})")


if __name__ == "__main__":
    main()
