"""Results: `segq summary` and the `segq aggregator` service."""
from __future__ import annotations

import json
import time
from typing import Optional

import typer

from cluster.cli_context import console, endpoints_of
from cluster.connect import connect_redis
from cluster.exceptions import SpecError

results_app = typer.Typer()


@results_app.command()
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


@results_app.command()
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
