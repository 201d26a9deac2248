"""The summary aggregator: job event stream -> per-trial state and a leaderboard in Redis.

Reads through a consumer group (XREADGROUP + XACK). Each step handles, in this order:

1. entries this consumer read but did not ack before it crashed (a restart under the same
   consumer name re-reads them);
2. entries another consumer left pending for `min_idle_ms` (it died, or was restarted under a
   new name): XAUTOCLAIM makes them this consumer's;
3. new entries.

Events follow the contract in workers.events. Every update is keyed by (trial, iteration, epoch,
split), or sets a trial fact only if no later stream entry already set it, and is applied in the
same MULTI as its XACK (WATCH guards the values it reads). The leaderboard holds each trial's best
value of the job's target, as rank 0 decided it (workers.target), never recomputed from scores. So replaying any part of the stream, in any order, by any number of
aggregators, changes nothing.
"""
from __future__ import annotations

import json
import logging
import threading

import redis

from jobs import keys
from workers.events import BestEvent, Event, MetricsEvent, PerturbationEvent, TrialEvent, decode_event
from workers.target import Target

log = logging.getLogger(__name__)

# A fixed name, so a restarted service re-reads its own unacknowledged entries at once.
DEFAULT_CONSUMER = "aggregator-1"
# Pending this long, an entry's reader is taken for dead: long above the few milliseconds a live
# aggregator holds an entry, so a live peer is never robbed.
DEFAULT_MIN_IDLE_MS = 30_000
# Field of the trial hash: fact name -> stream id of the event that set it (keeps facts from
# going back in time when entries are applied out of order).
FACT_IDS = "fact_ids"
# Field of the trial hash: stream id of the event that started an attempt -> its start and ranks.
ATTEMPTS = "attempts"
# Field of the trial hash: start of each run of the trial's Tune function -> its {started, seconds}.
RUN_SEGMENTS = "run_segments"


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

    def apply(self, entry_id: str, event: Event) -> None:
        if isinstance(event, TrialEvent):
            self.client.transaction(lambda pipe: self.queue_trial_facts(pipe, entry_id, event),
                                    keys.trial(self.job_id, event.trial))
            return
        watched = keys.trial_metrics(self.job_id, event.trial)
        self.client.transaction(lambda pipe: self.queue_measurement(pipe, entry_id, event), watched)

    def queue_measurement(self, pipe: redis.client.Pipeline, entry_id: str, event: Event) -> None:
        """A metrics, best or saliency event: one field of the trial's metrics hash, keyed so that
        a replay replaces it; a best decision also refreshes the trial's leaderboard entry."""
        trial = event.trial
        field, value = measurement_field(event)
        leader = None
        if isinstance(event, BestEvent):
            stored = pipe.hgetall(keys.trial_metrics(self.job_id, trial))
            leader = trial_best_value(stored | {field: json.dumps(value)}, event.target)
        pipe.multi()
        pipe.sadd(keys.trials(self.job_id), trial)
        # Stored as published (not key-sorted): per-class scores stay in class order.
        pipe.hset(keys.trial_metrics(self.job_id, trial), field, json.dumps(value))
        if leader is not None:
            pipe.zadd(keys.leaderboard(self.job_id), {trial: leader})
        pipe.xack(self.stream, keys.AGGREGATOR_GROUP, entry_id)

    def queue_trial_facts(self, pipe: redis.client.Pipeline, entry_id: str, event: TrialEvent) -> None:
        trial_key = keys.trial(self.job_id, event.trial)
        set_by = json.loads(pipe.hget(trial_key, FACT_IDS) or "{}")
        facts = {name: value for name, value in event.facts().items()
                 if stream_order(entry_id) >= stream_order(set_by.get(name, "0-0"))}
        attempts = merged_attempts(pipe.hget(trial_key, ATTEMPTS), entry_id, event)
        segments = merged_segments(pipe.hget(trial_key, RUN_SEGMENTS), event)
        facts.pop("attempt_started", None)
        facts.pop("run_segment", None)
        pipe.multi()
        if attempts is not None:
            pipe.hset(trial_key, ATTEMPTS, attempts)
        if segments is not None:
            pipe.hset(trial_key, RUN_SEGMENTS, segments)
        pipe.sadd(keys.trials(self.job_id), event.trial)
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


def merged_attempts(stored: str | None, entry_id: str, event: TrialEvent) -> str | None:
    """The trial's attempts (one per worker group start) with this event's, keyed by its stream id
    so that a replay counts nothing twice; None when the event starts no attempt."""
    if event.attempt_started is None:
        return None
    attempts = json.loads(stored or "{}")
    attempts[entry_id] = {"started": event.attempt_started, "ranks": event.ranks or []}
    return json.dumps(dict(sorted(attempts.items(), key=lambda item: stream_order(item[0]))))


def merged_segments(stored: str | None, event: TrialEvent) -> str | None:
    """The trial's run segments with this event's, keyed by its start so that a replay counts
    nothing twice; None when the event carries none."""
    if event.run_segment is None:
        return None
    segments = json.loads(stored or "{}")
    segments[repr(event.run_segment["started"])] = event.run_segment
    return json.dumps(dict(sorted(segments.items(), key=lambda item: item[1]["started"])))


def parse_event(fields: dict | None) -> Event | None:
    """The event of a stream entry, or None if it is gone or breaks the contract."""
    return decode_event((fields or {}).get("data"))


def measurement_field(event: Event) -> tuple[str, dict]:
    """Where a metrics, best or saliency event is stored in the trial's metrics hash, and what."""
    if isinstance(event, MetricsEvent):
        return keys.metrics_field(event.iteration, event.epoch, event.split), event.metrics.model_dump(mode="json")
    if isinstance(event, BestEvent):
        return (keys.metrics_field(event.iteration, event.epoch, keys.BEST_SPLIT),
                event.model_dump(mode="json", include={"best_epoch", "value", "metric", "mode", "ts"}))
    if isinstance(event, PerturbationEvent):
        return (keys.metrics_field(event.iteration, event.epoch, keys.PERTURBATION_SPLIT),
                event.model_dump(mode="json", include={"donor", "train", "ts"}))
    return (keys.metrics_field(event.iteration, 0, keys.SALIENCY_SPLIT),
            event.model_dump(mode="json", include={"kept_fraction", "next_kept_fraction", "checkpoint", "samples"}))


def parse_measurements(stored: dict[str, str]) -> dict[tuple[int, int, str], dict]:
    """A trial's metrics hash as {(iteration, epoch, split): value}."""
    return {keys.parse_metrics_field(field): json.loads(value) for field, value in stored.items()}


def latest_decisions(measurements: dict[tuple[int, int, str], dict]) -> dict[int, dict]:
    """Per iteration, rank 0's best decision after the latest epoch it decided on."""
    decisions: dict[int, tuple[int, dict]] = {}
    for (iteration, epoch, split), value in measurements.items():
        if split == keys.BEST_SPLIT and epoch >= decisions.get(iteration, (0, {}))[0]:
            decisions[iteration] = (epoch, value)
    return {iteration: decision for iteration, (_, decision) in decisions.items()}


def trial_best_value(stored: dict[str, str], target: Target) -> float | None:
    """The trial's best target value over its iterations (recomputed, so order and replays don't matter)."""
    decisions = latest_decisions(parse_measurements(stored))
    winner = target.best((iteration, decisions[iteration]["value"]) for iteration in sorted(decisions))
    return winner[1] if winner else None


def stream_order(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)
