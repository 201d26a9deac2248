"""`segq jobs`: list, show, logs, cancel."""
from __future__ import annotations

import json
import sys
import time

import typer

from cluster.cli_context import console, endpoints_of
from cluster.connect import connect_redis

jobs_app = typer.Typer(help="List, inspect, follow and cancel jobs.", no_args_is_help=True)


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
