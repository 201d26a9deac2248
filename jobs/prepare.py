"""Data preparation: a source's samples -> Arrow shards + manifest, one Ray task per shard."""
from __future__ import annotations

import datetime as dt
import math
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from cluster.exceptions import DataError
from workers.shards import (
    COMPRESSIONS,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    read_manifest,
    shard_name,
    write_manifest,
    write_shard,
)

IGNORE_INDEX = 255
# Ends the message of every per-sample problem; dropped where the problem is recorded as skipped.
SKIP_HINT = "or pass --skip-bad to leave the sample out"


@dataclass(frozen=True)
class Sample:
    key: str
    ref: Any  # what the source needs to load it (an index, a pair of paths, ...)
    label_file: str | None = None  # named in label errors instead of the key, when there is a file


class SampleConverted(UserWarning):
    """A loader changed a sample in a way the manifest records (a grayscale image made RGB, ...)."""


@dataclass
class Dataset:
    """What a source offers: class metadata and the samples of each split."""

    source: str
    options: dict
    class_names: list[str]
    palette: list[tuple[int, int, int]]
    splits: dict[str, list[Sample]]
    labeled: dict[str, bool]
    ignore_index: int = IGNORE_INDEX
    background_classes: list[int] = field(default_factory=lambda: [0])
    label_mode: str | None = None
    skipped: list[dict] = field(default_factory=list)  # left out while listing (--skip-bad)


class SampleLoader(Protocol):
    def __call__(self, ref: Any, height: int, width: int) -> tuple[np.ndarray, np.ndarray | None]: ...


def parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise DataError(f"--size {text!r}: expected HxW, e.g. 256x256") from None
    if height < 8 or width < 8:
        raise DataError(f"--size {text!r}: height and width must be at least 8")
    return height, width


def seeded_split(count: int, fractions: tuple[float, float, float], seed: int) -> dict[str, np.ndarray]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise DataError(f"--split {fractions}: expected three non-negative fractions summing to 1")
    order = np.random.default_rng(seed).permutation(count)
    n_train = int(round(fractions[0] * count))
    n_val = int(round(fractions[1] * count))
    return {
        "train": np.sort(order[:n_train]),
        "val": np.sort(order[n_train:n_train + n_val]),
        "test": np.sort(order[n_train + n_val:]),
    }


def build_shard(out: str, split: str, index: int, samples: list[Sample], loader: SampleLoader,
                height: int, width: int, num_classes: int, ignore_index: int, labeled: bool,
                compression: str, skip_bad: bool = False) -> dict:
    """Load, check and write one shard; runs as a Ray task. With `skip_bad`, a sample that raises
    DataError is left out and returned under `skipped`; a shard left with no rows is not written."""
    keys, images, masks, skipped, converted = load_rows(samples, loader, height, width, num_classes,
                                                        ignore_index, labeled, skip_bad)
    entry: dict = {"file": None, "rows": 0, "stats": None}
    if keys:
        entry = write_shard(Path(out) / shard_name(split, index), keys, images, masks, compression)
        entry["stats"] = shard_stats(images, masks, num_classes)
    return entry | {"skipped": skipped, "converted": converted}


def load_rows(samples: list[Sample], loader: SampleLoader, height: int, width: int, num_classes: int,
              ignore_index: int, labeled: bool, skip_bad: bool):
    """(keys, images, masks or None, skipped, converted) of the samples that load and check."""
    images = np.empty((len(samples), height, width, 3), np.uint8)
    masks = np.empty((len(samples), height, width), np.uint8) if labeled else None
    keys, skipped, converted = [], [], []
    for sample in samples:
        try:
            image, mask, changes = load_sample(sample, loader, height, width, num_classes, ignore_index, labeled)
        except DataError as error:
            if not skip_bad:
                raise
            skipped.append({"key": sample.key, "problem": str(error).removesuffix(f", {SKIP_HINT}")})
            continue
        images[len(keys)] = image
        if masks is not None:
            masks[len(keys)] = mask
        converted += [{"key": sample.key, "change": change} for change in changes]
        keys.append(sample.key)
    return keys, images[:len(keys)], masks[:len(keys)] if masks is not None else None, skipped, converted


def shard_stats(images: np.ndarray, masks: np.ndarray | None, num_classes: int) -> dict:
    pixels = images.reshape(-1, 3).astype(np.float64) / 255.0
    return {
        "channel_sum": pixels.sum(axis=0).tolist(),
        "channel_sq_sum": (pixels**2).sum(axis=0).tolist(),
        "pixels": int(pixels.shape[0]),
        "class_pixels": class_pixels(masks, num_classes) if masks is not None else None,
    }


def load_sample(sample: Sample, loader: SampleLoader, height: int, width: int, num_classes: int,
                ignore_index: int, labeled: bool) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """The sample's image and mask, checked, and what the loader converted on the way."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SampleConverted)
        image, mask = loader(sample.ref, height, width)
    changes = [str(w.message) for w in caught if issubclass(w.category, SampleConverted)]
    for other in (w for w in caught if not issubclass(w.category, SampleConverted)):
        warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    if labeled:
        if mask is None:
            raise DataError(f"{sample.label_file or sample.key}: no mask for a labeled split")
        check_labels(mask, num_classes, ignore_index, sample.label_file or sample.key)
    return image, mask, changes


def check_labels(mask: np.ndarray, num_classes: int, ignore_index: int, key: str) -> None:
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != ignore_index)]
    if bad.size:
        raise DataError(
            f"{key}: mask value {int(bad[0])} is outside the {num_classes} classes and is not the "
            f"ignore index {ignore_index}; fix the mask or the class list, {SKIP_HINT}"
        )


def class_pixels(masks: np.ndarray, num_classes: int) -> list[int]:
    counts = np.bincount(masks.reshape(-1), minlength=256)
    return counts[:num_classes].astype(np.int64).tolist()


def plan_shards(dataset: Dataset, shard_size: int) -> list[tuple[str, int, list[Sample]]]:
    plan = []
    for split, samples in dataset.splits.items():
        for index, start in enumerate(range(0, len(samples), shard_size)):
            plan.append((split, index, samples[start:start + shard_size]))
    return plan


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


def prepare(dataset: Dataset, loader: SampleLoader, out: Path, size: tuple[int, int],
            shard_size: int, compression: str, overwrite: bool,
            run_tasks: Callable[[list[Callable[[], dict]]], list[dict]], skip_bad: bool = False) -> dict:
    """Write every shard (through `run_tasks`, which runs the callables as Ray tasks) and then
    the manifest. On any failure, nothing of this run is left in OUT. With `skip_bad`, samples
    that fail to load or check are left out and listed in the manifest's `skipped`."""
    if compression not in COMPRESSIONS:
        raise DataError(f"--compression {compression!r}: expected one of {', '.join(COMPRESSIONS)}")
    if shard_size < 1:
        raise DataError(f"--shard-size {shard_size}: must be at least 1")
    if not any(dataset.splits.values()):
        raise DataError(f"{dataset.source}: no samples found")
    if overwrite and out.exists():
        remove_dataset(out)
    elif existing_dataset(out, dataset, size):
        return read_manifest(out)
    created_out = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    height, width = size
    plan = plan_shards(dataset, shard_size)
    tasks = [
        (lambda split=split, index=index, samples=samples: build_shard(
            str(out), split, index, samples, loader, height, width, len(dataset.class_names),
            dataset.ignore_index, dataset.labeled[split], compression, skip_bad))
        for split, index, samples in plan
    ]
    try:
        entries = run_tasks(tasks)
        manifest = build_manifest(dataset, plan, entries, size, compression)
        if not any(info["rows"] for info in manifest["splits"].values()):
            first = manifest["skipped"]["samples"][0]["problem"]
            raise DataError(f"{dataset.source}: every sample was bad and skipped; fix the data (first: {first})")
        write_manifest(out, manifest)
    except BaseException:
        for split, index, _ in plan:
            (out / shard_name(split, index)).unlink(missing_ok=True)
        for leftover in out.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        if created_out and not any(out.iterdir()):
            out.rmdir()
        raise
    return manifest


def remove_dataset(out: Path) -> None:
    if not (out / MANIFEST).exists():
        raise DataError(f"{out}: exists and holds no segq manifest; refusing to overwrite it")
    for path in list(out.glob("*.arrow")) + [out / MANIFEST]:
        path.unlink(missing_ok=True)
    shutil.rmtree(out / "keep_masks", ignore_errors=True)


def build_manifest(dataset: Dataset, plan, entries: list[dict], size: tuple[int, int],
                   compression: str) -> dict:
    num_classes = len(dataset.class_names)
    splits: dict[str, dict] = {}
    channel_sum = np.zeros(3)
    channel_sq = np.zeros(3)
    pixels = 0
    skipped = list(dataset.skipped)
    converted = []
    for (split, _, _), entry in zip(plan, entries):
        stats = entry.pop("stats")
        skipped += entry.pop("skipped", [])
        converted += entry.pop("converted", [])
        info = splits.setdefault(split, {"rows": 0, "has_masks": dataset.labeled[split], "shards": [],
                                         "class_pixels": [0] * num_classes if dataset.labeled[split] else None})
        if entry["file"] is None:  # every sample of this shard was skipped
            continue
        info["rows"] += entry["rows"]
        info["shards"].append(entry)
        if stats["class_pixels"] is not None:
            info["class_pixels"] = [a + b for a, b in zip(info["class_pixels"], stats["class_pixels"])]
        if split == "train":
            channel_sum += stats["channel_sum"]
            channel_sq += stats["channel_sq_sum"]
            pixels += stats["pixels"]
    mean = channel_sum / max(pixels, 1)
    std = np.sqrt(np.maximum(channel_sq / max(pixels, 1) - mean**2, 1e-12))
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "source": dataset.source,
        "source_options": dataset.options,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "image_size": list(size),
        "num_classes": num_classes,
        "class_names": dataset.class_names,
        "palette": [list(color) for color in dataset.palette],
        "ignore_index": dataset.ignore_index,
        "background_classes": dataset.background_classes,
        "label_mode": dataset.label_mode,
        "compression": compression,
        "mean": mean.round(6).tolist(),
        "std": std.round(6).tolist(),
        "splits": splits,
        "skipped": {"count": len(skipped), "samples": skipped},
        "converted": {"count": len(converted), "samples": converted},
    }


def run_ray_tasks(tasks: list[Callable[[], dict]], progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Run each callable as a Ray task (one per shard); results come back in list order.
    The first failure cancels the rest and is raised as itself (a DataError stays a DataError)."""
    import ray

    @ray.remote(num_cpus=1, max_retries=0)
    def run(task):
        return task()

    refs = [run.remote(task) for task in tasks]
    pending = list(refs)
    try:
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            ray.get(finished)
            if progress:
                progress(len(refs) - len(pending), len(refs))
    except ray.exceptions.RayTaskError as error:
        for ref in pending:
            ray.cancel(ref, force=True)
        ray.wait(pending, num_returns=len(pending), timeout=60)
        cause = error.cause if isinstance(error.cause, Exception) else error
        raise cause from None
    return ray.get(refs)
