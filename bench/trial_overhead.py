"""The fixed cost of a segq trial, on each path a trial can take.

Starts an embedded default in a scratch SEGQ_HOME and prepares the demo's synthetic data (320 images
at 64x64: 224 train, 48 val, 48 test). Then, through the CLI, one trial at a time (FIFO):

(a) one-worker trials, which train in their own Tune trial: a sweep of the demo U-Net (base_width 16,
    depth 3) over 8 learning rates, 12 epochs each, batch 8, no augmentation, one worker of one CPU;
    the same eight trainings also run one after another in this process in a plain PyTorch loop on
    the same threads (1): the same model, rows and batches, Adam, the validation split scored every
    epoch, a checkpoint written every epoch, the test split scored once. The plain trainings bracket
    the sweep, half before it and half after, so that a drift in this machine's speed (its cores are
    shared with other virtual machines) falls on both alike.
(b) DDP trials through Ray Train: a sweep of the same U-Net over 4 learning rates, 2 epochs each, two
    workers of 0.5 CPU; in the same run, the floor Ray Train itself sets: a bare `TorchTrainer.fit()`
    of an empty function with the same two workers, from a client of the same cluster.

    per-trial fixed cost = (sweep wall time - the job's own start and end - the trials' own
                            training and validation) / trials
    plain/segq           = plain loop wall time / (sweep wall time - the job's own start and end)

The job's own start and end happen once per job, whatever its trial count, and are reported apart:
from `segq submit` to the job driver's start, from the driver's start to its first trial's function
(Tune's start and the first trial process), from the last trial's end to the job's, and from the
job's end to `--wait` returning. The trials' own time is the sum of their epochs' `epoch_time_s`
and `eval_time_s` as they published them. The floor is the mean of four bare fits, two before the
DDP sweep and two after it.

    .venv/bin/python bench/trial_overhead.py [--trials 8] [--epochs 12] [--ddp-trials 4] [--no-results]
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

from cluster.ray_env import use_ray_env
from seg_models.metrics import ConfusionMatrix
from seg_models.registry import build_model
from workers.shards import ShardedSplit, read_manifest

from results_file import Run, add_arguments, publish, section, table, verdict  # noqa: E402 (bench/ is on the path)

SEGQ = str(Path(sys.executable).with_name("segq"))
MODEL = {"base_width": 16, "depth": 3}
LRS = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-4, 6e-4, 2e-3]
BATCH = 8
DDP_EPOCHS = 2
TARGETS = {"per-trial fixed cost (s)": 2.5, "plain/segq": 0.9}


def segq(env: dict, *args: str) -> str:
    result = subprocess.run([SEGQ, *args], env=env, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise SystemExit(f"segq {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@dataclasses.dataclass
class Sweep:
    trials: int
    wall: float  # from `segq submit` to the end of `--wait`
    own: float  # the trials' own training + validation, as they published it
    breakdown: list[tuple[str, float, float, float, float]]  # per trial, where its time outside its epochs went
    to_driver: float  # from `segq submit` to the job driver's start
    to_first_trial: float  # from the job driver's start to its first trial's function (Tune's start)
    after_last: float  # from the last trial's end to the job's
    to_return: float  # from the job's end to `--wait` returning
    processes: int  # the processes the trials trained in

    @property
    def job_level(self) -> float:
        return self.to_driver + self.to_first_trial + self.after_last + self.to_return

    def job_level_text(self) -> str:
        return (f"{self.job_level:.1f} s ({self.to_driver:.1f} s submission -> driver, {self.to_first_trial:.1f} s "
                f"driver -> first trial function, {self.after_last:.1f} s last trial -> job end, "
                f"{self.to_return:.1f} s job end -> --wait returned)")

    @property
    def per_trial(self) -> float:
        return (self.wall - self.job_level - self.own) / self.trials


def run_sweep(env: dict, data: Path, lrs: list[float], epochs: int, workers: int, cpus: float) -> Sweep:
    spec = Path(env["SEGQ_HOME"]) / f"overhead-{workers}.yaml"
    spec.write_text(json.dumps({
        "data": str(data), "archs": ["unet"], "models": {"unet": MODEL},
        "train": {"epochs": epochs, "batch_size": BATCH, "augment": "none", "optimizer": "adam"},
        "resources": {"workers_per_trial": workers, "cpus_per_worker": cpus, "max_concurrent_trials": 1}}))
    submitted, started = time.time(), time.perf_counter()
    job = segq(env, "submit", "sweep", str(spec), "--lr", ",".join(map(str, lrs)), "--wait").strip().splitlines()[-1]
    wall = time.perf_counter() - started
    rows = json.loads(segq(env, "summary", job, "--format", "json"))
    own = sum(row["train_time_s"] for row in rows) + sum(row.get("eval_time_s") or 0 for row in rows)
    record, trial_rows, last_end, processes = breakdown(env, job)
    return Sweep(len(lrs), wall, own, trial_rows, record.started_at - submitted, trial_rows[0][1],
                 record.ended_at - last_end, submitted + wall - record.ended_at, processes)


def bare_fits(env: dict, storage: Path, repeats: int = 2) -> list[float]:
    """Seconds of each of `repeats` bare TorchTrainer.fit() of an empty function with two 0.5-CPU
    workers, as a client of the embedded default: what Ray Train costs a DDP trial."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from cluster import local

    ray.init(address=local.read_state(Path(env["SEGQ_HOME"]))["ray"]["address"], logging_level="ERROR")
    try:
        times = []
        for attempt in range(repeats):
            trainer = TorchTrainer(lambda: None, scaling_config=ScalingConfig(num_workers=2, resources_per_worker={
                "CPU": 0.5}), run_config=RunConfig(name=f"bare-{storage.name}-{attempt}", storage_path=str(storage)))
            started = time.perf_counter()
            trainer.fit()
            times.append(time.perf_counter() - started)
        return times
    finally:
        ray.shutdown()


def breakdown(env: dict, job: str):
    """Where each trial's time outside its epochs goes, from the job's event timestamps: from the
    previous trial's end (the job driver's start, for the first) to the trial function (Tune), to its
    training processes (Ray Train's worker group, or the trial itself: the data and the model), to its
    first epoch; and from its last epoch until the trial ended. (the job's record, the rows, the last
    trial's end, the number of processes rank 0 of the trials ran in)"""
    from cluster import local
    from cluster.connect import connect_redis
    from jobs import keys
    from jobs.records import JobRecord
    from workers.events import BestEvent, MetricsEvent, TrialEvent, decode_event

    client = connect_redis(local.read_state(Path(env["SEGQ_HOME"]))["redis"]["url"])
    record = JobRecord.load(client, job)
    marks: dict[str, dict[str, float]] = {}
    pids = set()
    for _, fields in client.xrange(keys.events(job)):
        event = decode_event(fields.get("data"))
        times = marks.setdefault(event.trial, {})
        if isinstance(event, TrialEvent) and event.ranks:
            pids.add(event.ranks[0]["pid"])
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
    return record, rows, previous, len(pids)


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


SECTION_TITLE = "# Trial overhead: what a trial costs beyond its epochs, in its Tune trial and through Ray Train"

DESCRIPTION = """`bench/trial_overhead.py` starts an embedded default in a scratch SEGQ_HOME, prepares the demo's
synthetic data (320 images at 64x64: 224 train, 48 val, 48 test) and submits through the CLI, one
trial at a time: (a) a FIFO sweep of the demo U-Net (base_width 16, depth 3) over 8 learning rates,
12 epochs each, batch 8, no augmentation, one worker of one CPU (each trial trains in its own Tune
trial), against the same eight trainings in a plain PyTorch loop on 1 thread (per-epoch validation
and checkpoint, test once), half before the sweep and half after, so that a drift in the machine's
speed falls on both alike; (b) a FIFO sweep of the same U-Net over 4 learning rates, 2 epochs each,
two DDP workers of 0.5 CPU (through Ray Train), against a bare `TorchTrainer.fit()` of an empty
function with the same two workers in the same run (the mean of four: two before the sweep, two
after it). The job's own start and end, once per job whatever its trial count (submission to the job
driver, the driver to its first trial's function: Tune's start and the first trial process, the last
trial's end to the job's, the job's end to `--wait` returning), are reported apart from the
per-trial cost. It takes about 15 minutes; `make bench` rewrites this section."""

READING = """Reading: a one-worker trial trains in its Tune trial's process, which Tune reuses from trial to
trial: no worker group, no new process, no imports again; what is left per trial is building its
data and model, its reports and checkpoints, and Tune's own scheduling. A DDP trial still starts a
Ray Train worker group (a controller, then the worker processes, each importing torch and Ray
Train, then torch's process group): that is the floor the bare `fit()` measures. segq adds its
trial process's two queues once per process (not per trial), no preemption watcher on the embedded
default, a controller that imports only the forwarding callback, workers that import augmentation
only for trials that augment, and DistributedDataParallel's construction (it imports
`torch._dynamo`, about 1 s of each worker's time here), the trial's data and model, and its
per-epoch reports and checkpoints."""


def results_section(run: Run, in_trial: Sweep, plain: float, ddp: Sweep, fits: list[float], figures: dict) -> str:
    floor = sum(fits) / len(fits)
    body = ["(a) one-worker trials, in their Tune trial:", ""] + table(["figure", "measured", "target"], [
        ["sweep wall time", f"{in_trial.wall:.1f} s", ""],
        ["the job's own start and end", in_trial.job_level_text(), ""],
        ["the trials' own training + validation", f"{in_trial.own:.1f} s", ""],
        ["plain loop, the same trainings", f"{plain:.1f} s", ""],
        ["processes the trials trained in", f"{in_trial.processes} for {in_trial.trials} trials", ""],
        *[[name, f"{value:.2f}", target_text(name, value)] for name, value in figures.items()]])
    body += ["", "Per trial (s), from the job's events:", ""] + breakdown_table(in_trial)
    body += ["", "(b) DDP trials through Ray Train (2 workers each):", ""] + table(["figure", "measured", "target"], [
        ["sweep wall time", f"{ddp.wall:.1f} s", ""],
        ["the job's own start and end", ddp.job_level_text(), ""],
        ["the trials' own training + validation", f"{ddp.own:.1f} s", ""],
        ["bare TorchTrainer.fit() of an empty function, 2 workers (mean of 4: 2 before the sweep, 2 after)",
         f"{floor:.2f} s ({', '.join(f'{seconds:.2f}' for seconds in fits)})", ""],
        ["per-trial fixed cost (s)", f"{ddp.per_trial:.2f}",
         f"<= floor + 2 = {floor + 2:.2f}: {verdict(ddp.per_trial <= floor + 2)}"]])
    body += ["", "Per trial (s), from the job's events:", ""] + breakdown_table(ddp)
    return section(SECTION_TITLE, DESCRIPTION, run, body, READING)


def breakdown_table(sweep: Sweep) -> list[str]:
    return table(["trial", "previous trial's end -> trial function", "-> training processes up", "-> first epoch",
                  "last epoch -> trial ended"],
                 [[row[0], *(f"{value:.1f}" for value in row[1:])] for row in sweep.breakdown])


def target_text(name: str, value: float) -> str:
    target = TARGETS[name]
    if name.startswith("per-trial"):
        return f"<= {target}: {verdict(value <= target)}"
    return f">= {target}: {verdict(value >= target)}"


def report(name: str, sweep: Sweep) -> None:
    print(f"{name}: {sweep.wall:.1f} s wall; the job's own start and end {sweep.job_level_text()}; "
          f"the trials' own training and validation {sweep.own:.1f} s; "
          f"{sweep.trials} trials in {sweep.processes} process(es); per-trial fixed cost {sweep.per_trial:.2f} s")
    for trial, *seconds in sweep.breakdown:
        print(f"  {trial}: " + "  ".join(f"{value:5.1f}" for value in seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, choices=range(2, len(LRS) + 1))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--ddp-trials", type=int, default=4, choices=range(1, len(LRS) + 1))
    add_arguments(parser)
    args = parser.parse_args()
    use_ray_env(loopback=True)  # before Ray is imported: it reads these settings once per process
    run = Run()
    print(f"machine: {run.describe()}")
    torch.set_num_threads(1)
    lrs = LRS[:args.trials]
    with tempfile.TemporaryDirectory(prefix="segq-bench-") as scratch:
        with demo_cluster(Path(scratch)) as (env, data):
            plain = plain_trainings(data, lrs[0::2], args.epochs, Path(scratch) / "plain.pt")
            in_trial = run_sweep(env, data, lrs, args.epochs, workers=1, cpus=1)
            plain += plain_trainings(data, lrs[1::2], args.epochs, Path(scratch) / "plain.pt")
            fits = bare_fits(env, Path(scratch) / "before")
            ddp = run_sweep(env, data, LRS[:args.ddp_trials], DDP_EPOCHS, workers=2, cpus=0.5)
            fits += bare_fits(env, Path(scratch) / "after")
    floor = sum(fits) / len(fits)
    figures = {"per-trial fixed cost (s)": in_trial.per_trial, "plain/segq": plain / (in_trial.wall - in_trial.job_level)}
    report("(a) one-worker sweep", in_trial)
    print(f"plain loop: {plain:.1f} s for the same {args.trials} trainings, one after another, 1 thread "
          f"(half before the sweep, half after)")
    for name, value in figures.items():
        print(f"{name:26} {value:7.2f}  (target {target_text(name, value).replace('**not met**', 'NOT met')})")
    report("(b) DDP sweep", ddp)
    print(f"bare TorchTrainer.fit(), 2 workers: {floor:.2f} s (mean of {', '.join(f'{t:.2f}' for t in fits)}); DDP per-trial fixed cost {ddp.per_trial:.2f} s "
          f"(target <= {floor + 2:.2f}: {'met' if ddp.per_trial <= floor + 2 else 'NOT met'})")
    run.finish()
    publish(args, SECTION_TITLE, results_section(run, in_trial, plain, ddp, fits, figures))


if __name__ == "__main__":
    main()
