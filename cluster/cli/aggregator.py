"""`segq aggregator`: the summary aggregator as a service (needs only Redis)."""
from __future__ import annotations

import time
from typing import Optional

import typer

from cluster.cli.context import console
from cluster.connect import connect_redis

aggregator_app = typer.Typer()


@aggregator_app.command()
def aggregator(
    ctx: typer.Context,
    job: Optional[str] = typer.Option(None, "--job", help="only this job (default: every job's stream)"),
    once: bool = typer.Option(False, "--once", help="apply what is in the streams now, then exit"),
    consumer: str = typer.Option("aggregator-1", "--consumer",
                                 help="consumer name in the group; keep it across restarts so a restarted "
                                      "service re-reads its own unacknowledged entries at once"),
    min_idle: float = typer.Option(30.0, "--min-idle", min=0.0,
                                   help="seconds an entry may stay unacknowledged before its reader counts "
                                        "as dead and this aggregator takes it over"),
    interval: float = typer.Option(1.0, "--interval", min=0.05, help="seconds between polls"),
) -> None:
    """Run the summary aggregator (Redis only): job event streams -> trial summaries and leaderboards."""
    # Safe beside the job driver's own aggregator and to kill at any time: updates are idempotent,
    # and entries a dead consumer left unacknowledged are taken over after --min-idle.
    import redis

    from cluster.cli.context import redis_url_of
    from jobs.exceptions import ClusterError
    from jobs.results.aggregator import Aggregator
    from jobs.records import list_jobs, resolve_job_id

    url = redis_url_of(ctx)
    client = connect_redis(url)
    only = resolve_job_id(client, job) if job else None
    total = 0
    while True:
        try:
            for job_id in [only] if only else [record.id for record in list_jobs(client, limit=1000)]:
                applied = Aggregator(client, job_id, consumer, min_idle_ms=int(min_idle * 1000)).drain()
                if applied:
                    console.print(f"{job_id}: applied {applied} events", markup=False, highlight=False)
                total += applied
        except redis.exceptions.ConnectionError as error:
            if once:
                raise ClusterError(f"lost Redis while aggregating: {error}") from None
            console.print(f"Redis unreachable ({error}); retrying", markup=False, highlight=False)
        if once:
            console.print(f"applied {total} events")
            return
        time.sleep(interval)
