"""Events from a trial's rank 0 to its job's Redis stream (the contract: workers.events).

Events are JSON (never pickle), pipelined, and the stream is bounded by MAXLEN. If Redis is
unreachable, events wait in a bounded buffer and go out with the next successful publish:
training never fails because metrics are late.

The stream key comes from the caller (the key schema lives in jobs.keys), so this module needs
nothing from the control plane.
"""
from __future__ import annotations

import logging
import time
from collections import deque

import redis
from pydantic import BaseModel

from workers.events import BestEvent, MetricsEvent, SaliencyEvent, TrialEvent, encode_event
from workers.target import Target

log = logging.getLogger(__name__)
BUFFER_LIMIT = 10_000
STREAM_MAXLEN = 100_000


class MetricsPublisher:
    def __init__(self, redis_url: str, stream: str, trial: str, maxlen: int = STREAM_MAXLEN):
        self.client = redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=5)
        self.stream = stream
        self.trial = trial
        self.maxlen = maxlen
        self.buffer: deque[str] = deque(maxlen=BUFFER_LIMIT)

    def trial_event(self, status: str | None = None, **facts) -> None:
        """Facts about the trial (arch, params, num_params, ...) and, if given, its new status."""
        self.publish(TrialEvent(trial=self.trial, status=status, **facts))

    def metrics_event(self, split: str, epoch: int, metrics: dict, iteration: int = 1) -> None:
        self.publish(MetricsEvent(trial=self.trial, iteration=iteration, epoch=epoch, split=split, metrics=metrics))

    def best_event(self, iteration: int, epoch: int, best_epoch: int, value: float | None, target: Target) -> None:
        self.publish(BestEvent(trial=self.trial, iteration=iteration, epoch=epoch, best_epoch=best_epoch,
                               value=value, metric=target.metric, mode=target.mode))

    def saliency_event(self, iteration: int, kept_fraction: float, next_kept_fraction: float | None,
                       checkpoint: str, samples: str) -> None:
        self.publish(SaliencyEvent(trial=self.trial, iteration=iteration, kept_fraction=kept_fraction,
                                   next_kept_fraction=next_kept_fraction, checkpoint=checkpoint, samples=samples))

    def publish(self, event: BaseModel) -> None:
        self.buffer.append(encode_event(event))
        self.flush()

    def flush(self) -> bool:
        """Send everything buffered; False (and keep the buffer) if Redis is unreachable."""
        if not self.buffer:
            return True
        pipe = self.client.pipeline(transaction=False)
        pending = list(self.buffer)
        for data in pending:
            pipe.xadd(self.stream, {"data": data}, maxlen=self.maxlen, approximate=True)
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
