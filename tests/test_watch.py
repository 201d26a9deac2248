"""`segq watch JOB`: a live table from Redis until the job record's status is final, or until Ray
says the job's driver died (the one follow loop, jobs.lifecycle.follow, shared with `submit --wait`)."""
import os
import subprocess
import threading
import time
from types import SimpleNamespace

from typer.testing import CliRunner

from cluster.cli import app
from jobs.lifecycle.follow import follow
from jobs.results.progress import best_so_far, finished_trials
from jobs.records import JobRecord, JobStatus, set_status
from tests.conftest import SEGQ
from tests.test_aggregator import publish_trial


class FakeJobs:
    """The Ray Jobs client as the follow loop uses it: a status per call (the last one repeats),
    or an error when Ray cannot be reached."""

    def __init__(self, *statuses: str):
        self.statuses = list(statuses)
        self.asked = 0

    def get_job_status(self, submission_id):
        self.asked += 1
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if status == "unreachable":
            raise ConnectionError("dashboard gone")
        return SimpleNamespace(value=status)


class Recorder:
    """A display that keeps what it was shown and told."""

    def __init__(self):
        self.shown, self.said = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def show(self, snapshot):
        self.shown.append(snapshot)

    def say(self, message):
        self.said.append(message)


def watch(redis_url, job_id, tmp_path):
    # No SEGQ_RAY_ADDRESS and no embedded default: watch follows from Redis alone (and says so).
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGQ_")} | {"SEGQ_REDIS_URL": redis_url,
                                                                                 "SEGQ_HOME": str(tmp_path)}
    return subprocess.Popen([SEGQ, "watch", job_id, "--interval", "0.2"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_watch_follows_the_job_until_it_ends(redis_url, redis_client, tmp_path):
    JobRecord(id="sweep-watched", kind="sweep", spec={}, status=JobStatus.RUNNING).save(redis_client)
    publish_trial(redis_url, "sweep-watched", "000_unet_lr=0.001", 3, [0.25, 0.5, 0.4])
    process = watch(redis_url, "sweep-w", tmp_path)  # a unique prefix is enough
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
    assert cells == ["000_unet_lr=0.001", "unet", "finished", "3", "-", "0.3333", "0.400", "0.500", "2", "6.0s", "5.0"]


def test_watch_exits_1_when_the_job_failed(redis_url, redis_client, tmp_path):
    JobRecord(id="sweep-failed", kind="sweep", spec={}).save(redis_client)
    set_status(redis_client, "sweep-failed", JobStatus.FAILED, error="Traceback ...\nRuntimeError: out of memory")
    process = watch(redis_url, "sweep-failed", tmp_path)
    stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 1
    assert "sweep-failed: failed" in stdout
    assert stderr.strip().splitlines()[-1] == "job sweep-failed failed: RuntimeError: out of memory"
    assert "following the job from Redis only" in stderr


def running(client, job_id):
    JobRecord(id=job_id, kind="sweep", spec={}, status=JobStatus.RUNNING, ray_submission_id=job_id).save(client)


def test_watch_ends_when_ray_says_the_driver_died(redis_url, redis_client, monkeypatch, tmp_path):
    running(redis_client, "sweep-dead")
    jobs = FakeJobs("FAILED")
    monkeypatch.setattr("cluster.cli.watch.following_jobs_client", lambda ctx: jobs)
    result = CliRunner().invoke(app, ["--home", str(tmp_path), "--redis-url", redis_url, "watch", "sweep-dead"])
    reason = "the job's driver ended (Ray status FAILED); see `segq jobs logs sweep-dead`"
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == f"job sweep-dead failed: {reason}"
    record = JobRecord.load(redis_client, "sweep-dead")
    assert record.status is JobStatus.FAILED and record.error == reason
    assert "sweep-dead: failed" in result.stdout


def test_a_stopped_driver_means_cancelled_and_a_driver_that_wrote_its_reason_keeps_it(redis_url, redis_client):
    running(redis_client, "stopped")
    assert follow(redis_client, "stopped", Recorder(), FakeJobs("STOPPED"), 0.05).record.status is JobStatus.CANCELLED

    running(redis_client, "spoke")

    class DriverWritesFirst(FakeJobs):
        def get_job_status(self, submission_id):
            set_status(redis_client, "spoke", JobStatus.FAILED, error="trials failed: 000_unet")
            return super().get_job_status(submission_id)

    assert follow(redis_client, "spoke", Recorder(), DriverWritesFirst("FAILED"), 0.05).record.error == \
        "trials failed: 000_unet"


def test_follow_goes_on_from_redis_when_ray_cannot_tell(redis_url, redis_client):
    running(redis_client, "sweep-on")
    timer = threading.Timer(0.6, set_status, (redis_client, "sweep-on", JobStatus.FINISHED))
    timer.start()
    display, jobs = Recorder(), FakeJobs("RUNNING", "unreachable")
    try:
        snapshot = follow(redis_client, "sweep-on", display, jobs, interval=0.05, ray_check_s=0.0)
    finally:
        timer.cancel()
    assert snapshot.record.status is JobStatus.FINISHED and jobs.asked >= 3
    assert display.said == ["Ray cannot tell the status of sweep-on: following it from Redis only"]  # once
    assert display.shown[0].record.status is JobStatus.RUNNING


def row(trial, status="running", best_value=None):
    return {"trial": trial, "status": status, "best_value": best_value}


def test_the_best_so_far_follows_the_jobs_target():
    rows = [row("000", best_value=None), row("001", best_value=0.4), row("002", best_value=0.2),
            row("003", best_value=0.2)]
    maximise = JobRecord(id="j", kind="sweep", spec={})
    minimise = JobRecord(id="j", kind="sweep", spec={"metric": "train_loss", "mode": "min"})
    assert best_so_far(maximise, rows) == (rows[1], 0.4)
    assert best_so_far(minimise, rows) == (rows[2], 0.2)  # a tie keeps the first
    assert best_so_far(maximise, [row("000")]) is None


def test_finished_trials_count_every_final_status_once():
    rows = [row("000", "finished"), row("001", "failed"), row("002", "stopped"), row("003", "running"),
            {**row("000", "finished"), "iteration": 2}]  # saliency: a row per iteration
    assert finished_trials(rows) == 3
