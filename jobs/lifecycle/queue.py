"""The cluster's job queue, held in Redis (keys.queue_*), so it outlives every client.

Every job's driver goes to Ray at once, then waits here for its turn before it runs any trial:
jobs take slots in order of priority (higher first), then submission time, and at most the job's
`max_running_jobs` run at once. The driver keeps a heartbeat deadline fresh while it waits and
runs; a job whose driver died without a word (SIGKILL, a lost node, a restarted cluster) passes
its deadline and loses its place and its slot at the next admission, so it never blocks the queue.
"""
from __future__ import annotations

import threading
import time

import redis

from jobs import keys

HEARTBEAT_S = 2.0  # how often a driver refreshes its deadline
HEARTBEAT_TTL_S = 20.0  # a driver silent this long is taken for dead
START_GRACE_S = 180.0  # a submitted driver's time to start (Ray may be busy starting others)
PRIORITY_LIMIT = 100
PRIORITY_STEP = 1e10  # above any unix time: priority first, then submission time

# KEYS: waiting, running, alive. ARGV: job, max running, now. 1 if the job holds a slot now.
ADMIT = """
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])
for _, job in ipairs(dead) do
  redis.call('ZREM', KEYS[1], job); redis.call('ZREM', KEYS[2], job); redis.call('ZREM', KEYS[3], job)
end
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 1 end
local first = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
if first ~= ARGV[1] or redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""


def queue_score(priority: int, submitted: float) -> float:
    return -priority * PRIORITY_STEP + submitted


def enqueue(pipe, job_id: str, priority: int, submitted: float, grace_s: float = START_GRACE_S) -> None:
    """Put the job in line (in the caller's pipeline, beside its record)."""
    pipe.zadd(keys.queue_waiting(), {job_id: queue_score(priority, submitted)})
    pipe.zadd(keys.queue_alive(), {job_id: time.time() + grace_s})


def release(client: redis.Redis, job_id: str) -> None:
    """The job leaves the queue: its place, its slot and its deadline."""
    pipe = client.pipeline()
    for key in (keys.queue_waiting(), keys.queue_running(), keys.queue_alive()):
        pipe.zrem(key, job_id)
    pipe.execute()


def try_admit(client: redis.Redis, job_id: str, max_running: int) -> bool:
    """Take a slot if this job is next in line and one is free; drops dead jobs first."""
    admitted = client.eval(ADMIT, 3, keys.queue_waiting(), keys.queue_running(), keys.queue_alive(),
                           job_id, max_running, time.time())
    return bool(admitted)


def prune_dead(client: redis.Redis) -> None:
    """Drop the jobs whose heartbeat deadline passed (what admission does first, for readers)."""
    for job_id in client.zrangebyscore(keys.queue_alive(), "-inf", time.time()):
        release(client, job_id)


def position(client: redis.Redis, job_id: str) -> int | None:
    """1 for the next job to run, 2 for the one after; None if the job is not waiting."""
    rank = client.zrank(keys.queue_waiting(), job_id)
    return None if rank is None else rank + 1


def heartbeat_fresh(client: redis.Redis, job_id: str) -> bool:
    """Whether the job's driver beat lately (or was submitted lately and may still be starting)."""
    deadline = client.zscore(keys.queue_alive(), job_id)
    return deadline is not None and deadline > time.time()


def positions(client: redis.Redis) -> dict[str, int]:
    prune_dead(client)
    return {job_id: index + 1 for index, job_id in enumerate(client.zrange(keys.queue_waiting(), 0, -1))}


def wait_for_turn(client: redis.Redis, job_id: str, max_running: int, still_wanted, poll_s: float = 0.25) -> bool:
    """Block until the job holds a slot (True), or `still_wanted()` says it was cancelled (False)."""
    while not try_admit(client, job_id, max_running):
        if not still_wanted():
            return False
        time.sleep(poll_s)
    return True


class Heartbeat:
    """Keeps the job's deadline fresh from a thread while the driver lives (waiting or running)."""

    def __init__(self, client: redis.Redis, job_id: str, every_s: float = HEARTBEAT_S,
                 ttl_s: float = HEARTBEAT_TTL_S):
        self.client, self.job_id, self.every_s, self.ttl_s = client, job_id, every_s, ttl_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.beat, name=f"segq-heartbeat-{job_id}", daemon=True)

    def beat(self) -> None:
        while not self.stop.is_set():
            try:
                self.client.zadd(keys.queue_alive(), {self.job_id: time.time() + self.ttl_s})
            except redis.exceptions.RedisError:
                pass  # Redis restarting: the next beat is in time unless it stays away for the whole TTL
            self.stop.wait(self.every_s)

    def __enter__(self) -> "Heartbeat":
        self.beat_once()
        self.thread.start()
        return self

    def beat_once(self) -> None:
        self.client.zadd(keys.queue_alive(), {self.job_id: time.time() + self.ttl_s})

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        release(self.client, self.job_id)
