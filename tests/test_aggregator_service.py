"""`segq aggregator` as a service: killed mid-stream and restarted, it loses and doubles nothing."""
import os
import signal
import subprocess
import time

import pytest

from jobs import keys
from jobs.results.aggregator import Aggregator
from jobs.records import JobRecord
from jobs.results.summary import trial_rows
from tests.conftest import SEGQ, run_segq, wait_until
from tests.test_aggregator import publish_trial

TRIALS = 3
EPOCHS = 1000  # ~9,000 entries, 18 batches of 500: time enough to freeze the aggregator between two


def publish_job(redis_url, client, job_id, epochs=EPOCHS):
    JobRecord(id=job_id, kind="sweep", spec={}).save(client)
    for index in range(TRIALS):
        mious = [(index + 1) * epoch / (10 * epochs) for epoch in range(1, epochs + 1)]
        publish_trial(redis_url, job_id, f"{index:03d}_unet", epochs, mious)


def progress(client, job_id):
    """(acknowledged, pending, total) entries of the job's stream in the aggregator group."""
    stream = keys.events(job_id)
    total = client.xlen(stream)
    group = next((g for g in client.xinfo_groups(stream) if g["name"] == keys.AGGREGATOR_GROUP), None)
    if group is None:
        return 0, 0, total
    # Not XINFO's entries-read: Redis may report it as unknown (nil).
    undelivered = len(client.xrange(stream, "(" + group["last-delivered-id"], "+"))
    return total - undelivered - group["pending"], group["pending"], total


def stop_mid_batch(process, client, job_id, timeout=30.0):
    """Freeze the service (SIGSTOP) and look: mid-batch means some entries acknowledged and some
    held unacknowledged. If not, let it run a moment and look again. No timing window to hit:
    the state is inspected while the process cannot move."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.02)
        process.send_signal(signal.SIGSTOP)
        acked, pending, total = progress(client, job_id)
        if 0 < acked < total and pending > 0:
            return
        process.send_signal(signal.SIGCONT)
    raise AssertionError(f"the aggregator was never seen mid-batch within {timeout}s")


def start_service(redis_url, job_id, *options):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGQ_")}
    env |= {"SEGQ_REDIS_URL": redis_url, "SEGQ_RAY_ADDRESS": "http://127.0.0.1:9"}
    return subprocess.Popen([SEGQ, "aggregator", "--job", job_id, "--interval", "0.1", *options], env=env,
                            stdout=subprocess.DEVNULL)


def rows_without_job(client, job_id):
    return [{name: value for name, value in row.items() if name != "job"} for row in trial_rows(client, job_id)]


def aggregate_copy(client, job_id, copy_id):
    """An uninterrupted, in-process aggregation of the same entries under another job id."""
    JobRecord(id=copy_id, kind="sweep", spec={}).save(client)
    for _, fields in client.xrange(keys.events(job_id)):
        client.xadd(keys.events(copy_id), fields)
    Aggregator(client, copy_id).drain()
    return rows_without_job(client, copy_id)


@pytest.mark.parametrize("restart", [[], ["--consumer", "aggregator-2", "--min-idle", "0.5"]],
                         ids=["same-consumer", "new-consumer"])
def test_killed_service_resumes_without_losing_entries(redis_url, redis_client, restart):
    publish_job(redis_url, redis_client, "job")
    first = start_service(redis_url, "job")
    try:
        stop_mid_batch(first, redis_client, "job")
    finally:
        first.kill()  # SIGKILL: no chance to ack what it holds
        first.wait(10)
    acked, pending, total = progress(redis_client, "job")
    assert 0 < acked < total and pending > 0, (acked, pending, total)  # killed mid-batch

    second = start_service(redis_url, "job", *restart)
    try:
        wait_until(lambda: progress(redis_client, "job")[0] == total, timeout=40, interval=0.1)
    finally:
        second.terminate()
        second.wait(10)
    assert redis_client.xpending(keys.events("job"), keys.AGGREGATOR_GROUP)["pending"] == 0

    rows = rows_without_job(redis_client, "job")
    assert len(rows) == TRIALS and all(row["epochs"] == EPOCHS and row["status"] == "finished" for row in rows)
    assert rows == aggregate_copy(redis_client, "job", "reference")
    board = redis_client.zrange(keys.leaderboard("job"), 0, -1, withscores=True)
    assert board == redis_client.zrange(keys.leaderboard("reference"), 0, -1, withscores=True)


def test_once_prints_what_it_applied(redis_url, redis_client):
    publish_job(redis_url, redis_client, "job", epochs=2)
    total = redis_client.xlen(keys.events("job"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGQ_")} | {"SEGQ_REDIS_URL": redis_url}
    first = run_segq("aggregator", "--job", "job", "--once", env=env, check=True, timeout=60)
    assert first.stdout.splitlines() == [f"job: applied {total} events", f"applied {total} events"]
    again = run_segq("aggregator", "--job", "job", "--once", env=env, check=True, timeout=60)
    assert again.stdout.splitlines() == ["applied 0 events"]


def read_without_ack(client, job_id, consumer, count):
    Aggregator(client, job_id).ensure_group()
    response = client.xreadgroup(keys.AGGREGATOR_GROUP, consumer, {keys.events(job_id): ">"}, count=count)
    return [entry_id for entry_id, _ in response[0][1]]


def consumer_pending(client, job_id):
    return {c["name"]: c["pending"] for c in client.xinfo_consumers(keys.events(job_id), keys.AGGREGATOR_GROUP)}


def test_entries_of_a_dead_consumer_are_taken_over(redis_url, redis_client):
    publish_job(redis_url, redis_client, "job", epochs=3)
    total = redis_client.xlen(keys.events("job"))
    # "other" read the first entries (among them trial 000's "running" status) and died.
    read_without_ack(redis_client, "job", "other", count=5)

    # While they are younger than min-idle, "other" may be alive: its entries stay its own.
    assert Aggregator(redis_client, "job", consumer="new", min_idle_ms=60_000).drain() == total - 5
    assert consumer_pending(redis_client, "job") == {"other": 5, "new": 0}

    time.sleep(0.2)
    assert Aggregator(redis_client, "job", consumer="new", min_idle_ms=100).drain() == 5
    assert consumer_pending(redis_client, "job") == {"other": 0, "new": 0}
    assert redis_client.xpending(keys.events("job"), keys.AGGREGATOR_GROUP)["pending"] == 0

    # Applied last, the old "running" did not overwrite the later "finished".
    rows = rows_without_job(redis_client, "job")
    assert [row["status"] for row in rows] == ["finished"] * TRIALS
    assert rows == aggregate_copy(redis_client, "job", "reference")


def test_entries_trimmed_while_pending_are_acknowledged(redis_url, redis_client):
    publish_job(redis_url, redis_client, "job", epochs=2)
    taken = read_without_ack(redis_client, "job", Aggregator(redis_client, "job").consumer, count=3)
    redis_client.xdel(keys.events("job"), taken[0])  # as MAXLEN trimming would
    Aggregator(redis_client, "job").drain()
    assert redis_client.xpending(keys.events("job"), keys.AGGREGATOR_GROUP)["pending"] == 0
