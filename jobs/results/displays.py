"""Displays of a followed job (jobs.lifecycle.follow): the live table of `segq watch` and the progress bar
of `segq submit --wait`."""
from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from jobs.results.progress import Snapshot, best_so_far, finished_trials, planned_work
from jobs.results.summary import deciding_target
from jobs.records import JobRecord

STATUS_STYLES = {"running": "cyan", "finished": "green", "failed": "red", "cancelled": "yellow"}
METRIC_LABELS = {"val_miou": "val mIoU", "train_loss": "train loss"}


class LiveTable:
    """A table refreshed in place; the final one is printed once more at the end (on a terminal
    the live one is cleared, elsewhere it never shows)."""

    def __init__(self, console: Console, err: Console):
        self.console, self.err = console, err
        self.live = Live(console=console, transient=True, auto_refresh=False)
        self.last: Snapshot | None = None

    def __enter__(self) -> "LiveTable":
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.__exit__(*exc)
        if self.last is not None:
            self.console.print(watch_table(self.last))

    def show(self, snapshot: Snapshot) -> None:
        self.last = snapshot
        self.live.update(watch_table(snapshot), refresh=True)

    def say(self, message: str) -> None:
        self.err.print(message, markup=False, highlight=False, soft_wrap=True)


class ProgressBar:
    """Epochs done over all the trials' planned epochs, with the trials finished and the best so far."""

    COLUMNS = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[best]}"))

    def __init__(self, err: Console, record: JobRecord):
        self.trials, epochs_per_trial = planned_work(record)
        self.progress = Progress(*self.COLUMNS, console=err)
        self.bar = self.progress.add_task(f"{record.id} queued", total=self.trials * epochs_per_trial, best="")

    def __enter__(self) -> "ProgressBar":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def show(self, snapshot: Snapshot) -> None:
        record, rows = snapshot.record, snapshot.rows
        done = sum(row["epochs"] for row in rows)
        description = f"{record.id} {record.status.value} ({finished_trials(rows)}/{self.trials} trials)"
        self.progress.update(self.bar, completed=done, best=best_text(record, rows), description=description)

    def say(self, message: str) -> None:
        self.progress.console.print(message, markup=False, highlight=False, soft_wrap=True)


def best_text(record: JobRecord, rows: list[dict]) -> str:
    best = best_so_far(record, rows)
    if best is None:
        return ""
    metric = deciding_target(record.target, rows).metric
    return f"best {best[0]['trial']} {METRIC_LABELS.get(metric, metric)} {best[1]:.3f}"


def watch_table(snapshot: Snapshot) -> Table:
    record, rows = snapshot.record, snapshot.rows
    saliency = record.kind == "saliency"
    title = f"{record.id}{f' ({record.name})' if record.name else ''}: {record.status.value}, {len(rows)} trial rows"
    updated = snapshot.note or f"updated {time.strftime('%H:%M:%S')}"
    caption = " · ".join(part for part in (best_text(record, rows), updated) if part)
    table = Table(title=title, caption=caption)
    columns = ["trial", "arch", "status", *(["iteration"] if saliency else []), "epoch", "workers", "train loss",
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
        cells += [str(row["epochs"]), str(last(row["world_sizes"]) or "-"), number(last(row["train_loss"]), 4),
                  number(last(row["val_miou_curve"])),
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
