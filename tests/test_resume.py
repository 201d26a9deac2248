"""Kill a sweep's driver with SIGKILL mid-sweep, then `segq jobs resume`: the job finishes, its
finished trial is not run again (no new metric events), the interrupted one continues from its
last checkpoint, and the record lists both attempts; resuming a finished job is refused (real Ray,
real Redis)."""
import json
import os
import signal

import pytest

from tests.conftest import run_segq, wait_until
from tests.failure_checks import (attempt_epochs, metric_events, record, redis_of, submit, train_epochs, trial_facts,
                                  wait_for_epoch, wait_for_stored_checkpoint, write_spec)
from tests.test_dead_driver import driver_pid

pytestmark = pytest.mark.ray
EPOCHS = 8


def test_resume_after_a_killed_driver(segq_env, tiny_dataset, tmp_path):
    client = redis_of(segq_env)
    spec = write_spec(tmp_path / "two.yaml", tiny_dataset, EPOCHS, [1e-3, 3e-3], max_concurrent_trials=1)
    job_id = submit(segq_env, spec)
    done, interrupted = "000_unet_lr=0.001", "001_unet_lr=0.003"
    wait_for_epoch(client, job_id, interrupted, 2, timeout=400)
    wait_for_stored_checkpoint(segq_env, job_id, interrupted, timeout=60)
    os.kill(driver_pid(job_id), signal.SIGKILL)
    events_of_done = metric_events(client, job_id, done)
    assert trial_facts(client, job_id, done)["status"] == "finished"
    assert train_epochs(client, job_id, done) == list(range(1, EPOCHS + 1))

    wait_until(lambda: json.loads(run_segq("jobs", "show", job_id, env=segq_env, check=True).stdout)["status"]
               == "failed", timeout=60, interval=1)  # Ray has seen the driver die
    resumed = run_segq("jobs", "resume", job_id, "--wait", env=segq_env, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert resumed.stdout.strip().splitlines()[-1] == job_id
    shown = json.loads(run_segq("jobs", "show", job_id, env=segq_env, check=True).stdout)
    assert shown["status"] == "finished" and shown["ray_submission_id"] == f"{job_id}-r1"
    attempts = shown["attempts"]
    assert [attempt["kind"] for attempt in attempts] == ["submitted", "resumed"]
    assert "driver ended (Ray status FAILED)" in attempts[0]["reason"] and attempts[1]["reason"] == "finished"
    assert all(attempt["start"] < attempt["end"] for attempt in attempts)

    assert metric_events(client, job_id, done) == events_of_done  # not run again
    before, after = attempt_epochs(client, job_id, interrupted)
    assert before[0] == 1 and after[-1] == EPOCHS and sorted(set(before + after)) == list(range(1, EPOCHS + 1))
    assert 1 < after[0] <= before[-1] + 1, (before, after)  # from its checkpoint, not from epoch 1
    assert len(trial_facts(client, job_id, interrupted)["attempts"]) == 2

    again = run_segq("jobs", "resume", job_id, env=segq_env)
    assert again.returncode == 1
    refusal = f"error: job {job_id} finished; there is nothing to resume (see `segq summary {job_id}`)"
    assert again.stderr.strip() == refusal
    assert record(client, job_id)["ray_submission_id"] == f"{job_id}-r1"
