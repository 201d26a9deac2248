"""`segq submit`: validate a spec, submit it, optionally follow it to the end."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from cluster.cli_context import endpoints_of, err, settings_of
from cluster.connect import Endpoints, connect_redis
from cluster.exceptions import SpecError

submit_app = typer.Typer(help="Submit jobs to the cluster.", no_args_is_help=True)


def split_list(text: Optional[str], cast=str) -> list | None:
    if text is None:
        return None
    try:
        return [cast(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SpecError(f"cannot read {text!r} as a comma-separated list of {cast.__name__}") from None


def as_value(values: list | None):
    """One value stays a value; several become a grid axis."""
    if values is None:
        return None
    return values[0] if len(values) == 1 else {"grid": values}


def merge_flags(spec_file: Optional[Path], top: dict, train: dict, resources: dict) -> tuple[dict, str | None]:
    """The spec file's fields, overridden by the flags that were given."""
    from jobs.spec import load_yaml

    data = load_yaml(spec_file) if spec_file else {}
    sections = {"train": dict(data.get("train") or {}), "resources": dict(data.get("resources") or {})}
    for target, values in ((data, top), (sections["train"], train), (sections["resources"], resources)):
        target.update({key: value for key, value in values.items() if value is not None})
    data.update(sections)
    if "data" not in data:
        raise SpecError("data: missing (pass --data DIR or set data: in the spec file)")
    if "archs" not in data:
        raise SpecError("archs: missing (pass --arch NAME[,NAME] or set archs: in the spec file)")
    return data, str(spec_file) if spec_file else None


SPEC_FILE = typer.Argument(None, help="YAML spec; flags override its fields")
DATA = typer.Option(None, "--data", help="prepared dataset folder")
ARCH = typer.Option(None, "--arch", help="architectures, comma-separated (one trial each)")
LR = typer.Option(None, "--lr", help="learning rates, comma-separated (grid)")
BATCH_SIZE = typer.Option(None, "--batch-size", help="batch sizes per worker, comma-separated (grid)")
EPOCHS = typer.Option(None, "--epochs", help="epochs (per iteration for saliency jobs)")
WORKERS = typer.Option(None, "--workers-per-trial", help="DDP workers per trial")
CPUS = typer.Option(None, "--cpus-per-worker")
GPUS = typer.Option(None, "--gpus-per-worker")
NAME = typer.Option(None, "--name")
WAIT = typer.Option(False, "--wait", help="follow the job until it ends; exit 1 if it failed")


@submit_app.command("sweep")
def submit_sweep(
    ctx: typer.Context,
    spec_file: Optional[Path] = SPEC_FILE,
    data: Optional[str] = DATA,
    arch: Optional[str] = ARCH,
    lr: Optional[str] = LR,
    batch_size: Optional[str] = BATCH_SIZE,
    epochs: Optional[int] = EPOCHS,
    workers_per_trial: Optional[int] = WORKERS,
    cpus_per_worker: Optional[float] = CPUS,
    gpus_per_worker: Optional[float] = GPUS,
    name: Optional[str] = NAME,
    wait: bool = WAIT,
) -> None:
    """Submit an architecture x hyperparameter sweep. Prints the job id as the last line."""
    from jobs.spec import SweepSpec, parse_spec

    spec_data, source = merge_flags(
        spec_file, {"data": data, "archs": split_list(arch), "name": name},
        {"lr": as_value(split_list(lr, float)), "batch_size": as_value(split_list(batch_size, int)), "epochs": epochs},
        {"workers_per_trial": workers_per_trial, "cpus_per_worker": cpus_per_worker, "gpus_per_worker": gpus_per_worker},
    )
    submit_and_follow(ctx, "sweep", parse_spec(SweepSpec, spec_data, source), wait)


@submit_app.command("saliency")
def submit_saliency(
    ctx: typer.Context,
    spec_file: Optional[Path] = SPEC_FILE,
    data: Optional[str] = DATA,
    arch: Optional[str] = ARCH,
    iterations: Optional[int] = typer.Option(None, "--iterations", help="training rounds (default 7)"),
    keep_percent: Optional[str] = typer.Option(None, "--keep-percent",
                                               help="percent of kept pixels kept per round, comma-separated (grid)"),
    relevance: Optional[str] = typer.Option(None, "--relevance", help="softmax_foreground or random (grid)"),
    fill: Optional[str] = typer.Option(None, "--fill", help="what removed pixels become: zero, blur or mean"),
    reinit: Optional[bool] = typer.Option(None, "--reinit/--carry-weights",
                                          help="start each iteration from scratch (default: carry the weights on)"),
    controls: Optional[bool] = typer.Option(None, "--controls", help="add a random-relevance run beside each configuration"),
    lr: Optional[str] = LR,
    batch_size: Optional[str] = BATCH_SIZE,
    epochs: Optional[int] = EPOCHS,
    workers_per_trial: Optional[int] = WORKERS,
    cpus_per_worker: Optional[float] = CPUS,
    gpus_per_worker: Optional[float] = GPUS,
    name: Optional[str] = NAME,
    wait: bool = WAIT,
) -> None:
    """Submit a saliency-iteration job: retrain on progressively reduced images. Prints the job id last."""
    from jobs.spec import SaliencySpec, parse_spec

    spec_data, source = merge_flags(
        spec_file,
        {"data": data, "archs": split_list(arch), "name": name, "iterations": iterations,
         "keep_percent": as_value(split_list(keep_percent, float)), "relevance": as_value(split_list(relevance)),
         "fill": fill, "reinit": reinit, "controls": controls},
        {"lr": as_value(split_list(lr, float)), "batch_size": as_value(split_list(batch_size, int)), "epochs": epochs},
        {"workers_per_trial": workers_per_trial, "cpus_per_worker": cpus_per_worker, "gpus_per_worker": gpus_per_worker},
    )
    submit_and_follow(ctx, "saliency", parse_spec(SaliencySpec, spec_data, source), wait)


def check_dataset(root: str) -> None:
    if "://" in root:
        return
    from workers.shards import read_manifest

    read_manifest(root)


def submit_and_follow(ctx: typer.Context, kind: str, spec, wait: bool) -> None:
    from jobs.submit import submit

    settings = settings_of(ctx)
    endpoints = endpoints_of(ctx, start_if_missing=True)
    client = connect_redis(endpoints.redis_url)
    embedded = endpoints.gcs_address is not None
    if embedded:
        check_dataset(spec.data)  # a remote cluster may see paths this machine does not
    # A real cluster keeps its own SEGQ_STORAGE (shared storage) unless one is given here.
    storage = settings.resolved_storage() if embedded or settings.storage else None
    record = submit(client, endpoints, kind, spec, storage, embedded, settings.cluster_redis_url)
    err.print(f"submitted {kind} {record.id} ({len(spec.trials())} trials); dashboard: {record.dashboard_url}")
    if wait:
        final = follow(client, record.id, endpoints)
        if final.status.value != "finished":
            print(record.id)
            err.print(f"job {record.id} {final.status.value}: {final.error.strip().splitlines()[-1] if final.error else ''}")
            raise typer.Exit(1)
    print(record.id)


def follow(client, job_id: str, endpoints: Endpoints):
    """Progress over trials x epochs until the job ends; returns the final record."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from jobs.records import JobRecord
    from jobs.submit import reconcile
    from jobs.summary import trial_rows

    record = JobRecord.load(client, job_id)
    expected_trials = len(expected_trial_names(record))
    epochs_per_trial = max(1, expected_epochs(record))
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[best]}")]
    with Progress(*columns, console=err) as progress:
        bar = progress.add_task(f"{job_id} queued", total=expected_trials * epochs_per_trial, best="")
        polls = 0
        while True:
            record = JobRecord.load(client, job_id)
            rows = trial_rows(client, job_id)
            done = sum(row["epochs"] for row in rows)
            finished = len({row["trial"] for row in rows if row["status"] in ("finished", "failed")})
            leader = max((row for row in rows if row["val"]), key=lambda r: r["val"]["miou"] or 0, default=None)
            best = f"best {leader['trial']} val mIoU {leader['val']['miou']:.3f}" if leader else ""
            progress.update(bar, completed=done, best=best,
                            description=f"{job_id} {record.status.value} ({finished}/{expected_trials} trials)")
            if record.status.is_final:
                return record
            polls += 1
            if polls % 5 == 0:
                record = reconcile(client, record, endpoints.dashboard_url)
                if record.status.is_final:
                    return record
            time.sleep(1.0)


def expected_trial_names(record) -> list[str]:
    from jobs.spec import SPEC_KINDS

    return [trial.name for trial in SPEC_KINDS[record.kind].model_validate(record.spec).trials()]


def expected_epochs(record) -> int:
    """Epochs a trial trains in all (all iterations of a saliency trial)."""
    from jobs.spec import SPEC_KINDS

    trials = SPEC_KINDS[record.kind].model_validate(record.spec).trials()
    return max(trial.train.epochs * (trial.saliency.iterations if trial.saliency else 1) for trial in trials)
