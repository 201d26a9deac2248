"""Tune's schedulers and Optuna on real Ray and Redis, through the CLI: ASHA stops a weak trial at its
rung and the summary says why, PBT makes a trial take over another's checkpoint and go on from
its epoch, Optuna suggests and runs its samples."""
import json

import pytest
import yaml

from tests.conftest import run_segq

pytestmark = pytest.mark.ray

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
    # loss (its lr barely moves the weights) is worse than the first's, so ASHA stops it there. A
    # non-integer reduction factor (rungs at epochs 1 and 1.5) and max_epochs below the trials'
    # epochs (the rungs end at 2; a trial past them all runs to its end) finish the job.
    rows = by_trial(submit(segq_env, {
        "data": str(tiny_dataset), "archs": ["unet"], "models": TINY_UNET, "metric": "train_loss", "mode": "min",
        "train": {"epochs": 3, "batch_size": 8, "augment": "none", "lr": {"grid": [3e-3, 1e-7]}},
        "scheduler": {"kind": "asha", "grace_period": 1, "reduction_factor": 1.5, "max_epochs": 2},
        "resources": {"max_concurrent_trials": 1}}, tmp_path))
    strong, weak = rows["000_unet_lr=0.003"], rows["001_unet_lr=1e-07"]
    assert strong["status"] == "finished" and strong["epochs"] == 3 and strong["test"] is not None
    assert weak["status"] == "stopped" and weak["epochs"] == 1, weak
    assert weak["stop"]["rung"] == 1 and weak["stop"]["reason"].startswith("asha: train_loss")
    # what ASHA compared against: the one value recorded at the rung before it, the strong trial's
    cutoff = strong["train_loss"][0]
    assert f"(rung 1) is below the top 1/1.5 of 1 trials (cutoff {cutoff:.4g})" in weak["stop"]["reason"]
    assert weak["test"] is None  # the test split is scored once, at a trial's end
    budget = weak["job_budget"]
    assert (budget["trial_epochs"], budget["planned_trial_epochs"], budget["stopped_trials"]) == (4, 6, 1)
    # device-hours: the CPUs each trial held (its one 0.5-CPU worker, in its Tune trial) x its wall time
    for row in (strong, weak):
        held = row["wall_time_s"] * 0.5 / 3600  # one 0.5-CPU worker, in its Tune trial, for its wall time
        assert abs(row["cost"]["cpu_hours"] - held) <= 1e-6 and abs(row["cost"]["device_hours"] - held) <= 1e-6
        assert row["wall_time_s"] > row["train_time_s"] + row["eval_time_s"] and row["cost"]["gpu_hours"] == 0
    assert budget["device_hours"] == round(strong["cost"]["device_hours"] + weak["cost"]["device_hours"], 6)


def test_hyperband_halves_as_its_brackets_define(segq_env, tiny_dataset, tmp_path):
    """5 trials of 5 epochs: Ray's first bracket runs trials 0 and 1 for all 5 epochs; the second
    holds trials 2-4 with a rung at epoch 1, where the best goes on, and runs to its end with test
    scores, while the other two stop."""
    spec = {"data": str(tiny_dataset), "archs": ["unet"], "models": TINY_UNET, "metric": "train_loss", "mode": "min",
            "train": {"epochs": 5, "batch_size": 8, "augment": "none",
                      "lr": {"grid": [3e-3, 1e-7, 1e-7, 3e-3, 1e-6]}},
            "scheduler": "hyperband"}
    rows = list(by_trial(submit(segq_env, spec, tmp_path)).values())
    for row in rows[:2]:
        assert row["status"] == "finished" and row["epochs"] == 5 and row["test"] is not None, row
    bracket = rows[2:]
    best = min(bracket, key=lambda row: row["train_loss"][0])
    assert best["trial"].startswith("003") and best["status"] == "finished" and best["epochs"] == 5
    assert best["test"] is not None and best["best_checkpoint"]
    for row in bracket:
        if row is not best:
            assert row["status"] == "stopped" and row["epochs"] == 1 and row["test"] is None, row
    # forms that would halve nothing are refused at submission, in one line
    for changed in ({"train": {**spec["train"], "lr": {"grid": [3e-3, 1e-7, 1e-6]}}},
                    {"resources": {"max_concurrent_trials": 1}}):
        path = tmp_path / "refused.yaml"
        path.write_text(yaml.safe_dump({**spec, **changed}))
        result = run_segq("submit", "sweep", str(path), env=segq_env)
        assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "hyperband" in result.stderr and str(path) in result.stderr


PBT_SPEC = {"archs": ["unet"], "models": TINY_UNET,
            "train": {"epochs": 4, "batch_size": 8, "augment": "none", "weight_decay": 1e-4,
                      "lr": {"grid": [3e-3, 1e-3, 3e-4, 1e-7]}},
            "scheduler": {"kind": "pbt", "perturbation_interval": 2,
                          "mutations": {"lr": {"loguniform": [1e-4, 1e-2]}, "weight_decay": {"uniform": [0, 1e-3]}}}}


def test_pbt_rows_and_perturbations_hold(segq_env, tiny_dataset, tmp_path):
    from jobs.checkpoints.evaluate import evaluate_checkpoint

    spec = {"data": str(tiny_dataset), **PBT_SPEC}
    rows = by_trial(submit(segq_env, spec, tmp_path))
    exploiting = [row for row in rows.values() if row["perturbations"]]
    assert exploiting, "no trial was perturbed"
    for row in rows.values():
        assert row["status"] == "finished" and row["epochs"] == 4  # epochs went on, not over
        assert row["val"]["miou"] == row["best_value"], row  # its own best epoch, never a donor's
        assert row["best_checkpoint"], row
        miou = evaluate_checkpoint(row["best_checkpoint"], tiny_dataset).scores["miou"]
        assert abs(miou - row["val"]["miou"]) <= 1e-6, (row["trial"], miou, row["val"]["miou"])
    for row in exploiting:
        for perturbation in row["perturbations"]:
            donor, epoch = rows[perturbation["donor"]], perturbation["epoch"]
            assert row["best_epoch"] > epoch  # its best is decided among the epochs after the exploit
            in_effect, mutated = perturbation["in_effect"], perturbation["train"]
            assert abs(in_effect["lr"] - mutated["lr"]) <= 1e-12 * mutated["lr"], perturbation
            assert in_effect["weight_decay"] == mutated["weight_decay"], perturbation
            assert row["params"]["train"]["lr"] == mutated["lr"]
            # after the exploit, its loss starts from the donor's, not from its own
            own, theirs = row["train_loss"], donor["train_loss"]  # index epoch - 1: the loss of `epoch`
            assert abs(own[epoch] - theirs[epoch - 1]) < abs(own[epoch - 1] - theirs[epoch - 1]), (own, theirs)
    again = by_trial(submit(segq_env, spec, tmp_path))
    assert [row["perturbations"] for row in again.values()] == [row["perturbations"] for row in rows.values()]


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
    # Optuna's seeded TPE made them: trial N has the value Optuna's own study suggests N-th for this
    # space and seed (Tune's random search, or any other sampler, would draw different ones)
    import optuna

    from jobs.execution.tuning import OptunaSpace

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1), direction="maximize")
    space = OptunaSpace({"unet": {}, "train": {"lr": ("loguniform", [1e-4, 1e-2])}}, ["unet"], {})
    expected = []
    for _ in range(4):
        suggestion = study.ask()
        space(suggestion)
        expected.append(suggestion.params["train/lr"])
    by_number = {int(row["trial"][:3]): row["params"]["train"]["lr"] for row in rows}
    assert [by_number[number] for number in range(4)] == pytest.approx(expected, rel=1e-12, abs=0)
