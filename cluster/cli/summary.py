"""`segq summary`: compare the trials of one or more jobs as a table, JSON, CSV or a report."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import typer

from cluster.cli.context import console, redis_url_of, settings_of
from cluster.connect import connect_redis
from seg_models.exceptions import SpecError

summary_app = typer.Typer()
FORMATS = ("table", "json", "csv", "md", "html")


@summary_app.command()
def summary(
    ctx: typer.Context,
    jobs: List[str] = typer.Argument(..., help="job ids (or unique prefixes); several go in one table"),
    format: str = typer.Option("table", "--format", help="table, json, csv, md or html"),
    out: Optional[str] = typer.Option(None, "--out", help="report folder, a path or an s3:// or gs:// URI "
                                                          "(md/html; with table: also write it)"),
) -> None:
    """Compare trials: val/test scores, per-class IoU, cost; md/html write a report with PNG plots."""
    from jobs.results.tables import write_csv

    if format not in FORMATS:
        raise SpecError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
    client = connect_redis(redis_url_of(ctx))
    job_ids, records, rows = load_trials(client, jobs)
    if format == "json":
        print(json.dumps(rows, indent=2))
        return
    if format == "csv":
        write_csv(rows, sys.stdout)
        return
    if format == "table":
        print_comparison(rows, records)
        if out is None:
            return
    print_report(rows, records, out or str(settings_of(ctx).resolved_home() / "reports" / "_".join(job_ids)))


def load_trials(client, jobs: List[str]) -> tuple[list[str], list, list[dict]]:
    """The job ids, records and trial rows of JOBS, each job's summary brought up to date first."""
    from jobs.results.aggregator import Aggregator
    from jobs.records import JobRecord, resolve_job_id
    from jobs.results.summary import job_budget, trial_rows

    job_ids = [resolve_job_id(client, job) for job in jobs]
    records, rows = [], []
    for job_id in job_ids:
        Aggregator(client, job_id).drain()  # idempotent: brings the summary up to the stream's end
        records.append(JobRecord.load(client, job_id))
        job_rows = trial_rows(client, job_id)
        budget = {key: value for key, value in job_budget(job_rows).items() if key != "best_vs_trial_epochs"}
        rows += [row | {"job_budget": budget} for row in job_rows]
    return job_ids, records, rows


def print_comparison(rows: list[dict], records: list) -> None:
    from rich.table import Table

    from jobs.results.tables import Ranking, comparison_rows, tuning_lines

    header, body = comparison_rows(rows, Ranking.of(records, rows), compact=True)
    table = Table(title=", ".join(f"{r.id} ({r.status.value})" for r in records))
    for column in header:
        table.add_column(column, justify="left" if column in ("job", "trial", "arch", "status") else "right",
                         no_wrap=column in ("job", "trial"))
    for line in body:
        table.add_row(*line)
    console.print(table)
    for line in tuning_lines(rows):
        console.print(line, highlight=False)
    for row in rows:
        if row.get("dropped_events"):
            console.print(f"{row['trial']}: {row['dropped_events']} metric events were dropped from a full "
                          "buffer while Redis was unreachable; its figures have gaps")


def print_report(rows: list[dict], records: list, out: str) -> None:
    """Written to the folder `out`; to a storage URI through a local folder, then uploaded."""
    from jobs.results.report import write_report
    from workers import storage

    with tempfile.TemporaryDirectory(prefix="segq-report-") as staging:
        folder = Path(staging) if storage.is_uri(out) else Path(out)
        files = write_report(rows, records, folder)
        if storage.is_uri(out):
            storage.upload_dir(folder, out)
    shown = {name: storage.join(out, path.name) for name, path in files.items()}
    console.print(f"report: {shown['report.html']}  (Markdown: {shown['report.md']}; "
                  f"{sum(1 for p in files.values() if p.suffix == '.png')} plots)")
