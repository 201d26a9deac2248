"""Batches from shards: the split's rows for this rank, augmented on the loader workers and moved
to the device as uint8, where workers.augment.Normalize turns them into the model's input."""
from __future__ import annotations

import dataclasses
import multiprocessing
import sys
from collections.abc import Iterator
from functools import cached_property

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from workers.augment import Normalize, augment, train_transform
from workers.saliency import KeepMasks, apply_fill
from workers.seeding import augment_seed, seed_loader_worker
from workers.shards import ShardedSplit

PREFETCH_BATCHES = 4  # per loader worker


@dataclasses.dataclass(frozen=True, eq=False)
class SplitDataset(Dataset):
    """Rows of a split as (uint8 HWC image, int64 mask). With saliency keep-masks (training
    only), removed pixels are filled after augmentation; labels are never masked. `normalize`
    is applied to whole batches on the device (`to_model_input`), not here.

    A row's augmentation is drawn from (seed, iteration, epoch, row) alone, so it is the same
    whichever rank, batch or loader worker reads the row; `for_epoch` gives an epoch's dataset,
    and a key (epoch, row) (from `EpochRows`) reads the row as that epoch augments it."""

    split: ShardedSplit
    transform: A.Compose | None
    normalize: Normalize
    keep_masks: KeepMasks | None = None
    fill: str = "zero"
    seed: int = 0
    iteration: int = 0
    epoch: int = 0

    @cached_property
    def mean_rgb(self) -> np.ndarray:
        return np.round(np.asarray(self.split.manifest["mean"]) * 255).astype(np.uint8)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, row = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (self.epoch, int(key))
        _, image, mask = self.split.row(row)
        keep = self.keep_masks.get(row) if self.keep_masks is not None else None
        image, mask, keep = augment(self.transform, image, mask, keep,
                                    seed=augment_seed(self.seed, self.iteration, epoch, row))
        if keep is not None:
            image = apply_fill(image, keep, self.fill, self.mean_rgb)
        # Shard views are read-only; torch wants writable buffers, so these are the only copies.
        return (torch.from_numpy(np.array(image, dtype=np.uint8)),
                torch.from_numpy(np.array(mask, dtype=np.int64)))

    def for_epoch(self, iteration: int, epoch: int) -> SplitDataset:
        """The same rows and preprocessing, augmented as in `epoch` of saliency `iteration`."""
        return dataclasses.replace(self, iteration=iteration, epoch=epoch)

    def with_keep_masks(self, keep_masks: KeepMasks | None) -> SplitDataset:
        """The same rows and preprocessing, with removed pixels filled by `keep_masks`."""
        return dataclasses.replace(self, keep_masks=keep_masks)

    def without_augmentation(self) -> SplitDataset:
        return dataclasses.replace(self, transform=None)


def open_labeled_splits(data_root: str, manifest: dict, names: tuple[str, ...]) -> dict[str, ShardedSplit]:
    """Those of `names` that have rows and masks: a split without labels is neither trained on nor scored."""
    labeled = [name for name, info in manifest["splits"].items() if info["has_masks"] and info["rows"] > 0]
    return {name: ShardedSplit(data_root, name, manifest=manifest) for name in names if name in labeled}


def build_datasets(splits: dict[str, ShardedSplit], manifest: dict, augment_preset: str,
                   fill: str, seed: int) -> dict[str, SplitDataset]:
    """The training rows augmented with the preset, the others only normalised; none masked yet."""
    height, width = manifest["image_size"]
    normalize = Normalize(manifest["mean"], manifest["std"])
    return {
        name: SplitDataset(split, train_transform(augment_preset, height, width, manifest["ignore_index"])
                           if name == "train" else None, normalize, fill=fill, seed=seed)
        for name, split in splits.items()
    }


class EpochRows(Sampler):
    """An epoch's rows as (epoch, row) keys: one loader, with persistent workers, serves every
    epoch of an iteration, and each epoch's rows are still augmented as that epoch draws them."""

    def __init__(self, rows: np.ndarray, epoch: int = 0):
        self.rows, self.epoch = rows, epoch

    def set_epoch(self, rows: np.ndarray, epoch: int) -> None:
        if len(rows) != len(self.rows):  # the loader's batch count is fixed when it is built
            raise ValueError(f"epoch {epoch} has {len(rows)} rows, the loader was built for {len(self.rows)}")
        self.rows, self.epoch = rows, epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, int(row)) for row in self.rows])

    def __len__(self) -> int:
        return len(self.rows)


def make_loader(dataset: Dataset, rows: np.ndarray | EpochRows, batch_size: int, training: bool, seed: int = 0,
                workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Rows are already this rank's, in this epoch's order (see shards.rank_indices), or an
    `EpochRows` that the caller moves from epoch to epoch (its workers then persist).

    Training drops a last partial batch (when there is a full one): a batch of one breaks
    BatchNorm in pooling branches, and the next epoch's shuffle covers those rows.

    `seed` (seeding.loader_seed) seeds the loader's own generator, from which the seeds of its
    `workers` processes derive; a loader without one would draw them from torch's global generator.
    Workers are forked, so they share the parent's memory-mapped shards instead of copying them."""
    drop_last = training and len(rows) > batch_size
    sampler = rows if isinstance(rows, EpochRows) else rows.tolist()
    extra = {"multiprocessing_context": loader_context(), "prefetch_factor": PREFETCH_BATCHES,
             "persistent_workers": isinstance(rows, EpochRows)} if workers > 0 else {}
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      drop_last=drop_last, worker_init_fn=seed_loader_worker, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed), **extra)


def loader_context():
    """fork where there is one (Linux): a spawned or forkserver worker would get the dataset
    pickled, and open its own maps of the shards; Python 3.14 no longer defaults to fork."""
    return multiprocessing.get_context("fork") if sys.platform.startswith("linux") else None


def to_model_input(images: torch.Tensor, normalize: Normalize, device: torch.device,
                   memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """A loader's uint8 NHWC batch, copied to the device (asynchronously from pinned memory) and
    normalised there: four times fewer bytes to copy than float32, and no float math on the host."""
    return normalize(images.to(device, non_blocking=True), memory_format)
