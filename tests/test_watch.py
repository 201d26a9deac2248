"""`segq watch JOB`: a live table from Redis alone, until the job record's status is final."""
import os
import subprocess
import time

from jobs.records import JobRecord, JobStatus, set_status
from tests.conftest import SEGQ
from tests.test_aggregator import publish_trial


def watch(redis_url, job_id):
    # No SEGQ_RAY_ADDRESS and no embedded default: watch needs Redis only.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGQ_")} | {"SEGQ_REDIS_URL": redis_url}
    return subprocess.Popen([SEGQ, "watch", job_id, "--interval", "0.2"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_watch_follows_the_job_until_it_ends(redis_url, redis_client):
    JobRecord(id="sweep-watched", kind="sweep", spec={}, status=JobStatus.RUNNING).save(redis_client)
    publish_trial(redis_url, "sweep-watched", "000_unet_lr=0.001", 3, [0.25, 0.5, 0.4])
    process = watch(redis_url, "sweep-w")  # a unique prefix is enough
    try:
        time.sleep(1.0)
        assert process.poll() is None, process.communicate()
        set_status(redis_client, "sweep-watched", JobStatus.FINISHED)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "sweep-watched: finished" in stdout
    line = next(line for line in stdout.splitlines() if "000_unet_lr=0.001" in line)
    # status, epoch, last train loss, last and best val mIoU, best epoch, time, images/s
    cells = [cell.strip() for cell in line.strip("│ ").split("│")]
    assert cells == ["000_unet_lr=0.001", "unet", "finished", "3", "0.3333", "0.400", "0.500", "2", "6.0s", "5.0"]


def test_watch_exits_1_when_the_job_failed(redis_url, redis_client):
    JobRecord(id="sweep-failed", kind="sweep", spec={}).save(redis_client)
    set_status(redis_client, "sweep-failed", JobStatus.FAILED, error="Traceback ...\nRuntimeError: out of memory")
    process = watch(redis_url, "sweep-failed")
    stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 1
    assert "sweep-failed: failed" in stdout
    assert "job sweep-failed failed: RuntimeError: out of memory" in stderr
