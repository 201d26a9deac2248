"""The summary aggregator: job event stream -> per-trial state and a leaderboard in Redis.

Reads through a consumer group (XREADGROUP + XACK). Each step handles, in this order:

1. entries this consumer read but did not ack before it crashed (a restart under the same
   consumer name re-reads them);
2. entries another consumer left pending for `min_idle_ms` (it died, or was restarted under a
   new name): XAUTOCLAIM makes them this consumer's;
3. new entries.

Every update is keyed by (trial, iteration, epoch, split), or sets a trial fact only if no later
stream entry already set it, and is applied in the same MULTI as its XACK (WATCH guards the
values it reads). So replaying any part of the stream, in any order, by any number of
aggregators, changes nothing.
"""
from __future__ import annotations

import json
import logging
import threading

import redis

from jobs import keys

log = logging.getLogger(__name__)

# A fixed name, so a restarted service re-reads its own unacknowledged entries at once.
DEFAULT_CONSUMER = "aggregator-1"
# Pending this long, an entry's reader is taken for dead: long above the few milliseconds a live
# aggregator holds an entry, so a live peer is never robbed.
DEFAULT_MIN_IDLE_MS = 30_000
# Field of the trial hash: fact name -> stream id of the event that set it (keeps facts from
# going back in time when entries are applied out of order).
FACT_IDS = "fact_ids"
TRIAL_EVENT_SKIP = ("type", "trial", "ts")
EVENT_TYPES = ("metrics", "trial")


class Aggregator:
    def __init__(self, client: redis.Redis, job_id: str, consumer: str = DEFAULT_CONSUMER,
                 min_idle_ms: int = DEFAULT_MIN_IDLE_MS):
        self.client = client
        self.job_id = job_id
        self.consumer = consumer
        self.min_idle_ms = min_idle_ms
        self.stream = keys.events(job_id)

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, keys.AGGREGATOR_GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def step(self, block_ms: int | None = None, count: int = 500) -> int:
        """Handle one batch (own pending, else a dead consumer's, else new entries); how many."""
        self.ensure_group()
        entries = self.read_group("0", count) or self.reclaim(count) or self.read_group(">", count, block_ms)
        for entry_id, fields in entries:
            self.handle(entry_id, fields)
        return len(entries)

    def read_group(self, start: str, count: int, block_ms: int | None = None) -> list:
        response = self.client.xreadgroup(keys.AGGREGATOR_GROUP, self.consumer, {self.stream: start},
                                          count=count, block=block_ms)
        return response[0][1] if response else []

    def reclaim(self, count: int) -> list:
        """Entries other consumers left pending for min_idle_ms, now this consumer's."""
        cursor = "0-0"
        while True:
            # Redis drops entries trimmed from the stream from the pending list itself (3rd item).
            cursor, claimed, *_ = self.client.xautoclaim(self.stream, keys.AGGREGATOR_GROUP, self.consumer,
                                                         self.min_idle_ms, start_id=cursor, count=count)
            if claimed:
                log.info("%s: took over %d entries left pending by a dead consumer", self.job_id, len(claimed))
                return claimed
            if cursor == "0-0":
                return []

    def handle(self, entry_id: str, fields: dict | None) -> None:
        event = parse_event(fields)
        if event is None:
            # Trimmed by MAXLEN while pending, or not a segq event: nothing to apply, and left
            # unacked it would be read again on every step.
            log.warning("%s: entry %s has no readable event; acknowledged without applying", self.job_id, entry_id)
            self.client.xack(self.stream, keys.AGGREGATOR_GROUP, entry_id)
            return
        self.apply(entry_id, event)

    def apply(self, entry_id: str, event: dict) -> None:
        if event["type"] == "metrics":
            watched = keys.trial_metrics(self.job_id, event["trial"])
            queue = self.queue_metrics
        else:
            watched = keys.trial(self.job_id, event["trial"])
            queue = self.queue_trial_facts
        self.client.transaction(lambda pipe: queue(pipe, entry_id, event), watched)

    def queue_metrics(self, pipe: redis.client.Pipeline, entry_id: str, event: dict) -> None:
        trial = event["trial"]
        field = keys.metrics_field(event["iteration"], event["epoch"], event["split"])
        best = best_val_miou(pipe.hgetall(keys.trial_metrics(self.job_id, trial)), field, event)
        pipe.multi()
        pipe.sadd(keys.trials(self.job_id), trial)
        # Stored as published (not key-sorted): per-class scores stay in class order.
        pipe.hset(keys.trial_metrics(self.job_id, trial), field, json.dumps(event["metrics"]))
        if best is not None:
            pipe.zadd(keys.leaderboard(self.job_id), {trial: best})
        pipe.xack(self.stream, keys.AGGREGATOR_GROUP, entry_id)

    def queue_trial_facts(self, pipe: redis.client.Pipeline, entry_id: str, event: dict) -> None:
        trial_key = keys.trial(self.job_id, event["trial"])
        set_by = json.loads(pipe.hget(trial_key, FACT_IDS) or "{}")
        facts = {name: value for name, value in event.items() if name not in TRIAL_EVENT_SKIP
                 and stream_order(entry_id) >= stream_order(set_by.get(name, "0-0"))}
        pipe.multi()
        pipe.sadd(keys.trials(self.job_id), event["trial"])
        if facts:
            set_by.update({name: entry_id for name in facts})
            mapping = {name: json.dumps(value, sort_keys=True) for name, value in facts.items()}
            pipe.hset(trial_key, mapping={**mapping, FACT_IDS: json.dumps(set_by, sort_keys=True)})
        pipe.xack(self.stream, keys.AGGREGATOR_GROUP, entry_id)

    def drain(self) -> int:
        total = 0
        while handled := self.step():
            total += handled
        return total

    def follow(self, stop: threading.Event, block_ms: int = 1000) -> None:
        while not stop.is_set():
            try:
                self.step(block_ms=block_ms)
            except redis.exceptions.ConnectionError:
                stop.wait(1.0)  # Redis restarting: keep going once it is back
        self.drain()


def parse_event(fields: dict | None) -> dict | None:
    """The event of a stream entry, or None if it is gone or malformed."""
    try:
        event = json.loads((fields or {})["data"])
    except (KeyError, TypeError, json.JSONDecodeError):
        return None
    if not isinstance(event, dict) or not isinstance(event.get("trial"), str):
        return None
    if event.get("type") not in EVENT_TYPES:
        return None
    if event["type"] == "metrics" and not all(name in event for name in ("iteration", "epoch", "split", "metrics")):
        return None
    return event


def best_val_miou(stored: dict[str, str], field: str, event: dict) -> float | None:
    """Best val mIoU of a trial once this event is stored (recomputed, so order and replays
    don't matter); None when the event is not a val event or no val mIoU exists yet."""
    if event["split"] != "val":
        return None
    mious = [json.loads(value).get("miou") for name, value in stored.items()
             if name.endswith(":val") and name != field]
    mious.append(event["metrics"].get("miou"))
    present = [miou for miou in mious if miou is not None]
    return max(present) if present else None


def stream_order(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)
