"""Metric events from a trial to its job's Redis stream.

Events are JSON (never pickle), pipelined, and the stream is bounded by MAXLEN. Each metrics event
carries (trial, iteration, epoch, split), so publishing the same epoch twice after a restart
replaces rather than adds. If Redis is unreachable, events wait in a bounded buffer and go out
with the next successful publish: training never fails because metrics are late.
"""
from __future__ import annotations

import json
import logging
import time
from collections import deque

import redis

from jobs import keys

log = logging.getLogger(__name__)
BUFFER_LIMIT = 10_000


class MetricsPublisher:
    def __init__(self, redis_url: str, job_id: str, trial: str):
        self.client = redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=5)
        self.job_id = job_id
        self.trial = trial
        self.buffer: deque[str] = deque(maxlen=BUFFER_LIMIT)

    def trial_event(self, status: str | None = None, **facts) -> None:
        """Facts about the trial (arch, params, num_params, ...) and, if given, its new status."""
        event = {"type": "trial", "trial": self.trial, **facts}
        if status is not None:
            event["status"] = status
        self._queue(event)

    def metrics_event(self, split: str, epoch: int, metrics: dict, iteration: int = 1) -> None:
        self._queue({"type": "metrics", "trial": self.trial, "iteration": iteration, "epoch": epoch,
                     "split": split, "metrics": metrics})

    def _queue(self, event: dict) -> None:
        event["ts"] = time.time()
        self.buffer.append(json.dumps(event, allow_nan=False, default=float))
        self.flush()

    def flush(self) -> bool:
        """Send everything buffered; False (and keep the buffer) if Redis is unreachable."""
        if not self.buffer:
            return True
        pipe = self.client.pipeline(transaction=False)
        pending = list(self.buffer)
        for data in pending:
            pipe.xadd(keys.events(self.job_id), {"data": data}, maxlen=keys.EVENTS_MAXLEN, approximate=True)
        try:
            pipe.execute()
        except redis.exceptions.RedisError as error:
            log.warning("metrics for %s wait in a buffer (%d events): %s", self.trial, len(self.buffer), error)
            return False
        for _ in pending:
            self.buffer.popleft()
        return True

    def close(self, retry_seconds: float = 30.0) -> None:
        deadline = time.monotonic() + retry_seconds
        while not self.flush() and time.monotonic() < deadline:
            time.sleep(1.0)
        self.client.close()
