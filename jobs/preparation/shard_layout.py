"""How a preparation cuts a dataset into shards: what every shard shares, and which samples each holds."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jobs.preparation.sources.base import Dataset, Sample


@dataclass(frozen=True)
class ShardLayout:
    """What every shard of one preparation shares."""

    out: Path
    height: int
    width: int
    num_classes: int
    ignore_index: int
    compression: str
    skip_bad: bool  # leave out a bad sample (returned as skipped) instead of failing


@dataclass(frozen=True)
class PlannedShard:
    split: str
    index: int
    samples: list[Sample]
    labeled: bool


def plan_shards(dataset: Dataset, shard_size: int) -> list[PlannedShard]:
    return [
        PlannedShard(split, index, samples[start:start + shard_size], dataset.labeled[split])
        for split, samples in dataset.splits.items()
        for index, start in enumerate(range(0, len(samples), shard_size))
    ]
