import json

import pytest

from jobs.exceptions import NoSuchJob
from jobs import keys
from jobs.records import JobRecord, JobStatus, list_jobs, resolve_job_id, set_status


TRIALS = [{"name": "000_unet", "arch": "unet", "model": {"depth": 3}, "train": {"lr": 0.001}, "saliency": None}]


def test_record_hash_schema(redis_client):
    record = JobRecord(id="sweep-1", kind="sweep", spec={"archs": ["unet"]}, trials=TRIALS, name="demo",
                       ray_submission_id="sweep-1")
    record.save(redis_client)
    stored = redis_client.hgetall("segq:job:sweep-1")
    assert set(stored) == {"id", "kind", "spec", "trials", "status", "name", "ray_submission_id", "dashboard_url",
                           "error", "created_at", "started_at", "ended_at", "priority", "max_running_jobs",
                           "attempts"}
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
