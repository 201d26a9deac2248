"""Kill a running job's driver (SIGKILL): `segq watch` and `segq submit --wait` both end within 30 s
with exit 1 and one line, and the job record says failed, with the reason (real Ray, real Redis)."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from jobs import keys
from workers.redis_client import open_redis
from tests.conftest import SEGQ, run_segq, wait_until

pytestmark = pytest.mark.ray
DEADLINE_S = 30


def redis_of(env) -> redis.Redis:
    state = json.loads((Path(env["SEGQ_HOME"]) / "cluster.json").read_text())
    return open_redis(state["redis"]["url"], decode_responses=True)


def job_ids(client) -> set[str]:
    return set(client.zrange(keys.jobs_index(), 0, -1))


def driver_pid(job_id: str) -> int | None:
    """The pid of `python -m jobs.lifecycle.driver JOB` (not the shell Ray may start it through)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = [arg.decode(errors="replace") for arg in (proc / "cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue
        if argv[1:4] == ["-m", "jobs.lifecycle.driver", job_id]:
            return int(proc.name)
    return None


def start_segq(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([SEGQ, *args], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen, killed_at: float) -> tuple[int, str, str, float]:
    """Exit code, stdout, stderr, and the seconds from the kill until the exit was seen."""
    stdout, stderr = process.communicate(timeout=max(1.0, DEADLINE_S + 10 - (time.monotonic() - killed_at)))
    return process.returncode, stdout, stderr, time.monotonic() - killed_at


def stop(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.kill()
        process.communicate(timeout=10)


@pytest.fixture
def running_sweep(segq_env, tiny_dataset):
    """A sweep submitted with --wait, its job id once a trial trains, and its driver's pid."""
    client = redis_of(segq_env)
    before = job_ids(client)
    waiting = start_segq("submit", "sweep", "--data", str(tiny_dataset), "--arch", "unet", "--lr", "1e-3,3e-3",
                         "--epochs", "200", "--batch-size", "4", "--wait", env=segq_env)
    job_id = None
    try:
        job_id = wait_until(lambda: next(iter(job_ids(client) - before), None), timeout=120)
        pid = wait_until(lambda: driver_pid(job_id), timeout=120)
        wait_until(lambda: client.scard(keys.trials(job_id)) > 0, timeout=180)  # a trial is training
        yield job_id, pid, waiting
    finally:
        stop(waiting)
        if job_id:
            run_segq("jobs", "cancel", job_id, env=segq_env, timeout=120)  # if the test failed before the kill


def test_a_killed_driver_ends_watch_and_wait_and_fails_the_job(segq_env, running_sweep):
    job_id, pid, waiting = running_sweep
    watching = start_segq("watch", job_id, env=segq_env)
    try:
        time.sleep(2.0)  # let watch start following before the driver dies
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        watch_code, _, watch_err, watch_s = finish(watching, killed_at)
        wait_code, wait_out, wait_err, wait_s = finish(waiting, killed_at)
    finally:
        stop(watching)
    reason = f"the job's driver ended (Ray status FAILED); see `segq jobs logs {job_id}`"
    message = f"job {job_id} failed: {reason}"
    assert (watch_code, watch_err.strip().splitlines()) == (1, [message]), watch_err
    assert wait_code == 1 and wait_err.strip().splitlines()[-1] == message, wait_err
    assert wait_out.strip().splitlines()[-1] == job_id
    assert watch_s < DEADLINE_S and wait_s < DEADLINE_S, (watch_s, wait_s)

    shown = json.loads(run_segq("jobs", "show", job_id, env=segq_env, check=True).stdout)
    assert shown["status"] == "failed" and shown["error"] == reason
    assert [trial["name"] for trial in shown["trials"]] == ["000_unet_lr=0.001", "001_unet_lr=0.003"]
    assert all(trial["arch"] == "unet" and trial["train"]["epochs"] == 200 for trial in shown["trials"])
