"""The job queue on the shared embedded default (one job runs at a time there): jobs submitted back
to back wait `queued` with their position and run in order; cancel works on a queued job and on a
running one, whose trial processes are gone within 15 s while its finished trial keeps its
results (real Ray, real Redis)."""
import json
import subprocess
import time
from pathlib import Path

import pytest

from cluster.local import pid_alive
from jobs import keys
from tests.conftest import SEGQ, run_segq, wait_until
from tests.failure_checks import (cluster_state, job_processes, record, redis_of, submit, trial_facts,
                                  wait_for_epoch, wait_for_status, write_spec)

pytestmark = pytest.mark.ray
CANCEL_DEADLINE_S = 15


def listed(env: dict) -> dict[str, list[str]]:
    """`segq jobs list` as job id -> the row's other cells (kind, status, position, ...)."""
    rows = {}
    for line in run_segq("jobs", "list", env=env, check=True).stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("│┃ ").split("│")]
        if cells and cells[0].startswith("sweep-"):
            rows[cells[0]] = cells[1:]
    return rows


def test_queue_order_positions_and_cancel(segq_env, tiny_dataset, tmp_path):
    client = redis_of(segq_env)
    # The first job's second trial outlasts the submissions below; it is cancelled while it trains.
    long = write_spec(tmp_path / "long.yaml", tiny_dataset, [2, 200], [1e-3], max_concurrent_trials=1)
    short = write_spec(tmp_path / "short.yaml", tiny_dataset, 2, [1e-3])
    first, second, third, fourth = (submit(segq_env, spec) for spec in (long, short, short, short))

    wait_for_status(client, first, ("running",), timeout=180)
    rows = listed(segq_env)
    assert [rows[job][1:3] for job in (first, second, third, fourth)] == [
        ["running", ""], ["queued", "1"], ["queued", "2"], ["queued", "3"]], rows

    cancelled = run_segq("jobs", "cancel", fourth, env=segq_env, check=True)  # a queued job
    assert f"{fourth}: cancelled (was queued" in cancelled.stdout
    assert record(client, fourth)["status"] == "cancelled" and not client.exists(keys.events(fourth))
    assert listed(segq_env)[third][1:3] == ["queued", "2"]

    finished_trial, running_trial = (trial["name"] for trial in json.loads(record(client, first)["trials"]))
    wait_for_epoch(client, first, running_trial, 1, timeout=300)
    assert trial_facts(client, first, finished_trial)["status"] == "finished"
    cancel_running(segq_env, client, first)
    facts = trial_facts(client, first, finished_trial)
    assert facts["status"] == "finished" and Path(facts["best_checkpoint"]).exists()
    rows = json.loads(run_segq("summary", first, "--format", "json", env=segq_env, check=True).stdout)
    assert [row["epochs"] for row in rows if row["trial"] == finished_trial] == [2]

    assert wait_for_status(client, second, ("finished", "failed"), timeout=240) == "finished"
    assert wait_for_status(client, third, ("finished", "failed"), timeout=240) == "finished"
    ends = [float(record(client, job)["ended_at"]) for job in (first, second)]
    starts = [float(record(client, job)["started_at"]) for job in (second, third)]
    assert starts[0] >= ends[0] and starts[1] >= ends[1]  # one at a time, in submission order
    assert record(client, fourth)["status"] == "cancelled"


def cancel_running(env: dict, client, job_id: str) -> None:
    """Cancel a running job: the record says cancelled, and within 15 s none of its trial processes is left."""
    # Only this job runs now, so every trial process is its; the next job's come later, with new pids.
    before = job_processes(cluster_state(env)["ray"]["pid"])
    assert before, "the job runs no trial process to stop"
    started = time.monotonic()
    cancelling = subprocess.Popen([SEGQ, "jobs", "cancel", job_id], env=env, text=True, stdout=subprocess.PIPE)
    wait_until(lambda: not [pid for pid in before if pid_alive(pid)], timeout=CANCEL_DEADLINE_S, interval=0.2)
    assert time.monotonic() - started < CANCEL_DEADLINE_S
    assert f"{job_id}: cancelled (was running" in cancelling.communicate(timeout=60)[0]
    assert cancelling.returncode == 0
    assert record(client, job_id)["status"] == "cancelled"
    attempts = json.loads(record(client, job_id)["attempts"])
    assert len(attempts) == 1 and attempts[0]["end"] and "cancelled" in attempts[0]["reason"]
