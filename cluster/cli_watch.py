"""`segq watch`: follow a job's trials live, from Redis alone."""
from __future__ import annotations

import typer

from cluster.cli_context import console, err, redis_url_of
from cluster.connect import connect_redis

watch_app = typer.Typer()


@watch_app.command()
def watch(
    ctx: typer.Context,
    job: str = typer.Argument(..., help="job id (or a unique prefix)"),
    interval: float = typer.Option(1.0, "--interval", min=0.05, help="seconds between refreshes"),
) -> None:
    """Live table of a job's trials until the job ends; exit 1 if it failed or was cancelled (needs only Redis)."""
    from jobs.records import JobStatus, resolve_job_id
    from jobs.watch import follow

    client = connect_redis(redis_url_of(ctx))
    snapshot = follow(client, resolve_job_id(client, job), interval, console)
    record = snapshot.record
    if record.status != JobStatus.FINISHED:
        reason = record.error.strip().splitlines()[-1] if record.error.strip() else "no error recorded"
        err.print(f"job {record.id} {record.status.value}: {reason}", markup=False, highlight=False)
        raise typer.Exit(1)
