"""Batches from shards: the split's rows for this rank, augmented on the loader workers and moved
to the device as uint8, where workers.augment.Normalize turns them into the model's input."""
from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
import sys
from collections.abc import Callable, Iterator
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
    """Rows of a split as (uint8 HWC image, uint8 mask). With saliency keep-masks (training
    only), removed pixels are filled after augmentation; labels are never masked. `normalize`
    is applied to whole batches on the device (`to_model_input`), and masks become int64 there
    (`to_model_target`), not here.

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
                torch.from_numpy(np.array(mask, dtype=np.uint8)))

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
    """The batches of consecutive epochs, back to back, as lists of (epoch, row) keys: `rows_of(epoch)`
    gives an epoch's rows in its order, always as many. One loader with persistent workers serves
    every epoch of an iteration (see IterationLoader), so its workers keep prefetching across an
    epoch's end, while the train loop scores the epoch; each row is still augmented as its epoch
    draws it. Training drops an epoch's last partial batch (when there is a full one)."""

    def __init__(self, rows_of: Callable[[int], np.ndarray], batch_size: int, first_epoch: int = 1):
        self.rows_of, self.batch_size, self.first_epoch = rows_of, batch_size, first_epoch
        self.rows_per_epoch = len(rows_of(first_epoch))

    @property
    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.rows_per_epoch, self.batch_size)
        return full if full else int(rest > 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for epoch in itertools.count(self.first_epoch):
            rows = self.rows_of(epoch)
            if len(rows) != self.rows_per_epoch:  # the batches of an epoch are counted once
                raise ValueError(f"epoch {epoch} has {len(rows)} rows, the loader was built for {self.rows_per_epoch}")
            for start in range(0, self.batches_per_epoch * self.batch_size, self.batch_size):
                yield [(epoch, int(row)) for row in rows[start:start + self.batch_size]]


class IterationLoader:
    """The loader of one iteration's epochs: `epoch(e)` yields epoch e's batches from one live
    iterator, whose workers persist. Epochs are read in order; any other epoch, or one after an
    epoch left unfinished, starts the iterator afresh there."""

    def __init__(self, loader: DataLoader):
        self.loader, self.batches = loader, loader.batch_sampler
        self.iterator, self.next_epoch = None, None

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.iterator is None or epoch != self.next_epoch:
            self.batches.first_epoch = epoch
            self.iterator = iter(self.loader)
        self.next_epoch = None  # until this epoch has been read to its end
        for _ in range(self.batches.batches_per_epoch):
            yield next(self.iterator)
        self.next_epoch = epoch + 1


def make_loader(dataset: Dataset, rows: np.ndarray | EpochRows, batch_size: int, training: bool, seed: int = 0,
                workers: int = 0, pin_memory: bool = False) -> DataLoader | IterationLoader:
    """Rows are already this rank's, in this epoch's order (see shards.rank_indices), or an
    `EpochRows` for all epochs of an iteration: then an IterationLoader, whose workers persist.

    Training drops a last partial batch (when there is a full one): a batch of one breaks
    BatchNorm in pooling branches, and the next epoch's shuffle covers those rows.

    `seed` (seeding.loader_seed) seeds the loader's own generator, from which the seeds of its
    `workers` processes derive; a loader without one would draw them from torch's global generator.
    Workers are forked, so they share the parent's memory-mapped shards instead of copying them."""
    epochs = isinstance(rows, EpochRows)
    extra = {"multiprocessing_context": loader_context(), "prefetch_factor": PREFETCH_BATCHES,
             "persistent_workers": epochs} if workers > 0 else {}
    batching = {"batch_sampler": rows} if epochs else {
        "batch_size": batch_size, "sampler": rows.tolist(), "drop_last": training and len(rows) > batch_size}
    loader = DataLoader(dataset, num_workers=workers, worker_init_fn=seed_loader_worker, pin_memory=pin_memory,
                        generator=torch.Generator().manual_seed(seed), **batching, **extra)
    return IterationLoader(loader) if epochs else loader


def loader_context():
    """fork where there is one (Linux): a spawned or forkserver worker would get the dataset
    pickled, and open its own maps of the shards; Python 3.14 no longer defaults to fork."""
    return multiprocessing.get_context("fork") if sys.platform.startswith("linux") else None


def to_model_input(images: torch.Tensor, normalize: Normalize, device: torch.device,
                   memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """A loader's uint8 NHWC batch, copied to the device (asynchronously from pinned memory) and
    normalised there: four times fewer bytes to copy than float32, and no float math on the host."""
    return normalize(images.to(device, non_blocking=True), memory_format)


def to_model_target(masks: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A loader's uint8 mask batch (class ids, ignore index 255), copied to the device and widened
    there to the int64 class indices the losses take: eight times fewer bytes through the loader."""
    return masks.to(device, non_blocking=True).long()
