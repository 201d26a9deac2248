import json

import pytest
import redis

from jobs.deployment import Deployment
from jobs.exceptions import NoSuchJob
from jobs import keys
from jobs.lifecycle.driver import set_final_status, start_running
from jobs.records import TRANSITIONS, JobRecord, JobStatus, list_jobs, resolve_job_id, set_status


TRIALS = [{"name": "000_unet", "arch": "unet", "model": {"depth": 3}, "train": {"lr": 0.001}, "saliency": None}]


def test_record_hash_schema(redis_client):
    record = JobRecord(id="sweep-1", kind="sweep", spec={"archs": ["unet"]}, trials=TRIALS, name="demo",
                       ray_submission_id="sweep-1")
    record.save(redis_client)
    stored = redis_client.hgetall("segq:job:sweep-1")
    assert set(stored) == {"id", "kind", "spec", "trials", "status", "name", "ray_submission_id", "dashboard_url",
                           "error", "created_at", "started_at", "ended_at", "priority", "max_running_jobs",
                           "attempts", "tensorboard_dir"}
    assert stored["status"] == "queued" and json.loads(stored["spec"]) == {"archs": ["unet"]}
    assert json.loads(stored["trials"]) == TRIALS
    assert redis_client.zscore("segq:jobs", "sweep-1") == pytest.approx(record.created_at)
    assert JobRecord.load(redis_client, "sweep-1") == record


def test_status_transitions_record_times(redis_client):
    JobRecord(id="j", kind="sweep", spec={}).save(redis_client)
    set_status(redis_client, "j", JobStatus.RUNNING)
    set_status(redis_client, "j", JobStatus.FAILED, error="boom")
    record = JobRecord.load(redis_client, "j")
    assert record.status is JobStatus.FAILED and record.error == "boom"
    assert record.started_at <= record.ended_at


def test_missing_job_raises_no_such_job(redis_client):
    with pytest.raises(NoSuchJob, match="no such job: nope"):
        JobRecord.load(redis_client, "nope")
    with pytest.raises(NoSuchJob):
        set_status(redis_client, "nope", JobStatus.RUNNING)


def test_listing_is_newest_first_and_prefixes_resolve(redis_client):
    for index, job_id in enumerate(["sweep-a1", "sweep-b2", "saliency-c3"]):
        JobRecord(id=job_id, kind=job_id.split("-")[0], spec={}, created_at=100.0 + index).save(redis_client)
    assert [r.id for r in list_jobs(redis_client)] == ["saliency-c3", "sweep-b2", "sweep-a1"]
    assert resolve_job_id(redis_client, "sweep-b") == "sweep-b2"
    with pytest.raises(NoSuchJob, match="ambiguous"):
        resolve_job_id(redis_client, "sweep-")


def test_key_schema():
    assert keys.job("x") == "segq:job:x"
    assert keys.events("x") == "segq:job:x:events"
    assert keys.trial_metrics("x", "t") == "segq:job:x:trial:t:metrics"
    assert keys.parse_metrics_field(keys.metrics_field(2, 5, "val")) == (2, 5, "val")


def test_a_record_without_trials_reads_as_an_empty_list(redis_client):
    JobRecord(id="old", kind="sweep", spec={}).save(redis_client)
    redis_client.hdel("segq:job:old", "trials")  # written before the field existed
    assert JobRecord.load(redis_client, "old").trials == []


class CancelLandsAfterTheRead(redis.Redis):
    """A client whose next status change is interrupted, once, exactly between its read of the
    status and its write: `segq jobs cancel` writes cancelled there, from a connection of its own."""

    def __init__(self, url: str, job_id: str):
        super().__init__(connection_pool=redis.ConnectionPool.from_url(url, decode_responses=True))
        self.job_id, self.url, self.cancels = job_id, url, 0

    def pipeline(self, transaction=True, shard_hint=None):
        pipe = super().pipeline(transaction, shard_hint)
        read = pipe.hmget

        def read_then_cancel(*args, **kwargs):
            values = read(*args, **kwargs)
            if pipe.watching and not self.cancels:
                self.cancels += 1
                canceller = redis.Redis.from_url(self.url, decode_responses=True)
                assert set_status(canceller, self.job_id, JobStatus.CANCELLED, error="cancelled with `segq jobs cancel`")
                canceller.close()
            return values

        pipe.hmget = read_then_cancel
        return pipe


@pytest.mark.parametrize("status, change", [
    (JobStatus.QUEUED, lambda client, job_id: start_running(client, JobRecord.load(client, job_id),
                                                            Deployment(redis_url="", storage="/tmp/segq-storage",
                                                                       embedded=True))),
    (JobStatus.RUNNING, lambda client, job_id: set_final_status(client, job_id, JobStatus.FINISHED)),
    (JobStatus.RUNNING, lambda client, job_id: set_final_status(client, job_id, JobStatus.FAILED, error="boom")),
])
def test_a_cancel_between_the_drivers_read_and_write_wins(redis_url, redis_client, status, change):
    """The driver reads the job's status, a cancel lands, then the driver writes: the job ends
    cancelled and stays so (the driver's write is refused on its second read)."""
    JobRecord(id="raced", kind="sweep", spec={}, status=status).save(redis_client)
    driver = CancelLandsAfterTheRead(redis_url, "raced")
    assert change(driver, "raced") in (False, None)
    assert driver.cancels == 1
    record = JobRecord.load(redis_client, "raced")
    assert record.status is JobStatus.CANCELLED and record.error == "cancelled with `segq jobs cancel`"
    assert not set_status(redis_client, "raced", JobStatus.RUNNING)  # and it stays cancelled
    assert JobRecord.load(redis_client, "raced").status is JobStatus.CANCELLED
    driver.close()


@pytest.mark.parametrize("final", [JobStatus.FINISHED, JobStatus.CANCELLED])
def test_a_finished_or_cancelled_job_never_changes_status(redis_client, final):
    JobRecord(id="ended", kind="sweep", spec={}, status=JobStatus.RUNNING).save(redis_client)
    assert set_status(redis_client, "ended", final)
    ended_at = JobRecord.load(redis_client, "ended").ended_at
    for status in JobStatus:
        assert not set_status(redis_client, "ended", status, error="late")
    record = JobRecord.load(redis_client, "ended")
    assert record.status is final and record.ended_at == ended_at and record.error == ""


def test_the_transition_table_is_applied_as_written(redis_client):
    """Every (from, to) pair: allowed exactly where TRANSITIONS says so; a failed job may be queued
    again (resume), nothing else leaves a final status."""
    for current in JobStatus:
        for status in JobStatus:
            JobRecord(id="t", kind="sweep", spec={}, status=current).save(redis_client)
            assert set_status(redis_client, "t", status) == (status in TRANSITIONS[current]), (current, status)
            assert JobRecord.load(redis_client, "t").status is (status if status in TRANSITIONS[current] else current)
    assert TRANSITIONS[JobStatus.FAILED] == {JobStatus.QUEUED}
