"""Comparison reports of one or more jobs: report.md and a self-contained report.html, both
rendered by Jinja2 templates (jobs/templates) from the same data, beside the PNGs and trials.csv.

Everything here reads trial rows (jobs.results.summary.trial_rows); the only other input is the best
checkpoint and the dataset, for the image | truth | prediction grid.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2

from jobs.results.plots import plot_class_heatmap, plot_learning_curves, plot_miou_vs_time, plot_predictions
from jobs.results.plots import plot_saliency_curve, plot_tuning
from jobs.results.tables import (Ranking, Table, comparison_rows, control_rows, is_saliency, markdown_table,
                                 per_class_rows)
from jobs.results.tables import tuning_lines, write_csv
from workers import storage

FIGURES = (("learning_curves", "Learning curves"), ("per_class_iou", "Per-class IoU"),
           ("miou_vs_time", "mIoU vs training time"), ("tuning", "Tuning: the target per trial and against the budget"),
           ("saliency_curve", "Saliency curve"),
           ("predictions", "Predictions of the best trial (validation)"))


@dataclass(frozen=True)
class Figure:
    caption: str
    file: str  # relative to the report folder


@dataclass(frozen=True)
class Report:
    """What both templates render."""

    title: str
    protocols: list[str]
    comparison: Table
    saliency: bool
    tuning: list[str]  # budget, stopped trials, exploits (jobs.results.tables.tuning_lines)
    controls: Table
    per_class: Table
    figures: list[Figure]
    samples: list[Figure]


def write_report(rows: list[dict], records: list, out: Path) -> dict[str, Path]:
    """report.md, report.html (images embedded) and the PNGs in OUT; returns what was written."""
    out.mkdir(parents=True, exist_ok=True)
    ranking = Ranking.of(records, rows)
    files = draw_plots(rows, out)
    files.update(copy_samples([row for row in rows if "iteration" in row], out))
    predictions = draw_best_predictions(rows, records, ranking, out / "predictions.png")
    if predictions:
        files["predictions"] = predictions
    report = build_report(rows, records, files, ranking, out)
    (out / "report.md").write_text(render_markdown(report))
    (out / "report.html").write_text(render_html(report, out))
    files["report.md"], files["report.html"] = out / "report.md", out / "report.html"
    with open(out / "trials.csv", "w", newline="") as stream:
        write_csv(rows, stream)
    files["trials.csv"] = out / "trials.csv"
    return files


def draw_plots(rows: list[dict], out: Path) -> dict[str, Path]:
    files = {}
    scored = [row for row in rows if row.get("val")]
    if scored:
        files["learning_curves"] = plot_learning_curves(scored, out / "learning_curves.png")
        files["per_class_iou"] = plot_class_heatmap(scored, out / "per_class_iou.png")
        files["miou_vs_time"] = plot_miou_vs_time(scored, out / "miou_vs_time.png")
    if any(row.get("target_curve") and "iteration" not in row for row in rows):  # sweeps: what tuning spent
        files["tuning"] = plot_tuning([row for row in rows if "iteration" not in row], out / "tuning.png")
    saliency_rows = [row for row in rows if "iteration" in row]
    if saliency_rows:
        files["saliency_curve"] = plot_saliency_curve(saliency_rows, out / "saliency_curve.png")
    return files


def copy_samples(saliency_rows: list[dict], out: Path) -> dict[str, Path]:
    """Each iteration's grid of training images, copied in so the report folder stands alone."""
    files = {}
    for row in saliency_rows:
        if row.get("samples") and Path(row["samples"]).exists():
            target = out / f"samples_{safe(row['trial'])}_it{row['iteration']}.png"
            target.write_bytes(Path(row["samples"]).read_bytes())
            files[f"samples {row['trial']} iteration {row['iteration']}"] = target
    return files


def draw_best_predictions(rows: list[dict], records: list, ranking: Ranking, path: Path) -> Path | None:
    best = ranking.best([row for row in rows if row.get("val")])
    if best is None or not best.get("best_checkpoint") or not storage.exists(best["best_checkpoint"]):
        return None
    data_root = next((record.spec.get("data") for record in records if record.id == best["job"]), None)
    return plot_predictions(best["best_checkpoint"], data_root, path) if data_root else None


def safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def protocols(rows: list[dict]) -> list[str]:
    seen = {tuple(sorted((row.get("protocol") or {}).items())) for row in rows if row.get("protocol")}
    return [", ".join(f"{k}: {v}" for k, v in protocol) for protocol in sorted(seen)]


def build_report(rows: list[dict], records: list, files: dict[str, Path], ranking: Ranking, out: Path) -> Report:
    figures = [Figure(heading, str(files[key].relative_to(out))) for key, heading in FIGURES if key in files]
    samples = [Figure(key, str(path.relative_to(out))) for key, path in files.items() if key.startswith("samples ")]
    return Report(
        title=", ".join(f"{r.id} ({r.kind}, {r.status.value})" for r in records),
        protocols=protocols(rows),
        comparison=comparison_rows(rows, ranking),
        saliency=is_saliency(rows),
        tuning=tuning_lines(rows),
        controls=control_rows([row for row in rows if "iteration" in row]),
        per_class=per_class_rows(rows),
        figures=figures,
        samples=samples,
    )


def environment() -> jinja2.Environment:
    """Both templates: HTML autoescaped, Markdown as is (its cells are escaped by markdown_table)."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("jobs.results", "templates"),
                             autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["markdown_table"] = markdown_table
    return env


def render_markdown(report: Report) -> str:
    return environment().get_template("report.md.j2").render(report=report)


def render_html(report: Report, out: Path) -> str:
    """The same report as one page, its images embedded as data URIs."""
    images = {figure.file: data_uri(out / figure.file) for figure in report.figures + report.samples}
    return environment().get_template("report.html.j2").render(report=report, images=images)


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
