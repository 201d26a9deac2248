"""One shard of a preparation, built inside a Ray task: its samples loaded, checked and written."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workers.exceptions import DataError
from workers.shards import shard_name, write_shard
from jobs.preparation.sample_checks import load_sample
from jobs.preparation.shard_layout import PlannedShard, ShardLayout
from jobs.preparation.sources.base import SKIP_HINT, SampleLoader


@dataclass(frozen=True)
class ShardRows:
    """The samples of a shard that loaded and passed the checks, and what happened to the others."""

    keys: list[str]
    images: np.ndarray
    masks: np.ndarray | None
    skipped: list[dict]  # {"key", "problem"} of each bad sample left out
    converted: list[dict]  # {"key", "change"} of each conversion a loader made


def build_shard(layout: ShardLayout, shard: PlannedShard, loader: SampleLoader) -> dict:
    """Load, check and write one shard; its manifest entry with `stats`, `skipped` and `converted`.
    A shard whose samples were all skipped is not written (`file` None)."""
    rows = load_rows(layout, shard, loader)
    entry: dict = {"file": None, "rows": 0, "stats": None}
    if rows.keys:
        entry = write_shard(layout.out / shard_name(shard.split, shard.index), rows.keys, rows.images, rows.masks,
                            layout.compression)
        entry["stats"] = shard_stats(rows.images, rows.masks, layout.num_classes)
    return entry | {"skipped": rows.skipped, "converted": rows.converted}


def load_rows(layout: ShardLayout, shard: PlannedShard, loader: SampleLoader) -> ShardRows:
    images = np.empty((len(shard.samples), layout.height, layout.width, 3), np.uint8)
    masks = np.empty((len(shard.samples), layout.height, layout.width), np.uint8) if shard.labeled else None
    keys, skipped, converted = [], [], []
    for sample in shard.samples:
        try:
            loaded = load_sample(sample, loader, layout, shard.labeled)
        except DataError as error:
            if not layout.skip_bad:
                raise DataError(f"{error}, {SKIP_HINT}") from None
            skipped.append({"key": sample.key, "problem": str(error)})
            continue
        images[len(keys)] = loaded.image
        if masks is not None:
            masks[len(keys)] = loaded.mask
        converted += [{"key": sample.key, "change": change} for change in loaded.changes]
        keys.append(sample.key)
    return ShardRows(keys, images[:len(keys)], masks[:len(keys)] if masks is not None else None, skipped, converted)


def shard_stats(images: np.ndarray, masks: np.ndarray | None, num_classes: int) -> dict:
    pixels = images.reshape(-1, 3).astype(np.float64) / 255.0
    return {
        "channel_sum": pixels.sum(axis=0).tolist(),
        "channel_sq_sum": (pixels**2).sum(axis=0).tolist(),
        "pixels": int(pixels.shape[0]),
        "class_pixels": class_pixels(masks, num_classes) if masks is not None else None,
    }


def class_pixels(masks: np.ndarray, num_classes: int) -> list[int]:
    counts = np.bincount(masks.reshape(-1), minlength=256)
    return counts[:num_classes].astype(np.int64).tolist()
