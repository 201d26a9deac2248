"""`segq jobs`: list, show, logs, cancel, resume."""
from __future__ import annotations

import json
import sys
import time
from enum import Enum

import typer

from cluster.cli.context import console, endpoints_of, exit_unless_finished, say
from cluster.connect import connect_redis, jobs_client, try_jobs_client

jobs_app = typer.Typer(help="List, inspect, follow and cancel jobs.", no_args_is_help=True)


def print_jobs(client, limit: int = 50) -> None:
    from rich.table import Table

    from jobs.records import list_jobs

    from jobs.lifecycle.queue import positions

    table = Table(title="jobs")
    for column in ("job", "kind", "status", "position", "created", "duration"):
        table.add_column(column)
    waiting = positions(client)  # 1: the next job to run
    for record in list_jobs(client, limit):
        end = record.ended_at or (time.time() if record.started_at else None)
        duration = f"{end - record.started_at:.0f}s" if record.started_at and end else ""
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created_at))
        position = str(waiting[record.id]) if record.id in waiting and not record.status.is_final else ""
        table.add_row(record.id, record.kind, record.status.value, position, created, duration)
    console.print(table)


@jobs_app.command("list")
def jobs_list(ctx: typer.Context, limit: int = typer.Option(50, help="newest N jobs")) -> None:
    """List jobs, newest first."""
    print_jobs(connect_redis(endpoints_of(ctx).redis_url), limit)


class ShowFormat(str, Enum):
    json = "json"
    table = "table"


@jobs_app.command("show")
def jobs_show(
    ctx: typer.Context,
    job: str = typer.Argument(..., help="job id (or a unique prefix)"),
    output_format: ShowFormat = typer.Option(ShowFormat.json, "--format", help="json (default) or table"),
) -> None:
    """Show a job record: status, times, Ray submission, dashboard URL, spec and the resolved trials."""
    from jobs.records import JobRecord, resolve_job_id
    from jobs.lifecycle.submit import reconcile

    endpoints = endpoints_of(ctx)
    client = connect_redis(endpoints.redis_url)
    record = JobRecord.load(client, resolve_job_id(client, job))
    jobs = try_jobs_client(endpoints.dashboard_url)  # without Ray, the record is all there is
    if jobs is not None:
        record = reconcile(client, record, jobs)
    if output_format is ShowFormat.json:
        console.print_json(json.dumps({**record.to_dict(), "spec": record.spec, "trials": record.trials,
                                       "attempts": record.attempts, "trial_path": trial_path(record)}))
    else:
        print_record(record)


def trial_path(record) -> str:
    """Where the job's trials train (jobs.spec.Resources.path)."""
    from jobs.spec import Resources

    return Resources.model_validate(record.spec.get("resources") or {}).path


def print_record(record) -> None:
    from rich.table import Table

    facts = Table(title=f"job {record.id}", show_header=False)
    for name, value in record.to_dict().items():
        if name not in ("spec", "trials"):
            facts.add_row(name, value)
    facts.add_row("trial_path", trial_path(record))
    console.print(facts)
    console.print(trials_table(record.trials))


def trials_table(trials: list[dict]):
    """The resolved trials; train parameters at their defaults are left out to keep rows short."""
    from rich.table import Table

    from workers.trial_spec import TrainParams

    defaults = TrainParams().model_dump(mode="json")
    table = Table(title=f"{len(trials)} trials (train parameters not shown are at their defaults)")
    for column in ("trial", "arch", "model", "train", "saliency"):
        table.add_column(column, overflow="fold")
    for trial in trials:
        train = {k: v for k, v in trial["train"].items() if k in ("epochs", "lr", "batch_size") or v != defaults.get(k)}
        table.add_row(trial["name"], trial["arch"], options(trial["model"]), options(train),
                      options(trial.get("saliency") or {}))
    return table


def options(values: dict) -> str:
    return " ".join(f"{key}={value}" for key, value in values.items()) or "-"


@jobs_app.command("logs")
def jobs_logs(ctx: typer.Context, job: str = typer.Argument(...)) -> None:
    """Print the driver's log from Ray."""
    from jobs.records import JobRecord, resolve_job_id

    endpoints = endpoints_of(ctx)
    client = connect_redis(endpoints.redis_url)
    record = JobRecord.load(client, resolve_job_id(client, job))
    sys.stdout.write(jobs_client(endpoints.dashboard_url).get_job_logs(record.ray_submission_id))


@jobs_app.command("cancel")
def jobs_cancel(ctx: typer.Context, job: str = typer.Argument(...)) -> None:
    """Cancel a queued or running job: stop its driver and trial workers on Ray, mark it cancelled.
    Finished trials keep their results and checkpoints."""
    from jobs.records import JobRecord, resolve_job_id
    from jobs.lifecycle.submit import CANCEL_DEADLINE_S, cancel

    endpoints = endpoints_of(ctx)
    client = connect_redis(endpoints.redis_url)
    record = JobRecord.load(client, resolve_job_id(client, job))
    if record.status.is_final:
        say(f"{record.id} is already {record.status.value}; there is nothing to cancel "
            f"(`segq jobs show {record.id}` has its record)")
        raise typer.Exit(1)
    ray_status = cancel(client, record, jobs_client(endpoints.dashboard_url))
    if ray_status is None:
        say(f"{record.id}: cancelled; Ray had not stopped its driver within {CANCEL_DEADLINE_S:.0f}s "
            f"(see `segq jobs logs {record.id}`)")
        raise typer.Exit(1)
    console.print(f"{record.id}: cancelled (was {record.status.value}; Ray status {ray_status})")


@jobs_app.command("resume")
def jobs_resume(ctx: typer.Context, job: str = typer.Argument(..., help="job id (or a unique prefix)"),
                wait: bool = typer.Option(False, "--wait", help="follow the job until it ends; exit 1 if it failed")) -> None:
    """Continue a job whose driver died: finished trials are kept, interrupted ones continue from
    their last checkpoint. A finished or cancelled job is refused."""
    from cluster.cli.context import settings_of
    from cluster.cli.submit import deployment_of, follow_with_progress
    from jobs.records import JobRecord, resolve_job_id
    from jobs.lifecycle.resume import resume

    endpoints = endpoints_of(ctx)
    client = connect_redis(endpoints.redis_url)
    jobs = jobs_client(endpoints.dashboard_url)
    record = JobRecord.load(client, resolve_job_id(client, job))
    record = resume(client, jobs, record, deployment_of(settings_of(ctx), endpoints), endpoints.dashboard_url)
    say(f"resumed {record.id} as Ray job {record.ray_submission_id}; dashboard: {record.dashboard_url}")
    if wait:
        exit_unless_finished(follow_with_progress(client, jobs, record))
    print(record.id)
