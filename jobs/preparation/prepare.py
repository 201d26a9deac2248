"""Data preparation: a source's samples -> Arrow shards + manifest, one task per shard.

A failed or interrupted preparation leaves nothing of its own in OUT: no shard, no temporary file
and no manifest (which is written last, atomically).
"""
from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from typing import Callable

from workers.exceptions import DataError
from workers.shards import COMPRESSIONS, MANIFEST, read_manifest, shard_name, write_manifest
from jobs.preparation.manifest_builder import build_manifest
from jobs.preparation.shard_builder import build_shard
from jobs.preparation.shard_layout import PlannedShard, ShardLayout, plan_shards
from jobs.preparation.sources.base import Dataset, SampleLoader

TaskRunner = Callable[[list[Callable[[], dict]]], list[dict]]


def parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise DataError(f"--size {text!r}: expected HxW, e.g. 256x256") from None
    if height < 8 or width < 8:
        raise DataError(f"--size {text!r}: height and width must be at least 8")
    return height, width


def prepare(dataset: Dataset, loader: SampleLoader, out: Path, size: tuple[int, int],
            shard_size: int, compression: str, overwrite: bool, run_tasks: TaskRunner,
            skip_bad: bool = False) -> dict:
    """Write every shard (through `run_tasks`, which runs the callables, as Ray tasks in the CLI) and
    then the manifest; an identical preparation already in OUT is reused. With `skip_bad`, samples
    that fail to load or check are left out and listed in the manifest's `skipped`."""
    check_request(dataset, shard_size, compression)
    if overwrite and out.exists():
        remove_dataset(out)
    elif existing_dataset(out, dataset, size):
        return read_manifest(out)
    layout = ShardLayout(out=out, height=size[0], width=size[1], num_classes=len(dataset.class_names),
                         ignore_index=dataset.ignore_index, compression=compression, skip_bad=skip_bad)
    return write_dataset(dataset, loader, layout, plan_shards(dataset, shard_size), run_tasks)


def check_request(dataset: Dataset, shard_size: int, compression: str) -> None:
    if compression not in COMPRESSIONS:
        raise DataError(f"--compression {compression!r}: expected one of {', '.join(COMPRESSIONS)}")
    if shard_size < 1:
        raise DataError(f"--shard-size {shard_size}: must be at least 1")
    if not any(dataset.splits.values()):
        raise DataError(f"{dataset.source}: no samples found")


def existing_dataset(out: Path, dataset: Dataset, size: tuple[int, int]) -> bool:
    """True when OUT already holds this exact preparation (so it is reused)."""
    if not (out / MANIFEST).exists():
        return False
    manifest = read_manifest(out)
    same = (manifest["source"] == dataset.source and manifest["source_options"] == dataset.options
            and manifest["image_size"] == list(size))
    if not same:
        raise DataError(f"{out}: holds a different prepared dataset; pass --overwrite or another --out")
    return True


def remove_dataset(out: Path) -> None:
    if not (out / MANIFEST).exists():
        raise DataError(f"{out}: exists and holds no segq manifest; refusing to overwrite it")
    for path in list(out.glob("*.arrow")) + [out / MANIFEST]:
        path.unlink(missing_ok=True)
    shutil.rmtree(out / "keep_masks", ignore_errors=True)


def write_dataset(dataset: Dataset, loader: SampleLoader, layout: ShardLayout, plan: list[PlannedShard],
                  run_tasks: TaskRunner) -> dict:
    created_out = not layout.out.exists()
    layout.out.mkdir(parents=True, exist_ok=True)
    try:
        entries = run_tasks([partial(build_shard, layout, shard, loader) for shard in plan])
        manifest = build_manifest(dataset, plan, entries, layout)
        if not any(info["rows"] for info in manifest["splits"].values()):
            first = manifest["skipped"]["samples"][0]["problem"]
            raise DataError(f"{dataset.source}: every sample was bad and skipped; fix the data (first: {first})")
        write_manifest(layout.out, manifest)
    except BaseException:
        remove_partial_output(layout.out, plan, created_out)
        raise
    return manifest


def remove_partial_output(out: Path, plan: list[PlannedShard], created_out: bool) -> None:
    for shard in plan:
        (out / shard_name(shard.split, shard.index)).unlink(missing_ok=True)
    for leftover in out.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)
    if created_out and not any(out.iterdir()):
        out.rmdir()
