"""The summary aggregator: job event stream -> per-trial state and a leaderboard in Redis.

Reads through a consumer group (XREADGROUP + XACK). Entries this consumer read but did not ack
before a crash are read again first. Every update is keyed by (trial, iteration, epoch, split)
or overwrites a trial fact, and is applied in the same MULTI as its XACK, so replaying any
part of the stream changes nothing.
"""
from __future__ import annotations

import json
import threading

import redis

from jobs import keys

DEFAULT_CONSUMER = "aggregator-1"


class Aggregator:
    def __init__(self, client: redis.Redis, job_id: str, consumer: str = DEFAULT_CONSUMER):
        self.client = client
        self.job_id = job_id
        self.consumer = consumer
        self.stream = keys.events(job_id)

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.stream, keys.AGGREGATOR_GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def step(self, block_ms: int | None = None, count: int = 500) -> int:
        """Apply one batch: first our own unacked entries (after a crash), then new ones."""
        self.ensure_group()
        for start in ("0", ">"):
            response = self.client.xreadgroup(keys.AGGREGATOR_GROUP, self.consumer, {self.stream: start},
                                              count=count, block=block_ms if start == ">" else None)
            entries = response[0][1] if response else []
            entries = [(entry_id, fields) for entry_id, fields in entries if fields]
            if entries:
                for entry_id, fields in entries:
                    self.apply(entry_id, json.loads(fields["data"]))
                return len(entries)
        return 0

    def apply(self, entry_id: str, event: dict) -> None:
        pipe = self.client.pipeline(transaction=True)
        trial = event["trial"]
        pipe.sadd(keys.trials(self.job_id), trial)
        if event["type"] == "metrics":
            field = keys.metrics_field(event["iteration"], event["epoch"], event["split"])
            pipe.hset(keys.trial_metrics(self.job_id, trial), field, json.dumps(event["metrics"], sort_keys=True))
        elif event["type"] == "trial":
            facts = {name: json.dumps(value, sort_keys=True) for name, value in event.items()
                     if name not in ("type", "trial", "ts")}
            pipe.hset(keys.trial(self.job_id, trial), mapping=facts)
        pipe.xack(self.stream, keys.AGGREGATOR_GROUP, entry_id)
        pipe.execute()
        if event["type"] == "metrics" and event["split"] == "val":
            self.update_leaderboard(trial)

    def update_leaderboard(self, trial: str) -> None:
        """Best val mIoU over all recorded epochs (recomputed, so order and replays don't matter)."""
        best = None
        for field, value in self.client.hgetall(keys.trial_metrics(self.job_id, trial)).items():
            if field.endswith(":val"):
                miou = json.loads(value).get("miou")
                if miou is not None and (best is None or miou > best):
                    best = miou
        if best is not None:
            self.client.zadd(keys.leaderboard(self.job_id), {trial: best})

    def drain(self) -> int:
        total = 0
        while applied := self.step():
            total += applied
        return total

    def follow(self, stop: threading.Event, block_ms: int = 1000) -> None:
        while not stop.is_set():
            try:
                self.step(block_ms=block_ms)
            except redis.exceptions.ConnectionError:
                stop.wait(1.0)  # Redis restarting: keep going once it is back
        self.drain()
