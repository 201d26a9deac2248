"""The queue's rules on a real Redis: order by priority then submission, the running cap, positions,
and a job whose driver stopped beating losing its place and its slot."""
import time

from jobs import keys

from jobs.lifecycle import queue
from jobs.records import JobRecord, JobStatus, open_attempt, set_status


def enqueue(client, job_id: str, priority: int = 0, submitted: float | None = None, grace_s: float = 60) -> None:
    pipe = client.pipeline()
    queue.enqueue(pipe, job_id, priority, submitted or time.time(), grace_s=grace_s)
    pipe.execute()


def test_jobs_take_slots_by_priority_then_submission(redis_client):
    enqueue(redis_client, "a", submitted=100.0)
    enqueue(redis_client, "b", submitted=101.0)
    enqueue(redis_client, "urgent", priority=5, submitted=102.0)
    assert queue.positions(redis_client) == {"urgent": 1, "a": 2, "b": 3}
    assert not queue.try_admit(redis_client, "a", max_running=1)  # not its turn
    assert queue.try_admit(redis_client, "urgent", max_running=1)
    assert not queue.try_admit(redis_client, "a", max_running=1)  # the one slot is taken
    assert queue.try_admit(redis_client, "urgent", max_running=1)  # holding it already
    assert queue.position(redis_client, "a") == 1 and queue.position(redis_client, "urgent") is None
    assert queue.try_admit(redis_client, "a", max_running=2)  # a job that allows 2 at once
    queue.release(redis_client, "urgent")
    assert queue.try_admit(redis_client, "b", max_running=2)
    assert redis_client.zrange(keys.queue_running(), 0, -1) == ["a", "b"]


def test_a_silent_driver_loses_its_place_and_its_slot(redis_client):
    enqueue(redis_client, "dead", grace_s=60)
    assert queue.try_admit(redis_client, "dead", max_running=1)
    enqueue(redis_client, "next")
    assert not queue.try_admit(redis_client, "next", max_running=1)
    redis_client.zadd(keys.queue_alive(), {"dead": time.time() - 1})  # its deadline passed: no heartbeat
    assert queue.try_admit(redis_client, "next", max_running=1)
    assert redis_client.zscore(keys.queue_running(), "dead") is None


def test_heartbeat_keeps_the_deadline_and_leaves_the_queue_at_the_end(redis_client):
    enqueue(redis_client, "job", grace_s=1)
    with queue.Heartbeat(redis_client, "job", every_s=0.1, ttl_s=5):
        time.sleep(0.3)
        assert redis_client.zscore(keys.queue_alive(), "job") > time.time() + 4
        assert queue.wait_for_turn(redis_client, "job", 1, still_wanted=lambda: True, poll_s=0.05)
    assert all(redis_client.zscore(key, "job") is None
               for key in (keys.queue_waiting(), keys.queue_running(), keys.queue_alive()))


def test_a_cancelled_job_stops_waiting(redis_client):
    enqueue(redis_client, "first")
    enqueue(redis_client, "second")
    assert queue.try_admit(redis_client, "first", max_running=1)
    asked = []
    assert not queue.wait_for_turn(redis_client, "second", 1, still_wanted=lambda: asked.append(1) or len(asked) < 3,
                                   poll_s=0.01)
    assert len(asked) == 3


def test_each_attempt_has_start_end_and_reason(redis_client):
    record = JobRecord(id="sweep-1", kind="sweep", spec={"data": "d"})
    record.save(redis_client)
    open_attempt(redis_client, record.id, "submitted", record.id)
    set_status(redis_client, record.id, JobStatus.FAILED, error="Traceback ...\nthe driver ended")
    assert set_status(redis_client, record.id, JobStatus.QUEUED)  # `segq jobs resume`
    open_attempt(redis_client, record.id, "resumed", f"{record.id}-r1")
    assert set_status(redis_client, record.id, JobStatus.RUNNING)
    assert set_status(redis_client, record.id, JobStatus.FINISHED)
    attempts = JobRecord.load(redis_client, record.id).attempts
    assert [(a["kind"], a["reason"], a["ray_submission_id"]) for a in attempts] == [
        ("submitted", "the driver ended", "sweep-1"), ("resumed", "finished", "sweep-1-r1")]
    assert all(a["start"] <= a["end"] for a in attempts)
