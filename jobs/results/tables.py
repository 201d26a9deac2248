"""The report's tables, built from trial rows (jobs.results.summary.trial_rows): comparison, saliency
against its random control, per-class IoU; as Markdown or CSV, or header + rows for any renderer."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from typing import NamedTuple

from jobs.results.summary import deciding_target
from seg_models.metrics import SCORE_NAMES
from workers.target import Target

SCORE_HEADINGS = {"miou": "val mIoU", "mdice": "val mDice", "pixel_acc": "val pixel acc",
                  "mean_acc": "val mean acc", "fwiou": "val FWIoU"}
CONTROL_HEADER = ["saliency trial", "control trial", "iteration", "kept", "val mIoU (saliency)",
                  "val mIoU (random)", "saliency - random", "test mIoU (saliency)", "test mIoU (random)"]


class Table(NamedTuple):
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Ranking:
    """How trials are ordered and "best" is chosen: by their jobs' target. Jobs with different
    targets are compared by the default target, as their best values measure different things."""

    target: Target = field(default_factory=Target)
    shared: bool = False  # every row's job has `target`, so its best_value is the value to rank by

    @classmethod
    def of(cls, records: list, rows: list[dict] = ()) -> Ranking:
        """By what the records' trials decided their best epochs on (jobs.results.summary.deciding_target)."""
        targets = {deciding_target(record.target, [row for row in rows if row.get("job") == record.id])
                   for record in records}
        return cls(targets.pop(), shared=True) if len(targets) == 1 else cls()

    def value(self, row: dict) -> float | None:
        if self.shared and "best_value" in row:
            return row["best_value"]
        return self.target.value_of({"val": row.get("val")})

    def ranked(self, rows: list[dict]) -> list[dict]:
        return self.target.ranked((row, self.value(row)) for row in rows)

    def best(self, rows: list[dict]) -> dict | None:
        found = self.target.best((row, self.value(row)) for row in rows)
        return None if found is None else found[0]


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def score(row: dict, split: str, name: str):
    return (row.get(split) or {}).get(name)


def flatten_params(params: dict) -> dict:
    flat = {}
    for section, values in (params or {}).items():
        for name, value in (values or {}).items():
            flat[name if section != "model" else f"model.{name}"] = value
    return flat


def varying_params(rows: list[dict]) -> list[str]:
    """The hyperparameters that differ between trials: the ones worth a column."""
    flat = [flatten_params(row["params"]) for row in rows]
    names = sorted({name for params in flat for name in params})
    return [name for name in names if len({repr(params.get(name)) for params in flat}) > 1]


def miou_per_device_hour(row: dict):
    miou, hours = score(row, "val", "miou"), row["cost"]["device_hours"]
    return miou / hours if miou is not None and hours else None


def is_saliency(rows: list[dict]) -> bool:
    return any("iteration" in row for row in rows)


def class_names_of(rows: list[dict]) -> list[str]:
    for row in rows:
        if row.get("val") and row["val"].get("per_class_iou"):
            return list(row["val"]["per_class_iou"])
    return []


def row_label(row: dict) -> str:
    return row["trial"] if "iteration" not in row else f"{row['trial']} it{row['iteration']}"


# --- comparison -------------------------------------------------------------------------------

def comparison_rows(rows: list[dict], ranking: Ranking | None = None, compact: bool = False) -> Table:
    """The main table, best first by `ranking` (saliency: per trial, in iteration order).
    `compact` (the terminal) leaves out the parameter and cost columns: the trial name already
    says what varies, and the report and CSV have the rest."""
    params = [] if compact else varying_params(rows)
    multi_job = len({row["job"] for row in rows}) > 1
    saliency = is_saliency(rows)
    baseline = {row["trial"]: score(row, "val", "miou") for row in rows if row.get("iteration") == 1}
    ordered = (sorted(rows, key=lambda r: (r["job"], r["trial"], r["iteration"])) if saliency
               else (ranking or Ranking()).ranked(rows))
    body = []
    for row in ordered:
        line = ([row["job"]] if multi_job else []) + [row["trial"], row["arch"] or "-"]
        flat = flatten_params(row["params"])
        line += [fmt(flat.get(name), 6) for name in params]
        line += saliency_cells(row, baseline) if saliency else []
        body.append(line + score_cells(row) + run_cells(row) + ([] if compact else cost_cells(row)))
    return Table(comparison_header(params, multi_job, saliency, compact), body)


def comparison_header(params: list[str], multi_job: bool, saliency: bool, compact: bool) -> list[str]:
    header = (["job"] if multi_job else []) + ["trial", "arch"] + params
    header += ["iteration", "kept", "Δ val mIoU vs it. 1"] if saliency else []
    header += [SCORE_HEADINGS[name] for name in SCORE_NAMES] + ["test mIoU"]
    header += ["best epoch", "epochs", "status", "workers", "train s", "images/s", "params"]
    return header + ([] if compact else ["device-h", "mIoU/device-h", "peak MB"])


def saliency_cells(row: dict, baseline: dict) -> list[str]:
    base, current = baseline.get(row["trial"]), score(row, "val", "miou")
    delta = current - base if base is not None and current is not None else None
    return [str(row.get("iteration", "-")), fmt(row.get("kept_fraction")), "-" if delta is None else f"{delta:+.3f}"]


def score_cells(row: dict) -> list[str]:
    return [fmt(score(row, "val", name)) for name in SCORE_NAMES] + [fmt(score(row, "test", "miou"))]


def run_cells(row: dict) -> list[str]:
    status = row["status"] + (" (stopped early)" if row.get("stopped_early") else "")
    return [fmt(row["best_epoch"]), str(row["epochs"]), status, row.get("workers") or "-",
            fmt(row["train_time_s"], 1), fmt(row["images_per_s"], 1),
            f"{row['num_params']:,}" if row["num_params"] else "-"]


def cost_cells(row: dict) -> list[str]:
    return [fmt(row["cost"]["device_hours"], 4), fmt(miou_per_device_hour(row), 1),
            fmt(row["cost"]["peak_memory_mb"], 0)]


# --- saliency against its control -------------------------------------------------------------

def control_rows(rows: list[dict]) -> Table:
    """Saliency against its random-relevance control, iteration by iteration: same architecture,
    options, training and schedule; only the choice of removed pixels differs."""
    body = []
    for runs in runs_by_configuration(rows).values():
        if "random" not in runs or len(runs) < 2:
            continue
        control = runs["random"]
        for relevance, iterations in runs.items():
            if relevance == "random":
                continue
            for iteration in sorted(iterations):
                if iteration in control:
                    body.append(control_line(iterations[iteration], control[iteration], iteration))
    return Table(list(CONTROL_HEADER), body)


def runs_by_configuration(rows: list[dict]) -> dict[str, dict[str, dict[int, dict]]]:
    """configuration -> relevance -> iteration -> row; a configuration is everything but the relevance."""
    grouped: dict[str, dict[str, dict[int, dict]]] = {}
    for row in rows:
        relevance = (row["params"].get("saliency") or {}).get("relevance")
        grouped.setdefault(configuration(row), {}).setdefault(relevance, {})[row["iteration"]] = row
    return grouped


def configuration(row: dict) -> str:
    saliency = {k: v for k, v in (row["params"].get("saliency") or {}).items() if k != "relevance"}
    return repr((row["job"], row["arch"], row["params"].get("model"), row["params"].get("train"), saliency))


def control_line(ours: dict, theirs: dict, iteration: int) -> list[str]:
    a, b = score(ours, "val", "miou"), score(theirs, "val", "miou")
    return [ours["trial"], theirs["trial"], str(iteration), fmt(ours.get("kept_fraction")), fmt(a), fmt(b),
            "-" if a is None or b is None else f"{a - b:+.3f}",
            fmt(score(ours, "test", "miou")), fmt(score(theirs, "test", "miou"))]


# --- per class, Markdown, CSV -----------------------------------------------------------------

def per_class_rows(rows: list[dict]) -> Table:
    names = class_names_of(rows)
    body = [[row_label(row)] + [fmt((row["val"] or {}).get("per_class_iou", {}).get(n)) for n in names]
            for row in rows if row.get("val")]
    return Table(["trial"] + names, body)


def markdown_table(table: Table) -> str:
    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in table.rows]
    return "\n".join(lines)


def write_csv(rows: list[dict], stream) -> None:
    params = sorted({name for row in rows for name in flatten_params(row["params"])})
    classes = class_names_of(rows)
    columns = ["job", "trial", "arch", "iteration", "kept_fraction", "status", "epochs", "best_epoch"]
    columns += [f"{split}_{name}" for split in ("val", "test") for name in SCORE_NAMES]
    columns += [f"val_iou_{name}" for name in classes]
    columns += ["train_time_s", "images_per_s", "num_params", "device_hours", "peak_memory_mb", "best_checkpoint"]
    writer = csv.writer(stream)
    writer.writerow(columns + params)
    for row in rows:
        values = csv_values(row, classes, params)
        writer.writerow(["" if value is None else value for value in values])


def csv_values(row: dict, classes: list[str], params: list[str]) -> list:
    flat = flatten_params(row["params"])
    values = [row["job"], row["trial"], row["arch"], row.get("iteration", ""), row.get("kept_fraction", ""),
              row["status"], row["epochs"], row["best_epoch"]]
    values += [score(row, split, name) for split in ("val", "test") for name in SCORE_NAMES]
    values += [(row["val"] or {}).get("per_class_iou", {}).get(name) for name in classes]
    values += [row["train_time_s"], row["images_per_s"], row["num_params"], row["cost"]["device_hours"],
               row["cost"]["peak_memory_mb"], row["best_checkpoint"]]
    return values + [flat.get(name) for name in params]


def tuning_lines(rows: list[dict]) -> list[str]:
    """What the schedulers did, in words: each job's budget, the trials stopped and why, PBT's exploits."""
    from jobs.results.summary import job_budget

    lines = []
    for job in dict.fromkeys(row["job"] for row in rows):
        job_rows = [row for row in rows if row["job"] == job]
        budget = job_budget(job_rows)
        spent, planned = budget["trial_epochs"], budget["planned_trial_epochs"]
        curve = budget["best_vs_trial_epochs"]
        best = next(((spent_at, value) for spent_at, value in curve if value == curve[-1][1]), None) if curve else None
        line = (f"{job}: {spent} trial-epochs of the {planned} that running every trial to its end takes "
                f"({spent / planned:.0%}), {budget['device_hours']:.4f} device-hours")
        if best:
            line += f"; best {fmt(best[1], 4)} reached after {best[0]} trial-epochs"
        lines.append(line)
    for row in rows:
        if row.get("stop"):
            lines.append(f"{row['trial']}: stopped after {row['epochs']} epoch(s): {row['stop']['reason']}")
        for perturbation in row.get("perturbations") or []:
            lines.append(f"{row['trial']}: took over {perturbation['donor']}'s checkpoint of epoch "
                         f"{perturbation['epoch']} (pbt), lr now {perturbation['lr']:.3g}")
    return lines
