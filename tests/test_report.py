"""The report from hand-made trial rows, no cluster: tables, ranking by the job's target, the
Markdown and the self-contained HTML page."""
from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from PIL import Image

from jobs.records import JobRecord, JobStatus
from jobs.results.report import write_report
from jobs.results.tables import Ranking, comparison_rows, control_rows, markdown_table, per_class_rows

CLASSES = ("background", "circle", "square")
ODD_NAME = '001_<b>fcn</b>&"x"'


def scores(miou: float) -> dict:
    return {"miou": miou, "pixel_acc": 0.9, "mean_acc": 0.7, "mdice": round(1 - miou, 3), "fwiou": 0.8,
            "per_class_iou": dict(zip(CLASSES, (0.9, 0.5, 0.4)))}


def trial_row(job: str, trial: str, arch: str, lr: float, miou: float | None, **extra) -> dict:
    row = {"job": job, "trial": trial, "arch": arch,
           "params": {"train": {"lr": lr, "epochs": 3}, "model": {"base_width": 8}},
           "status": "finished", "epochs": 3, "best_epoch": 2,
           "val": None if miou is None else scores(miou), "test": None if miou is None else scores(miou - 0.01),
           "train_loss": [1.2, 0.9, 0.7], "val_miou_curve": [None, miou, miou],
           "train_time_s": 12.5, "images_per_s": 40.0, "num_params": 12345, "best_checkpoint": None,
           "protocol": {"label_mode": "train_ids", "ignore_index": 255, "resolution": "32x32"},
           "cost": {"device": "cpu", "device_hours": 0.0035, "images_per_s": 40.0, "peak_memory_mb": 300},
           "stopped_early": False}
    row.update(extra)
    return row


def sweep_rows(job: str = "sweep-1") -> list[dict]:
    return [trial_row(job, "000_unet", "unet", 1e-3, 0.42),
            trial_row(job, ODD_NAME, "fcn", 1e-4, 0.61),
            trial_row(job, "002_segnet", "segnet", 1e-4, None, status="failed", epochs=0, best_epoch=None,
                      train_loss=[], val_miou_curve=[], train_time_s=0.0, images_per_s=None)]


def record(job: str, kind: str = "sweep", **spec) -> JobRecord:
    return JobRecord(id=job, kind=kind, spec={"data": "/nowhere", **spec}, status=JobStatus.FINISHED)


def saliency_rows(tmp_path, job: str = "saliency-1") -> list[dict]:
    rows = []
    for relevance, name, offset in (("saliency", "000_unet", 0.0), ("random", "001_unet_random", 0.1)):
        for iteration in (1, 2):
            samples = tmp_path / f"{name}_{iteration}.png"
            Image.fromarray(np.full((20, 30, 3), 40 * iteration, np.uint8)).save(samples)
            row = trial_row(job, name, "unet", 1e-3, 0.5 - 0.05 * iteration - offset, iteration=iteration,
                            kept_fraction=0.9 ** (iteration - 1), samples=str(samples))
            row["params"]["saliency"] = {"relevance": relevance, "keep_percent": 90}
            rows.append(row)
    return rows


def trials_of(table) -> list[str]:
    return [line[0] for line in table.rows]


def test_comparison_is_ordered_by_val_miou_by_default_missing_last():
    assert trials_of(comparison_rows(sweep_rows(), Ranking.of([record("sweep-1")]))) == \
        [ODD_NAME, "000_unet", "002_segnet"]


def test_comparison_is_ordered_by_the_jobs_target_and_its_best_value():
    rows = sweep_rows()
    for row, value in zip(rows, (0.2, 0.3, None)):  # train loss at the best epoch: lower is better
        row["best_value"] = value
    ranking = Ranking.of([record("sweep-1", metric="train_loss", mode="min")])
    assert trials_of(comparison_rows(rows, ranking)) == ["000_unet", ODD_NAME, "002_segnet"]


def test_jobs_with_different_targets_are_compared_by_val_miou():
    rows = sweep_rows("a") + sweep_rows("b")
    for row in rows:
        row["best_value"] = 1.0 if row["trial"] == "000_unet" else 0.0  # each job's own target, not comparable
    ranking = Ranking.of([record("a", metric="val_mdice"), record("b")])
    table = comparison_rows(rows, ranking)
    assert table.header[0] == "job"
    assert [line[1] for line in table.rows][:2] == [ODD_NAME, ODD_NAME]


def test_a_tie_keeps_the_first_trial():
    rows = [trial_row("j", "000_a", "unet", 1e-3, 0.5), trial_row("j", "001_b", "unet", 1e-4, 0.5)]
    assert Ranking().best(rows)["trial"] == "000_a"


def test_the_prediction_grid_is_drawn_from_the_best_trial_by_the_target(tmp_path, monkeypatch):
    drawn = []

    def draw(checkpoint, data_root, path):
        drawn.append((checkpoint, data_root))
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
        return path

    monkeypatch.setattr("jobs.results.report.plot_predictions", draw)
    rows = sweep_rows()
    for row, value in zip(rows, (0.1, 0.9, None)):  # val_mdice, min: 000_unet is best though its mIoU is lower
        row["best_value"] = value
        row["best_checkpoint"] = str(tmp_path / f"{row['trial'][:3]}.pt")
        (tmp_path / f"{row['trial'][:3]}.pt").write_bytes(b"")
    files = write_report(rows, [record("sweep-1", metric="val_mdice", mode="min")], tmp_path / "report")
    assert drawn == [(str(tmp_path / "000.pt"), "/nowhere")] and "predictions" in files
    assert "## Predictions of the best trial (validation)" in (tmp_path / "report" / "report.md").read_text()


def test_markdown_has_the_tables_and_links_the_plots(tmp_path):
    out = tmp_path / "report"
    files = write_report(sweep_rows(), [record("sweep-1")], out)
    assert {"report.md", "report.html", "trials.csv", "learning_curves", "per_class_iou", "miou_vs_time"} <= set(files)
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# segq report: sweep-1 (sweep, finished)\n")
    assert markdown_table(comparison_rows(sweep_rows(), Ranking())) in markdown
    assert markdown_table(per_class_rows(sweep_rows())) in markdown
    for name in ("learning_curves", "per_class_iou", "miou_vs_time"):
        assert f"({name}.png)" in markdown and (out / f"{name}.png").exists()
    with open(out / "trials.csv", newline="") as stream:
        assert [row["trial"] for row in csv.DictReader(stream)] == [row["trial"] for row in sweep_rows()]


def test_html_has_the_tables_embeds_the_images_and_escapes_names(tmp_path):
    out = tmp_path / "report"
    write_report(sweep_rows(), [record("sweep-1")], out)
    page = (out / "report.html").read_text()
    assert page.count("<table>") == 2 and "<th>val mIoU</th>" in page and "<td>0.610</td>" in page
    sources = re.findall(r'<img alt="[^"]*" src="([^"]*)"', page)
    assert len(sources) == 3 and all(source.startswith("data:image/png;base64,") for source in sources)
    assert ODD_NAME not in page and "<b>fcn</b>" not in page
    assert "001_&lt;b&gt;fcn&lt;/b&gt;&amp;&#34;x&#34;" in page


def test_saliency_report_compares_with_its_control_and_copies_the_grids(tmp_path):
    from tests.report_checks import check_report

    rows = saliency_rows(tmp_path)
    out = tmp_path / "report"
    write_report(rows, [record("saliency-1", kind="saliency")], out)
    assert trials_of(control_rows(rows)) == ["000_unet", "000_unet"]
    assert sorted(p.name for p in out.glob("samples_*.png")) == [
        "samples_000_unet_it1.png", "samples_000_unet_it2.png",
        "samples_001_unet_random_it1.png", "samples_001_unet_random_it2.png"]
    markdown = (out / "report.md").read_text()
    assert "## Saliency against its random control" in markdown and "`Δ` compares with iteration 1" in markdown
    page = (out / "report.html").read_text()
    assert page.count("<table>") == 3 and "<code>Δ</code>" in page
    assert page.count('src="data:image/png;base64,') == 4 + 4  # 4 plots, 4 sample grids
    check_report(out, expected_plots=("saliency_curve", "learning_curves", "per_class_iou", "miou_vs_time"))


def test_mixed_protocols_are_flagged_in_both_pages(tmp_path):
    rows = sweep_rows()
    rows[1]["protocol"] = {**rows[1]["protocol"], "resolution": "64x64"}
    out = tmp_path / "report"
    write_report(rows, [record("sweep-1")], out)
    assert "> **Warning:** these trials were evaluated under different protocols" in (out / "report.md").read_text()
    assert '<p class="warning">' in (out / "report.html").read_text()


@pytest.mark.parametrize("rows", [[], [trial_row("j", "000_a", "unet", 1e-3, None)]])
def test_a_job_without_scores_still_gets_a_report(tmp_path, rows):
    out = tmp_path / "report"
    files = write_report(rows, [record("j")], out)
    assert not [path for path in files.values() if path.suffix == ".png"]
    assert "<img" not in (out / "report.html").read_text()


def test_tuning_section_gives_the_budget_the_stops_and_the_exploits(tmp_path):
    def curve(*values):
        return [{"epoch": epoch, "value": value, "ts": 100.0 * epoch + offset}
                for epoch, value in enumerate(values, start=1) for offset in [len(values)]]

    target = {"metric": "val_miou", "mode": "max"}
    rows = [trial_row("sweep-1", "000_unet", "unet", 1e-3, 0.42, target=target, target_curve=curve(0.2, 0.3, 0.42),
                      perturbations=[{"epoch": 2, "donor": "001_unet", "lr": 0.0012}]),
            trial_row("sweep-1", "001_unet", "unet", 1e-1, 0.1, target=target, target_curve=curve(0.1),
                      status="stopped", epochs=1,
                      stop={"reason": "asha: val_miou 0.1 at the epoch-1 rung is below ...", "rung": 1, "epoch": 1})]
    files = write_report(rows, [record("sweep-1")], tmp_path)
    assert Image.open(files["tuning"]).size[0] > 0
    markdown = files["report.md"].read_text()
    assert "sweep-1: 4 trial-epochs of the 6 that running every trial to its end takes (67%)" in markdown
    assert "best 0.4200 reached after 4 trial-epochs" in markdown
    assert "001_unet: stopped after 1 epoch(s): asha: val_miou 0.1 at the epoch-1 rung" in markdown
    assert "000_unet: took over 001_unet's checkpoint of epoch 2 (pbt), lr now 0.0012" in markdown
