"""`segq watch`: follow a job's trials live, from Redis, until the job ends or its driver dies."""
from __future__ import annotations

import typer

from cluster.cli.context import console, err, exit_unless_finished, following_jobs_client, redis_url_of
from cluster.connect import connect_redis

watch_app = typer.Typer()


@watch_app.command()
def watch(
    ctx: typer.Context,
    job: str = typer.Argument(..., help="job id (or a unique prefix)"),
    interval: float = typer.Option(1.0, "--interval", min=0.05, help="seconds between refreshes"),
) -> None:
    """Live table of a job's trials until the job ends; exit 1 if it failed or was cancelled. Reads
    Redis; asks Ray every few seconds whether the job's driver still runs (if Ray can be reached)."""
    from jobs.lifecycle.follow import follow
    from jobs.records import resolve_job_id
    from jobs.results.displays import LiveTable

    client = connect_redis(redis_url_of(ctx))
    job_id = resolve_job_id(client, job)
    snapshot = follow(client, job_id, LiveTable(console, err), following_jobs_client(ctx), interval)
    exit_unless_finished(snapshot.record)
