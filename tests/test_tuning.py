"""Tune's schedulers and Optuna on real Ray and Redis, through the CLI: ASHA stops a weak trial at its
rung and the summary says why, PBT makes a trial take over another's checkpoint and go on from
its epoch, Optuna suggests and runs its samples."""
import json

import yaml

from tests.conftest import run_segq

TINY_UNET = {"unet": {"base_width": 4, "depth": 2}}


def submit(env, spec: dict, tmp_path, *flags: str) -> list[dict]:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    job = run_segq("submit", "sweep", str(path), "--wait", *flags, env=env, check=True).stdout.strip().splitlines()[-1]
    return json.loads(run_segq("summary", job, "--format", "json", env=env, check=True).stdout)


def by_trial(rows: list[dict]) -> dict[str, dict]:
    return {row["trial"]: row for row in rows}


def test_asha_stops_a_weak_trial_at_its_rung(segq_env, tiny_dataset, tmp_path):
    # One trial at a time, the learning one first: at the epoch-1 rung the second trial's training
    # loss (its lr barely moves the weights) is worse than the first's, so ASHA stops it there.
    rows = by_trial(submit(segq_env, {
        "data": str(tiny_dataset), "archs": ["unet"], "models": TINY_UNET, "metric": "train_loss", "mode": "min",
        "train": {"epochs": 3, "batch_size": 8, "augment": "none", "lr": {"grid": [3e-3, 1e-7]}},
        "scheduler": {"kind": "asha", "grace_period": 1}, "resources": {"max_concurrent_trials": 1}}, tmp_path))
    strong, weak = rows["000_unet_lr=0.003"], rows["001_unet_lr=1e-07"]
    assert strong["status"] == "finished" and strong["epochs"] == 3 and strong["test"] is not None
    assert weak["status"] == "stopped" and weak["epochs"] == 1, weak
    assert weak["stop"]["rung"] == 1 and weak["stop"]["reason"].startswith("asha: train_loss")
    assert weak["test"] is None  # the test split is scored once, at a trial's end
    assert weak["job_budget"] == {"trial_epochs": 4, "planned_trial_epochs": 6, "device_hours": weak["job_budget"]
                                  ["device_hours"], "stopped_trials": 1}


def test_pbt_trial_takes_over_the_better_trials_checkpoint(segq_env, tiny_dataset, tmp_path):
    rows = by_trial(submit(segq_env, {
        "data": str(tiny_dataset), "archs": ["unet"], "models": TINY_UNET, "metric": "train_loss", "mode": "min",
        "train": {"epochs": 4, "batch_size": 8, "augment": "none", "lr": {"grid": [3e-3, 1e-7]}},
        "scheduler": {"kind": "pbt", "perturbation_interval": 2}}, tmp_path))
    exploiting = [row for row in rows.values() if row["perturbations"]]
    assert exploiting, "no trial was perturbed"
    row = exploiting[0]
    perturbation = row["perturbations"][0]
    donor, epoch = rows[perturbation["donor"]], perturbation["epoch"]
    assert all(r["status"] == "finished" and r["epochs"] == 4 for r in rows.values())  # epochs went on, not over
    own = {point["epoch"]: point["value"] for point in row["target_curve"]}
    theirs = {point["epoch"]: point["value"] for point in donor["target_curve"]}
    # after the exploit, its loss starts from the donor's, not from its own
    assert abs(own[epoch + 1] - theirs[epoch]) < abs(own[epoch] - theirs[epoch])
    assert row["params"]["train"]["lr"] == perturbation["lr"]  # it trains on under the mutated lr


def test_optuna_runs_its_samples(segq_env, tiny_dataset, tmp_path):
    spec = {"data": str(tiny_dataset), "archs": ["unet"], "models": TINY_UNET, "search": "optuna", "samples": 4,
            "search_seed": 1, "train": {"epochs": 1, "batch_size": 8, "augment": "none",
                                        "lr": {"loguniform": [1e-4, 1e-2]}},
            "resources": {"max_concurrent_trials": 2}}
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(spec))
    dry = run_segq("submit", "sweep", str(plan), "--dry-run", env=segq_env, check=True)
    assert "train.lr: loguniform [0.0001, 0.01]" in dry.stdout and "4 trials suggested by optuna" in dry.stderr
    rows = submit(segq_env, spec, tmp_path)
    assert len(rows) == 4 and all(row["status"] == "finished" for row in rows)
    lrs = [row["params"]["train"]["lr"] for row in rows]
    assert len(set(lrs)) == 4 and all(1e-4 <= lr <= 1e-2 for lr in lrs)
    assert sorted(row["trial"][:3] for row in rows) == ["000", "001", "002", "003"]
