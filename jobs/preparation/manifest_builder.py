"""The manifest of a prepared dataset, built from the entries its shard tasks returned."""
from __future__ import annotations

import datetime as dt

import numpy as np

from workers.shards import FORMAT_NAME, FORMAT_VERSION
from jobs.preparation.shard_layout import PlannedShard, ShardLayout
from jobs.preparation.sources.base import Dataset


def build_manifest(dataset: Dataset, plan: list[PlannedShard], entries: list[dict], layout: ShardLayout) -> dict:
    """`entries` are build_shard's results in plan order; their `stats`, `skipped` and `converted` are
    taken out, so that what stays is each shard's entry in the manifest."""
    stats = [entry.pop("stats") for entry in entries]
    skipped = list(dataset.skipped) + [sample for entry in entries for sample in entry.pop("skipped", [])]
    converted = [sample for entry in entries for sample in entry.pop("converted", [])]
    mean, std = channel_mean_std([s for shard, s in zip(plan, stats) if shard.split == "train" and s is not None])
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "source": dataset.source,
        "source_options": dataset.options,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "image_size": [layout.height, layout.width],
        "num_classes": layout.num_classes,
        "class_names": dataset.class_names,
        "palette": [list(color) for color in dataset.palette],
        "ignore_index": dataset.ignore_index,
        "background_classes": dataset.background_classes,
        "label_mode": dataset.label_mode,
        "compression": layout.compression,
        "mean": mean,
        "std": std,
        "splits": summarise_splits(plan, entries, stats, layout.num_classes),
        "skipped": {"count": len(skipped), "samples": skipped},
        "converted": {"count": len(converted), "samples": converted},
    }


def summarise_splits(plan: list[PlannedShard], entries: list[dict], stats: list[dict | None],
                     num_classes: int) -> dict[str, dict]:
    """Per split: rows, whether it has masks, its class pixel counts and its written shards."""
    splits: dict[str, dict] = {}
    for shard, entry, shard_stats in zip(plan, entries, stats):
        info = splits.setdefault(shard.split, {"rows": 0, "has_masks": shard.labeled, "shards": [],
                                               "class_pixels": [0] * num_classes if shard.labeled else None})
        if entry["file"] is None:  # every sample of this shard was skipped
            continue
        info["rows"] += entry["rows"]
        info["shards"].append(entry)
        if shard_stats["class_pixels"] is not None:
            info["class_pixels"] = [a + b for a, b in zip(info["class_pixels"], shard_stats["class_pixels"])]
    return splits


def channel_mean_std(stats: list[dict]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std over the pixels of the shards whose `stats` are given."""
    channel_sum = np.zeros(3)
    channel_sq = np.zeros(3)
    pixels = 0
    for shard_stats in stats:
        channel_sum += shard_stats["channel_sum"]
        channel_sq += shard_stats["channel_sq_sum"]
        pixels += shard_stats["pixels"]
    mean = channel_sum / max(pixels, 1)
    std = np.sqrt(np.maximum(channel_sq / max(pixels, 1) - mean**2, 1e-12))
    return mean.round(6).tolist(), std.round(6).tolist()
