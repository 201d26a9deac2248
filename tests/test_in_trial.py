"""One-worker trials that train in their own Tune trial, on a real local cluster and Redis: Tune
reuses the trial's process from trial to trial (and it keeps nothing of an ended trial), both paths
give the same numbers for the same seeded trial, and a trial whose process is killed resumes from its
last checkpoint with every (epoch, split) published once."""
from __future__ import annotations

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from tests.conftest import run_segq
from tests.failure_checks import (attempt_epochs, metric_fields, redis_of, submit, trial_facts, trial_names,
                                  wait_for_epoch, wait_for_status, write_spec)

pytestmark = pytest.mark.ray


def summary(env: dict, job_id: str) -> list[dict]:
    return json.loads(run_segq("summary", job_id, "--format", "json", env=env, check=True).stdout)


def submit_and_wait(env: dict, spec_path) -> str:
    result = run_segq("submit", "sweep", str(spec_path), "--wait", env=env, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_one_worker_trials_reuse_their_process_and_leave_nothing_behind(segq_env, tiny_dataset, tmp_path):
    lrs = [1e-3 * (index + 1) for index in range(10)]
    spec = write_spec(tmp_path / "reuse.yaml", tiny_dataset, 1, lrs, max_concurrent_trials=1, cpus_per_worker=0.5)
    dry = run_segq("submit", "sweep", str(spec), "--dry-run", env=segq_env, check=True)
    assert "each trial trains in its own Tune trial" in dry.stdout
    job_id = submit_and_wait(segq_env, spec)
    shown = json.loads(run_segq("jobs", "show", job_id, env=segq_env, check=True).stdout)
    assert shown["trial_path"].startswith("each trial trains in its own Tune trial")
    client = redis_of(segq_env)
    facts = [trial_facts(client, job_id, trial) for trial in trial_names(client, job_id)]
    assert all(fact["status"] == "finished" and fact["runner"] == "trial" for fact in facts)
    pids = [fact["ranks"][0]["pid"] for fact in facts]
    assert len(set(pids)) < len(facts), pids  # Tune reused the trials' process
    # Between trials the reused process returned what a trial took: its resident memory after the
    # 10th trial is within 10% of what it was after the 1st.
    rss = [fact["process_rss_mb"] for fact in facts]
    assert rss[-1] <= 1.1 * rss[0], rss


SEEDED = {"archs": ["unet"], "models": {"unet": {"base_width": 8, "depth": 2}},
          "train": {"epochs": 3, "batch_size": 4, "lr": 3e-3, "seed": 7, "augment": "basic"}}


def test_both_paths_give_the_same_numbers(segq_env, tiny_dataset, tmp_path):
    """The same seeded one-worker trial, in its Tune trial and through Ray Train with one worker:
    the same per-epoch training loss and val mIoU, and `segq eval` of its best checkpoint gives its row."""
    client, rows = redis_of(segq_env), {}

    def run(runner: str) -> list[dict]:
        path = tmp_path / f"{runner}.yaml"
        path.write_text(yaml.safe_dump({"data": str(tiny_dataset), **SEEDED,
                                        "resources": {"cpus_per_worker": 0.5, "runner": runner}}))
        return summary(segq_env, submit_and_wait({**segq_env, "SEGQ_MAX_RUNNING_JOBS": "2"}, path))

    with ThreadPoolExecutor(2) as pool:  # both at once: each trial's numbers depend on its seed alone
        rows = dict(zip(("trial", "train"), pool.map(run, ("trial", "train"))))
    for runner, [row] in rows.items():
        assert trial_facts(client, row["job"], row["trial"])["runner"] == runner
        result = run_segq("eval", row["best_checkpoint"], "--data", str(tiny_dataset), "--format", "json",
                          env=segq_env, check=True)
        assert abs(json.loads(result.stdout)["scores"]["miou"] - row["val"]["miou"]) <= 1e-6, runner
    in_trial, through_train = rows["trial"][0], rows["train"][0]
    for curve in ("train_loss", "val_miou_curve"):
        assert len(in_trial[curve]) == len(through_train[curve]) == 3
        assert all(abs(a - b) <= 1e-6 for a, b in zip(in_trial[curve], through_train[curve])), (
            curve, in_trial[curve], through_train[curve])


def test_a_killed_trial_process_resumes_from_its_last_checkpoint(segq_env, tiny_dataset, tmp_path):
    epochs = 6
    spec = write_spec(tmp_path / "killed.yaml", tiny_dataset, epochs, [1e-3], max_failures=2)
    client = redis_of(segq_env)
    job_id = submit(segq_env, spec)
    trial = "000_unet"
    wait_for_epoch(client, job_id, trial, 2, timeout=300)
    pid = trial_facts(client, job_id, trial)["ranks"][0]["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_for_status(client, job_id, ("finished", "failed"), timeout=600) == "finished"
    facts = trial_facts(client, job_id, trial)
    assert facts["status"] == "finished" and facts["ranks"][0]["pid"] != pid
    before, after = attempt_epochs(client, job_id, trial)
    assert before[0] == 1 and after[-1] == epochs and sorted(set(before + after)) == list(range(1, epochs + 1))
    assert 1 < after[0] <= before[-1] + 1, (before, after)  # from its checkpoint, not from epoch 1
    assert len(after) == len(set(after)) and len(before) == len(set(before))
    fields = metric_fields(client, job_id, trial)
    assert [field for field in fields if field.endswith(":train")] == [f"1:{e}:train" for e in range(1, epochs + 1)]
