"""The segq command line: one Typer app per noun, joined here."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from cluster import local
from cluster.connect import Endpoints, connect_redis, resolve
from cluster.exceptions import SegqError, SpecError
from cluster.settings import Settings

app = typer.Typer(help="segq: distributed training jobs for semantic segmentation on Ray.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Prepare and inspect datasets (Arrow shards).", no_args_is_help=True)
submit_app = typer.Typer(help="Submit jobs to the cluster.", no_args_is_help=True)
jobs_app = typer.Typer(help="List, inspect, follow and cancel jobs.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(submit_app, name="submit")
app.add_typer(jobs_app, name="jobs")

# Piped output is not cut to 80 columns: job ids and trial names must survive `| grep`.
PIPE_WIDTH = 240
console = Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
err = Console(stderr=True, width=None if sys.stderr.isatty() else PIPE_WIDTH)


@app.callback()
def configure(
    ctx: typer.Context,
    home: Optional[Path] = typer.Option(None, "--home", help="local state folder (env SEGQ_HOME; default ./.segq)"),
    redis_url: Optional[str] = typer.Option(None, "--redis-url", help="Redis URL (env SEGQ_REDIS_URL)"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray dashboard / Jobs API URL (env SEGQ_RAY_ADDRESS)"),
    storage: Optional[str] = typer.Option(None, "--storage", help="checkpoint storage (env SEGQ_STORAGE)"),
) -> None:
    overrides = {"home": home, "redis_url": redis_url, "ray_address": address, "storage": storage}
    ctx.obj = Settings(**{name: value for name, value in overrides.items() if value is not None})


def settings_of(ctx: typer.Context) -> Settings:
    return ctx.find_root().obj


def endpoints_of(ctx: typer.Context, start_if_missing: bool = False) -> Endpoints:
    return resolve(settings_of(ctx), start_if_missing=start_if_missing, announce=lambda m: err.print(m))


# --- the embedded default -------------------------------------------------------------------

@app.command()
def up(ctx: typer.Context, num_cpus: Optional[int] = typer.Option(None, help="CPUs Ray may schedule")) -> None:
    """Start the embedded default: a local Redis (AOF on) and a local Ray head with dashboard."""
    home = settings_of(ctx).resolved_home()
    state, started = local.up(home, num_cpus)
    console.print(("started" if started else "already running") + f" in {home}")
    print_cluster(state)


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop what `segq up` started (by recorded pid), nothing else."""
    home = settings_of(ctx).resolved_home()
    stopped = local.down(home)
    console.print("stopped: " + ", ".join(stopped) if stopped else f"nothing running from {home}")


def print_cluster(state: dict) -> None:
    console.print(f"redis      {state['redis']['url']}  (pid {state['redis']['pid']})")
    console.print(f"ray        {state['ray']['address']}  (pid {state['ray']['pid']})")
    console.print(f"dashboard  {state['ray']['dashboard_url']}")


@app.command()
def status(ctx: typer.Context) -> None:
    """Show the cluster and the latest jobs."""
    settings = settings_of(ctx)
    state = local.running_state(settings.resolved_home())
    if state:
        print_cluster(state)
    elif not (settings.redis_url and settings.ray_address):
        console.print(f"embedded default: not running in {settings.resolved_home()} (start it with `segq up`)")
        raise typer.Exit(1)
    endpoints = endpoints_of(ctx)
    if not state:
        console.print(f"redis      {endpoints.redis_url}\ndashboard  {endpoints.dashboard_url}")
    print_jobs(connect_redis(endpoints.redis_url), limit=10)


# --- models -----------------------------------------------------------------------------------

@app.command()
def models(num_classes: int = typer.Option(19, help="classes of the head, for the parameter counts")) -> None:
    """List the architectures of the model zoo with parameter counts."""
    from rich.table import Table

    from seg_models.base import count_parameters
    from seg_models.registry import ARCHITECTURES, build_model

    table = Table(title=f"segq models ({num_classes} classes, default options)")
    for column in ("architecture", "parameters", "output stride", "description"):
        table.add_column(column)
    for name, architecture in sorted(ARCHITECTURES.items()):
        model = build_model(name, num_classes)
        table.add_row(name, f"{count_parameters(model):,}", str(model.output_stride), architecture.summary)
    console.print(table)


# --- data -------------------------------------------------------------------------------------

@data_app.command("prepare")
def data_prepare(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="synthetic"),
    root: Optional[Path] = typer.Argument(None, help="source folder (not used by synthetic)"),
    out: Path = typer.Option(..., "--out", help="output folder for shards and manifest.json"),
    size: str = typer.Option("64x64", "--size", help="HxW of the prepared images"),
    count: int = typer.Option(200, "--count", help="synthetic: number of scenes"),
    seed: int = typer.Option(0, "--seed", help="seed of the scenes and of the split"),
    split: str = typer.Option("0.7,0.15,0.15", "--split", help="train,val,test fractions"),
    shard_size: int = typer.Option(512, "--shard-size", help="rows per shard"),
    compression: str = typer.Option("none", "--compression", help="none, lz4 or zstd"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing dataset in OUT"),
) -> None:
    """Prepare a dataset as Arrow shards, one Ray task per shard."""
    from rich.progress import Progress

    from cluster.connect import init_ray
    from jobs.prepare import parse_size, prepare, run_ray_tasks

    fractions = parse_fractions(split)
    if source != "synthetic":
        raise SpecError(f"source {source!r}: not available (available: synthetic)")
    from jobs.sources.synthetic import load_synthetic, synthetic_dataset

    dataset, loader = synthetic_dataset(count, seed, fractions), load_synthetic
    endpoints = endpoints_of(ctx, start_if_missing=True)
    init_ray(endpoints.gcs_address)
    with Progress(console=err, transient=True) as progress:
        bar = progress.add_task("writing shards", total=None)

        def run_tasks(tasks):
            return run_ray_tasks(tasks, lambda done, total: progress.update(bar, completed=done, total=total))

        manifest = prepare(dataset, loader, out.resolve(), parse_size(size), shard_size, compression,
                           overwrite, run_tasks)
    for name, info in manifest["splits"].items():
        console.print(f"{name:<6} {info['rows']:>6} rows in {len(info['shards'])} shard(s)")
    console.print(f"wrote {out.resolve()}")


def parse_fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise SpecError(f"--split {text!r}: expected three fractions, e.g. 0.7,0.15,0.15") from None
    if len(parts) != 3:
        raise SpecError(f"--split {text!r}: expected three fractions, e.g. 0.7,0.15,0.15")
    return parts  # type: ignore[return-value]


# --- submit -----------------------------------------------------------------------------------

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


@submit_app.command("sweep")
def submit_sweep(
    ctx: typer.Context,
    spec_file: Optional[Path] = typer.Argument(None, help="YAML sweep spec; flags override its fields"),
    data: Optional[str] = typer.Option(None, "--data", help="prepared dataset folder"),
    arch: Optional[str] = typer.Option(None, "--arch", help="architectures, comma-separated"),
    lr: Optional[str] = typer.Option(None, "--lr", help="learning rates, comma-separated (grid)"),
    batch_size: Optional[str] = typer.Option(None, "--batch-size", help="batch sizes per worker (grid)"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    workers_per_trial: Optional[int] = typer.Option(None, "--workers-per-trial", help="DDP workers per trial"),
    cpus_per_worker: Optional[float] = typer.Option(None, "--cpus-per-worker"),
    gpus_per_worker: Optional[float] = typer.Option(None, "--gpus-per-worker"),
    name: Optional[str] = typer.Option(None, "--name"),
    wait: bool = typer.Option(False, "--wait", help="follow the job until it ends; exit 1 if it failed"),
) -> None:
    """Submit an architecture x hyperparameter sweep. Prints the job id as the last line."""
    from jobs.spec import SweepSpec, load_yaml, parse_spec

    data_dict = load_yaml(spec_file) if spec_file else {}
    source = str(spec_file) if spec_file else None
    train = dict(data_dict.get("train") or {})
    resources = dict(data_dict.get("resources") or {})
    overrides = {
        "data": data, "archs": split_list(arch), "name": name,
    }
    for key, value in overrides.items():
        if value is not None:
            data_dict[key] = value
    for key, value in {"lr": as_value(split_list(lr, float)), "batch_size": as_value(split_list(batch_size, int)),
                       "epochs": epochs}.items():
        if value is not None:
            train[key] = value
    for key, value in {"workers_per_trial": workers_per_trial, "cpus_per_worker": cpus_per_worker,
                       "gpus_per_worker": gpus_per_worker}.items():
        if value is not None:
            resources[key] = value
    data_dict["train"], data_dict["resources"] = train, resources
    if "data" not in data_dict:
        raise SpecError("data: missing (pass --data DIR or set data: in the spec file)")
    if "archs" not in data_dict:
        raise SpecError("archs: missing (pass --arch NAME[,NAME] or set archs: in the spec file)")
    spec = parse_spec(SweepSpec, data_dict, source)
    submit_and_follow(ctx, "sweep", spec, wait)


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
            finished = sum(1 for row in rows if row["status"] in ("finished", "failed"))
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
    from jobs.spec import SweepSpec

    return [trial.name for trial in SweepSpec.model_validate(record.spec).trials()]


def expected_epochs(record) -> int:
    from jobs.spec import SweepSpec

    trials = SweepSpec.model_validate(record.spec).trials()
    return max(trial.train.epochs for trial in trials)


# --- jobs -------------------------------------------------------------------------------------

def print_jobs(client, limit: int = 50) -> None:
    from rich.table import Table

    from jobs.records import list_jobs

    table = Table(title="jobs")
    for column in ("job", "kind", "status", "created", "duration"):
        table.add_column(column)
    for record in list_jobs(client, limit):
        end = record.ended_at or (time.time() if record.started_at else None)
        duration = f"{end - record.started_at:.0f}s" if record.started_at and end else ""
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created_at))
        table.add_row(record.id, record.kind, record.status.value, created, duration)
    console.print(table)


@jobs_app.command("list")
def jobs_list(ctx: typer.Context, limit: int = typer.Option(50, help="newest N jobs")) -> None:
    """List jobs, newest first."""
    print_jobs(connect_redis(endpoints_of(ctx).redis_url), limit)


@jobs_app.command("show")
def jobs_show(ctx: typer.Context, job: str = typer.Argument(..., help="job id (or a unique prefix)")) -> None:
    """Show a job record: status, times, Ray submission, dashboard URL and spec."""
    from jobs.records import JobRecord, resolve_job_id
    from jobs.submit import reconcile

    endpoints = endpoints_of(ctx)
    client = connect_redis(endpoints.redis_url)
    record = reconcile(client, JobRecord.load(client, resolve_job_id(client, job)), endpoints.dashboard_url)
    data = record.to_dict()
    data["spec"] = record.spec
    console.print_json(json.dumps(data))


@jobs_app.command("logs")
def jobs_logs(ctx: typer.Context, job: str = typer.Argument(...)) -> None:
    """Print the driver's log from Ray."""
    from cluster.connect import jobs_client
    from jobs.records import JobRecord, resolve_job_id

    endpoints = endpoints_of(ctx)
    client = connect_redis(endpoints.redis_url)
    record = JobRecord.load(client, resolve_job_id(client, job))
    sys.stdout.write(jobs_client(endpoints.dashboard_url).get_job_logs(record.ray_submission_id))


@jobs_app.command("cancel")
def jobs_cancel(ctx: typer.Context, job: str = typer.Argument(...)) -> None:
    """Stop a running job on Ray and mark it cancelled."""
    from jobs.records import JobRecord, resolve_job_id
    from jobs.submit import cancel

    endpoints = endpoints_of(ctx)
    client = connect_redis(endpoints.redis_url)
    record = JobRecord.load(client, resolve_job_id(client, job))
    cancel(client, record, endpoints.dashboard_url)
    console.print(f"{record.id}: cancelled" if not record.status.is_final else f"{record.id}: already {record.status.value}")


# --- results ----------------------------------------------------------------------------------

@app.command()
def summary(
    ctx: typer.Context,
    job: str = typer.Argument(..., help="job id (or a unique prefix)"),
    format: str = typer.Option("table", "--format", help="table or json"),
) -> None:
    """Compare the trials of a job."""
    from jobs.aggregator import Aggregator
    from jobs.records import resolve_job_id
    from jobs.summary import trial_rows

    if format not in ("table", "json"):
        raise SpecError(f"--format {format!r}: expected table or json")
    client = connect_redis(endpoints_of(ctx).redis_url)
    job_id = resolve_job_id(client, job)
    Aggregator(client, job_id).drain()
    rows = trial_rows(client, job_id)
    if format == "json":
        print(json.dumps(rows, indent=2))
        return
    console.print(summary_table(job_id, rows))


def summary_table(job_id: str, rows: list[dict]):
    from rich.table import Table

    def number(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    table = Table(title=f"{job_id}: trials by val mIoU")
    for column in ("trial", "arch", "status", "epochs", "best", "val mIoU", "val mDice", "val acc",
                   "test mIoU", "train s", "img/s", "params"):
        table.add_column(column, justify="left" if column in ("trial", "arch", "status") else "right")
    ranked = sorted(rows, key=lambda r: -(r["val"]["miou"] or 0) if r["val"] else 1)
    for row in ranked:
        val, test = row["val"] or {}, row["test"] or {}
        table.add_row(row["trial"], row["arch"] or "-", row["status"], str(row["epochs"]), str(row["best_epoch"] or "-"),
                      number(val.get("miou")), number(val.get("mdice")), number(val.get("pixel_acc")),
                      number(test.get("miou")), number(row["train_time_s"], 1), number(row["images_per_s"], 1),
                      f"{row['num_params']:,}" if row["num_params"] else "-")
    return table


@app.command()
def aggregator(
    ctx: typer.Context,
    job: Optional[str] = typer.Option(None, "--job", help="only this job (default: every job's stream)"),
    once: bool = typer.Option(False, "--once", help="apply what is in the streams now, then exit"),
) -> None:
    """Run the summary aggregator: job event streams -> trial summaries and leaderboards."""
    from jobs.aggregator import Aggregator
    from jobs.records import list_jobs, resolve_job_id

    client = connect_redis(endpoints_of(ctx).redis_url)
    while True:
        job_ids = [resolve_job_id(client, job)] if job else [r.id for r in list_jobs(client, limit=1000)]
        applied = sum(Aggregator(client, job_id).drain() for job_id in job_ids)
        if once:
            console.print(f"applied {applied} events")
            return
        time.sleep(1.0)


def main() -> None:
    try:
        app()
    except SegqError as error:
        err.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
