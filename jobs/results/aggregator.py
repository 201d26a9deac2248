"""The summary aggregator: job event stream -> per-trial state and a leaderboard in Redis.

Reads through a consumer group (XREADGROUP + XACK). Each step handles one batch, in this order:

1. entries this consumer read but did not ack before it crashed (a restart under the same
   consumer name re-reads them);
2. entries another consumer left pending for `min_idle_ms` (it died, or was restarted under a
   new name): XAUTOCLAIM makes them this consumer's;
3. new entries.

Events follow the contract in workers.events. Every update is keyed by (trial, iteration, epoch,
split), or sets a trial fact only if no later stream entry already set it. A batch is applied in one
MULTI with the XACK of all its entries: its events grouped per trial, each trial's state read once.
The state read is the bookkeeping fields of the trial's hash (which entry set each fact, its
attempts, its run segments, and rank 0's latest best decision per iteration), for the trials with a
trial event or a best decision in the batch; WATCH guards them (and, the first time a trial's
decisions are needed, its metrics hash, which seeds them). The leaderboard holds each trial's best
value of the job's target, as rank 0 decided it (workers.target), never recomputed from scores:
the best over iterations of each iteration's latest decision. So replaying any part of the stream,
in any order, by any number of aggregators, changes nothing.
"""
from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

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
# Field of the trial hash: iteration -> {epoch, value} of rank 0's latest best decision in it (the
# decision after its latest epoch): the leaderboard's input, kept so that no decision needs the
# trial's whole metrics hash. A trial without it (aggregated before it existed) seeds it from there.
DECISIONS = "best_decisions"
STATE_FIELDS = (FACT_IDS, ATTEMPTS, RUN_SEGMENTS, DECISIONS)


@dataclass
class Batch:
    """A batch of stream entries: every entry id (to ack), and the readable events per trial, in stream order."""

    entry_ids: list[str] = field(default_factory=list)
    trials: dict[str, list[tuple[str, Event]]] = field(default_factory=dict)

    def add(self, entry_id: str, event: Event | None) -> None:
        self.entry_ids.append(entry_id)
        if event is not None:
            self.trials.setdefault(event.trial, []).append((entry_id, event))

    def trials_to_read(self) -> list[str]:
        """The trials whose state the batch reads: those with a trial event or a best decision."""
        return [trial for trial, events in self.trials.items()
                if any(isinstance(event, (TrialEvent, BestEvent)) for _, event in events)]

    def decides(self, trial: str) -> bool:
        return any(isinstance(event, BestEvent) for _, event in self.trials[trial])


@dataclass
class TrialState:
    """A trial's bookkeeping fields as read, then what the batch's events of the trial change, folded in
    stream order as if each were applied alone."""

    set_by: dict[str, str] = field(default_factory=dict)  # FACT_IDS
    attempts: dict[str, dict] = field(default_factory=dict)
    segments: dict[str, dict] = field(default_factory=dict)
    decisions: dict[str, dict] | None = None  # None: not stored yet
    facts: dict[str, str] = field(default_factory=dict)  # fact -> JSON, set by the batch
    measurements: dict[str, str] = field(default_factory=dict)  # metrics hash field -> JSON
    changed: set[str] = field(default_factory=set)  # of ATTEMPTS, RUN_SEGMENTS, DECISIONS
    leader: float | None = None  # the leaderboard value after the batch's last decision that has one

    @classmethod
    def read(cls, stored: dict[str, str | None]) -> "TrialState":
        decisions = stored.get(DECISIONS)
        return cls(set_by=json.loads(stored.get(FACT_IDS) or "{}"), attempts=json.loads(stored.get(ATTEMPTS) or "{}"),
                   segments=json.loads(stored.get(RUN_SEGMENTS) or "{}"),
                   decisions=None if decisions is None else json.loads(decisions))

    def add(self, entry_id: str, event: Event) -> None:
        if isinstance(event, TrialEvent):
            self.add_facts(entry_id, event)
            return
        measured, value = measurement_field(event)
        self.measurements[measured] = value
        if isinstance(event, BestEvent):
            self.add_decision(event)

    def add_facts(self, entry_id: str, event: TrialEvent) -> None:
        """Facts no later entry set; the attempt it starts (keyed by its stream id) and its run segment
        (keyed by its start), so that a replay counts nothing twice."""
        facts = {name: value for name, value in event.facts().items()
                 if stream_order(entry_id) >= stream_order(self.set_by.get(name, "0-0"))}
        facts.pop("attempt_started", None)
        facts.pop("run_segment", None)
        if event.attempt_started is not None:
            self.attempts[entry_id] = {"started": event.attempt_started, "ranks": event.ranks or []}
            self.changed.add(ATTEMPTS)
        if event.run_segment is not None:
            self.segments[repr(event.run_segment["started"])] = event.run_segment
            self.changed.add(RUN_SEGMENTS)
        for name, value in facts.items():
            self.set_by[name] = entry_id
            self.facts[name] = json.dumps(value, sort_keys=True)

    def add_decision(self, event: BestEvent) -> None:
        iteration = str(event.iteration)
        latest = self.decisions.get(iteration)
        if latest is None or event.epoch >= latest["epoch"]:
            self.decisions[iteration] = {"epoch": event.epoch, "value": event.value}
        self.changed.add(DECISIONS)
        leader = best_value(self.decisions, target_of(event.metric, event.mode))
        if leader is not None:
            self.leader = leader

    def hash_fields(self) -> dict[str, str]:
        """The trial hash's fields the batch sets."""
        fields = dict(self.facts)
        if self.facts:
            fields[FACT_IDS] = json.dumps(self.set_by, sort_keys=True)
        if ATTEMPTS in self.changed:
            fields[ATTEMPTS] = json.dumps(dict(sorted(self.attempts.items(), key=lambda item: stream_order(item[0]))))
        if RUN_SEGMENTS in self.changed:
            fields[RUN_SEGMENTS] = json.dumps(dict(sorted(self.segments.items(), key=lambda item: item[1]["started"])))
        if DECISIONS in self.changed:
            fields[DECISIONS] = json.dumps(self.decisions, sort_keys=True)
        return fields


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
        if entries:
            self.apply(self.parse(entries))
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

    def parse(self, entries: list) -> Batch:
        batch = Batch()
        for entry_id, fields in entries:
            event = parse_event(fields)
            if event is None:
                # Trimmed by MAXLEN while pending, or not a segq event: nothing to apply, and left
                # unacked it would be read again on every step.
                log.warning("%s: entry %s has no readable event; acknowledged without applying", self.job_id, entry_id)
            batch.add(entry_id, event)
        return batch

    def apply(self, batch: Batch) -> None:
        """The batch's updates and the XACK of all its entries in one transaction, which WATCHes the
        hashes of the trials whose state it reads."""
        watched = [keys.trial(self.job_id, trial) for trial in batch.trials_to_read()]
        self.client.transaction(lambda pipe: self.queue_batch(pipe, batch), *watched)

    def queue_batch(self, pipe: redis.client.Pipeline, batch: Batch) -> None:
        states = self.read_states(pipe, batch)
        for trial, events in batch.trials.items():
            for entry_id, event in events:
                states[trial].add(entry_id, event)
        pipe.multi()
        if states:
            pipe.sadd(keys.trials(self.job_id), *states)
        for trial, state in states.items():
            if fields := state.hash_fields():
                pipe.hset(keys.trial(self.job_id, trial), mapping=fields)
            if state.measurements:
                pipe.hset(keys.trial_metrics(self.job_id, trial), mapping=state.measurements)
            if state.leader is not None:
                pipe.zadd(keys.leaderboard(self.job_id), {trial: state.leader})
        pipe.xack(self.stream, keys.AGGREGATOR_GROUP, *batch.entry_ids)

    def read_states(self, pipe: redis.client.Pipeline, batch: Batch) -> dict[str, TrialState]:
        """Every trial's state as the batch needs it: the trial hash's bookkeeping fields of the trials
        it reads (watched), and their decisions seeded from the metrics hash where none are stored."""
        reading = batch.trials_to_read()
        stored = self.read_all([("hmget", keys.trial(self.job_id, trial), STATE_FIELDS) for trial in reading])
        states = {trial: TrialState() for trial in batch.trials}
        states |= {trial: TrialState.read(dict(zip(STATE_FIELDS, values))) for trial, values in zip(reading, stored)}
        unseeded = [trial for trial in reading if batch.decides(trial) and states[trial].decisions is None]
        if unseeded:
            metrics = [keys.trial_metrics(self.job_id, trial) for trial in unseeded]
            pipe.watch(*metrics)
            for trial, measured in zip(unseeded, self.read_all([("hgetall", key) for key in metrics])):
                states[trial].decisions = stored_decisions(measured)
        return states

    def read_all(self, commands: list[tuple]) -> list:
        """The replies of `commands`, in one round trip. Read after the transaction's WATCH, on a
        connection of their own: a change after the WATCH fails the EXEC, so what they read stays guarded."""
        if not commands:
            return []
        reader = self.client.pipeline(transaction=False)
        for name, *args in commands:
            getattr(reader, name)(*args)
        return reader.execute()

    def drain(self) -> int:
        total = 0
        while handled := self.step():
            total += handled
        return total

    def follow(self, stop: threading.Event, block_ms: int = 1000) -> None:
        follow_stream(self.step, stop, block_ms)
        self.drain()


def follow_stream(step: Callable[..., int], stop: threading.Event, block_ms: int) -> None:
    """Call `step(block_ms=...)` until `stop` is set: each call waits up to `block_ms` for new
    entries; a Redis that is restarting is waited for."""
    while not stop.is_set():
        try:
            step(block_ms=block_ms)
        except redis.exceptions.ConnectionError:
            stop.wait(1.0)  # Redis restarting: keep going once it is back


def stored_decisions(measured: dict[str, str]) -> dict[str, dict]:
    """Per iteration, {epoch, value} of rank 0's latest decision among a trial's metrics hash fields."""
    decisions: dict[str, dict] = {}
    for measured_field, value in measured.items():
        iteration, epoch, split = keys.parse_metrics_field(measured_field)
        if split == keys.BEST_SPLIT and epoch >= decisions.get(str(iteration), {"epoch": 0})["epoch"]:
            decisions[str(iteration)] = {"epoch": epoch, "value": json.loads(value)["value"]}
    return decisions


def best_value(decisions: dict[str, dict], target: Target) -> float | None:
    """The trial's best target value over its iterations' latest decisions (order and replays don't matter)."""
    winner = target.best((iteration, decisions[iteration]["value"]) for iteration in sorted(decisions, key=int))
    return winner[1] if winner else None


def parse_event(fields: dict | None) -> Event | None:
    """The event of a stream entry, or None if it is gone or breaks the contract."""
    return decode_event((fields or {}).get("data"))


@functools.lru_cache(maxsize=None)
def target_of(metric: str, mode: str) -> Target:
    return Target(metric=metric, mode=mode)


def measurement_field(event: Event) -> tuple[str, str]:
    """Where a metrics, best or saliency event is stored in the trial's metrics hash, and what (JSON, as
    the event's model writes it: as published, not key-sorted, so per-class scores stay in class order)."""
    if isinstance(event, MetricsEvent):
        return keys.metrics_field(event.iteration, event.epoch, event.split), event.metrics.model_dump_json()
    if isinstance(event, BestEvent):
        return (keys.metrics_field(event.iteration, event.epoch, keys.BEST_SPLIT),
                event.model_dump_json(include={"best_epoch", "value", "metric", "mode", "ts"}))
    if isinstance(event, PerturbationEvent):
        return (keys.metrics_field(event.iteration, event.epoch, keys.PERTURBATION_SPLIT),
                event.model_dump_json(include={"donor", "train", "ts"}))
    return (keys.metrics_field(event.iteration, 0, keys.SALIENCY_SPLIT),
            event.model_dump_json(include={"kept_fraction", "next_kept_fraction", "checkpoint", "samples"}))


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


def stream_order(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)
