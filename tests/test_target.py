"""One target everywhere: on a dataset with no val split, trials decide their best epochs on the
training loss, and every display ranks by it and names it (real Ray and Redis, through the CLI)."""
import json

import pytest

from tests.conftest import prepare_synthetic_in_process, run_segq

pytestmark = pytest.mark.ray


def test_without_a_val_split_every_display_names_the_lowest_loss_trial(segq_env, tmp_path):
    data = prepare_synthetic_in_process(tmp_path / "no-val", 16, (0.75, 0.0, 0.25), size=(32, 32))
    assert "val" not in json.loads((data / "manifest.json").read_text())["splits"]
    # lr 1e-7 barely moves the weights, so its loss stays the highest; it is the first trial by name,
    # so a display that ranked by the job's val_miou (missing everywhere) would keep it first
    waited = run_segq("submit", "sweep", "--data", str(data), "--arch", "unet", "--lr", "1e-7,3e-3", "--epochs", "2",
                      "--batch-size", "4", "--workers-per-trial", "1", "--wait", env=segq_env, timeout=600)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    job_id = waited.stdout.strip().splitlines()[-1]

    rows = json.loads(run_segq("summary", job_id, "--format", "json", env=segq_env, check=True).stdout)
    assert all(row["target"] == {"metric": "train_loss", "mode": "min"} for row in rows), rows
    lowest = min(rows, key=lambda row: row["best_value"])
    assert lowest["best_value"] == min(lowest["train_loss"])
    assert [row["trial"] for row in rows if row["best"]] == [lowest["trial"]]
    assert lowest["trial"].endswith("lr=0.003"), rows

    watched = run_segq("watch", job_id, env=segq_env, check=True).stdout
    assert f"best {lowest['trial']} train loss {lowest['best_value']:.3f}" in " ".join(watched.split()), watched

    table = run_segq("summary", job_id, env=segq_env, check=True).stdout
    first_row = next(line for line in table.splitlines() if "lr=" in line)
    assert lowest["trial"] in first_row, table  # ranked by the training loss: the lowest first

    report = tmp_path / "report"
    run_segq("summary", job_id, "--format", "md", "--out", str(report), env=segq_env, check=True)
    ranked = [line for line in (report / "report.md").read_text().splitlines() if "lr=" in line and "|" in line]
    assert ranked and lowest["trial"] in ranked[0]
