"""The driver's reader of its job's events for the exporters (see jobs.results.exports)."""
from __future__ import annotations

import logging
import threading
from typing import Protocol

import redis

from jobs import keys
from jobs.results.aggregator import follow_stream
from workers.events import Event, decode_event

log = logging.getLogger(__name__)
CONSUMER = "driver"


class Exporter(Protocol):
    name: str  # as the job's log names it

    def event(self, event: Event) -> None: ...  # one event, in stream order

    def flush(self) -> None: ...  # after each batch of events

    def close(self) -> None: ...  # the job's driver is done: write out what is left


class ExportFollower:
    """Events of `job_id` to each exporter, acknowledged once every exporter took them. A driver
    that restarts (`segq jobs resume`) goes on where the last one acknowledged."""

    def __init__(self, client: redis.Redis, job_id: str, exporters: list[Exporter]):
        self.client, self.exporters = client, exporters
        self.stream = keys.events(job_id)
        self.grouped = False

    def step(self, block_ms: int | None = None, count: int = 500) -> int:
        if not self.grouped:
            try:  # from the stream's start: the events of a driver before this one included
                self.client.xgroup_create(self.stream, keys.EXPORTS_GROUP, id="0", mkstream=True)
            except redis.exceptions.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise
            self.grouped = True
        entries = self.read("0", count) or self.read(">", count, block_ms)
        events = [event for _, fields in entries if (event := decode_event((fields or {}).get("data")))]
        for exporter in list(self.exporters):
            self.guarded(exporter, lambda: export(exporter, events))
        if entries:
            self.client.xack(self.stream, keys.EXPORTS_GROUP, *(entry_id for entry_id, _ in entries))
        return len(entries)

    def guarded(self, exporter: Exporter, work) -> None:
        """An exporter that raises is dropped, with one line in the job's log: the job goes on."""
        try:
            work()
        except Exception as error:  # noqa: BLE001 (any failure of an export must not end the job)
            self.exporters.remove(exporter)
            log.warning("segq: %s export stopped: %s: %s; the Redis events and `segq summary` still hold every "
                        "number", exporter.name, type(error).__name__, error)

    def read(self, start: str, count: int, block_ms: int | None = None) -> list:
        response = self.client.xreadgroup(keys.EXPORTS_GROUP, CONSUMER, {self.stream: start}, count=count,
                                          block=block_ms)
        return response[0][1] if response else []

    def follow(self, stop: threading.Event, block_ms: int = 200) -> None:
        follow_stream(self.step, stop, block_ms)

    def finish(self) -> None:
        """Everything in the stream exported, then each exporter closed."""
        try:
            while self.step():
                pass
        finally:
            for exporter in list(self.exporters):
                self.guarded(exporter, exporter.close)


def export(exporter: Exporter, events: list[Event]) -> None:
    for event in events:
        exporter.event(event)
    exporter.flush()
