"""`segq watch`: a live table of a job's trials, refreshed from Redis until the job ends."""
from __future__ import annotations

import time
from dataclasses import dataclass

import redis
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from jobs.aggregator import Aggregator
from jobs.records import JobRecord
from jobs.summary import trial_rows

STATUS_STYLES = {"running": "cyan", "finished": "green", "failed": "red", "cancelled": "yellow"}


@dataclass
class Snapshot:
    record: JobRecord
    rows: list[dict]
    note: str = ""  # why the numbers may be stale


def take_snapshot(client: redis.Redis, job_id: str) -> Snapshot:
    # The record first: if it is final, the events it follows are all in the stream already.
    record = JobRecord.load(client, job_id)
    # drain() only applies what is in the stream (idempotent, safe beside the driver's own
    # aggregator): the table stays current even when no aggregator runs for this job.
    Aggregator(client, job_id).drain()
    return Snapshot(record, trial_rows(client, job_id))


def follow(client: redis.Redis, job_id: str, interval: float, console: Console) -> Snapshot:
    """Refresh a live table every `interval` seconds until the job's status is final; the final
    table is printed once more (on a terminal the live one is cleared, elsewhere it never shows)."""
    snapshot = take_snapshot(client, job_id)
    with Live(watch_table(snapshot), console=console, transient=True, auto_refresh=False) as live:
        while not snapshot.record.status.is_final:
            time.sleep(interval)
            snapshot = refresh(client, job_id, snapshot)
            live.update(watch_table(snapshot), refresh=True)
    console.print(watch_table(snapshot))
    return snapshot


def refresh(client: redis.Redis, job_id: str, previous: Snapshot) -> Snapshot:
    try:
        return take_snapshot(client, job_id)
    except redis.exceptions.ConnectionError as error:
        return Snapshot(previous.record, previous.rows, note=f"Redis unreachable, retrying ({error})")


def watch_table(snapshot: Snapshot) -> Table:
    record, rows = snapshot.record, snapshot.rows
    saliency = record.kind == "saliency"
    title = f"{record.id}{f' ({record.name})' if record.name else ''}: {record.status.value}, {len(rows)} trial rows"
    table = Table(title=title, caption=snapshot.note or f"updated {time.strftime('%H:%M:%S')}")
    columns = ["trial", "arch", "status", *(["iteration"] if saliency else []), "epoch", "train loss",
               "val mIoU", "best mIoU", "best epoch", "time", "img/s"]
    for column in columns:
        # Trial names say what varies: wrap them rather than cut them on a narrow terminal.
        table.add_column(column, justify="left" if column in ("trial", "arch", "status") else "right",
                         overflow="fold" if column == "trial" else "ellipsis")
    for row in rows:
        cells = [Text(row["trial"]), Text(row["arch"] or "-"),
                 Text(row["status"], style=STATUS_STYLES.get(row["status"], ""))]
        if saliency:
            cells.append(str(row["iteration"]))
        cells += [str(row["epochs"]), number(last(row["train_loss"]), 4), number(last(row["val_miou_curve"])),
                  number((row["val"] or {}).get("miou")), str(row["best_epoch"] or "-"),
                  duration(row["train_time_s"]), number(row["images_per_s"], 1)]
        table.add_row(*cells)
    return table


def last(values: list):
    return values[-1] if values else None


def number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def duration(seconds: float | None) -> str:
    if not seconds:
        return "-"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{seconds:.1f}s"
