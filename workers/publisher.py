"""Events from a trial's rank 0 to its job's Redis stream (the contract: workers.events).

Events are JSON (never pickle), pipelined, and the stream is bounded by MAXLEN. `publish` only
appends to a bounded buffer; a sender thread ships the buffer, retrying with exponential backoff
(redis-py `Retry` inside a call, a growing pause between calls) while Redis is unreachable, so
training never waits on Redis. A full buffer drops its oldest event: the drops are counted,
logged, and reported as the trial fact `dropped_events`, which the summary shows.

The stream key comes from the caller (the key schema lives in jobs.keys), so this module needs
nothing from the control plane.
"""
from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections import deque

import redis
from pydantic import BaseModel

from workers.events import BestEvent, MetricsEvent, PerturbationEvent, SaliencyEvent, TrialEvent, encode_event
from workers.redis_client import open_redis
from workers.target import Target

log = logging.getLogger(__name__)
BUFFER_LIMIT = 10_000
STREAM_MAXLEN = 100_000
PAUSE_MIN_S, PAUSE_MAX_S = 0.5, 5.0  # between send attempts while Redis is away
READ_BACK_PAGE = 2000  # stream entries per read when a restart looks for its restored epoch's events
CLOCK_MARGIN_MS = 60_000


class MetricsPublisher:
    def __init__(self, redis_url: str, stream: str, trial: str, maxlen: int = STREAM_MAXLEN,
                 buffer_limit: int = BUFFER_LIMIT):
        self.client = open_redis(redis_url, retries=2, socket_connect_timeout=3, socket_timeout=5)
        self.stream = stream
        self.trial = trial
        self.maxlen = maxlen
        self.buffer_limit = buffer_limit
        self.buffer: deque[tuple[int, str]] = deque()  # (sequence number, JSON event)
        self.sequence = itertools.count()
        self.dropped = 0
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.closing = threading.Event()
        self.sender = threading.Thread(target=self.send_until_closed, name=f"segq-events-{trial}", daemon=True)
        self.sender.start()

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

    def perturbation_event(self, iteration: int, epoch: int, donor: str, train: dict) -> None:
        self.publish(PerturbationEvent(trial=self.trial, iteration=iteration, epoch=epoch, donor=donor, train=train))

    def publish(self, event: BaseModel, bounded: bool = True) -> None:
        """Buffer the event for the sender thread; never blocks on Redis."""
        self.publish_encoded([encode_event(event)], bounded)

    def publish_unless_sent(self, encoded: list[str]) -> int:
        """Publish those of `encoded` (events as encode_event wrote them) that the stream does not
        hold yet: a restart's restored epoch, whose events the process that stored its checkpoint
        may not have sent. Reads the stream back from a minute before the oldest event (the stream's
        ids are Redis's clock, the events' times this node's); if Redis cannot be read, publishes
        them all (the aggregator keys each, so a replay adds nothing to the summary)."""
        oldest_ms = int(min(json.loads(data)["ts"] for data in encoded) * 1000) - CLOCK_MARGIN_MS
        missing, newest = set(encoded), "+"
        try:
            while missing:
                page = self.client.xrevrange(self.stream, max=newest, min=f"{oldest_ms}-0", count=READ_BACK_PAGE)
                missing -= {fields.get(b"data", b"").decode() for _, fields in page}
                if len(page) < READ_BACK_PAGE:
                    break
                newest = f"({page[-1][0].decode()}"  # exclusive: the page's oldest entry was read
        except redis.exceptions.RedisError as error:
            log.warning("%s: cannot read the stream back (%s); the restored epoch's events are published again",
                        self.trial, error)
        unsent = [data for data in encoded if data in missing]
        self.publish_encoded(unsent)
        return len(unsent)

    def publish_encoded(self, encoded: list[str], bounded: bool = True) -> None:
        """Buffer encoded events for the sender thread, in order; never blocks on Redis."""
        for data in encoded:
            self.append(data, bounded)
        self.wake.set()

    def append(self, data: str, bounded: bool) -> None:
        with self.lock:
            if bounded and len(self.buffer) >= self.buffer_limit:
                self.buffer.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("metrics buffer of %s is full (%d events): %d dropped so far",
                                self.trial, self.buffer_limit, self.dropped)
            self.buffer.append((next(self.sequence), data))

    def flush(self) -> bool:
        """Send what is buffered now; False (and keep it) if Redis is unreachable."""
        with self.lock:
            pending = list(self.buffer)
        if not pending:
            return True
        pipe = self.client.pipeline(transaction=False)
        for _, data in pending:
            pipe.xadd(self.stream, {"data": data}, maxlen=self.maxlen, approximate=True)
        try:
            pipe.execute()
        except redis.exceptions.RedisError as error:
            log.warning("metrics of %s wait in a buffer (%d events): %s", self.trial, len(pending), error)
            return False
        last_sent = pending[-1][0]
        with self.lock:  # events dropped meanwhile are gone already; keep only what came later
            while self.buffer and self.buffer[0][0] <= last_sent:
                self.buffer.popleft()
        return True

    def send_until_closed(self) -> None:
        pause = PAUSE_MIN_S
        while not self.closing.is_set():
            self.wake.wait()
            self.wake.clear()
            if self.flush():
                pause = PAUSE_MIN_S
                continue
            self.closing.wait(pause)
            pause = min(pause * 2, PAUSE_MAX_S)
            self.wake.set()

    def close(self, retry_seconds: float = 30.0) -> None:
        """Stop the sender, report drops, and send what is left for up to `retry_seconds`."""
        self.closing.set()
        self.wake.set()
        self.sender.join()
        if self.dropped:
            log.warning("%s: %d metric events were dropped from a full buffer", self.trial, self.dropped)
            self.publish(TrialEvent(trial=self.trial, dropped_events=self.dropped), bounded=False)
        deadline = time.monotonic() + retry_seconds
        while not self.flush() and time.monotonic() < deadline:
            time.sleep(1.0)
        self.client.close()
