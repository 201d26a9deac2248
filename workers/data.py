"""Batches from shards: the split's rows for this rank, augmented on the loader workers and moved
to the device as uint8, where workers.augment.Normalize turns them into the model's input."""
from __future__ import annotations

import dataclasses
import itertools
import math
import mmap
import multiprocessing
import sys
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from workers.augment import Normalize, augment, train_transform
from workers.saliency import KeepMasks, apply_fill
from workers.seeding import augment_seed, seed_loader_worker
from workers.shards import ShardedSplit

if TYPE_CHECKING:
    import albumentations as A

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

    @property
    def sample_shapes(self) -> tuple[tuple[int, int, int], tuple[int, int]]:
        """(image, mask) shape of every row, as prepared; the augmentation presets keep it."""
        height, width = self.split.manifest["image_size"]
        return (height, width, 3), (height, width)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """A row's (uint8 HWC image, uint8 HW mask): read-only shard views where nothing changed
        them. Collation (`stack_samples`, BatchRing) copies them into the batch, the one copy."""
        epoch, row = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (self.epoch, int(key))
        _, image, mask = self.split.row(row)
        keep = self.keep_masks.get(row) if self.keep_masks is not None else None
        image, mask, keep = augment(self.transform, image, mask, keep,
                                    seed=augment_seed(self.seed, self.iteration, epoch, row))
        if keep is not None:
            image = apply_fill(image, keep, self.fill, self.mean_rgb)
        return image, mask

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
    gives an epoch's rows in its order, always as many. One live loader iterator serves every
    epoch of an iteration (see IterationLoader), so its workers keep prefetching across an
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


def stack_samples(samples: list[tuple[np.ndarray, np.ndarray]],
                  pin_memory: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of (image, mask) samples as one uint8 images tensor and one uint8 masks tensor."""
    return tuple(copy_rows([sample[part] for sample in samples], pin_memory) for part in (0, 1))


def copy_rows(rows: list[np.ndarray] | np.ndarray, pin_memory: bool) -> torch.Tensor:
    """Equal-shaped uint8 arrays, copied once into a new tensor."""
    batch = torch.empty((len(rows), *rows[0].shape), dtype=torch.uint8, pin_memory=pin_memory)
    fill_rows(batch.numpy(), rows)
    return batch


def fill_rows(out: np.ndarray, rows: list[np.ndarray] | np.ndarray) -> None:
    """Row i of `out` = rows[i]: the one copy a batch's samples go through."""
    for index, row in enumerate(rows):
        out[index] = row


def pinned(batch: tuple[torch.Tensor, torch.Tensor], pin_memory: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(part.pin_memory() for part in batch) if pin_memory else batch


@dataclasses.dataclass(frozen=True)
class SlotBatch:
    """What a loader worker sends for a batch it wrote into a BatchRing slot."""

    slot: int
    rows: int


class BatchRing:
    """Where loader workers put their batches: for each worker, `slots` batch-sized regions of one
    shared memory map, made before the workers fork and reused batch after batch.

    Torch's default collation gives every batch a fresh shared-memory file, whose pages the worker
    then faults in one by one: on 256x512 frames, two workers read a fifth fewer images per second
    that way (bench/data_path.py, (d2) against (d2t)). Here a worker writes its batch into its next
    slot and sends the slot's number; the main process copies the batch out (into page-locked
    memory, for a CUDA device) and frees the slot. A worker finds its next slot still taken only
    if the main process holds more batches than the loader prefetches; it then sends the batch as
    a tensor instead, so a batch is never overwritten before it was copied out."""

    def __init__(self, workers: int, slots: int, batch_size: int, shapes: tuple[tuple[int, ...], ...]):
        self.slots, self.batch_size, self.shapes = slots, batch_size, shapes
        self.sizes = [batch_size * math.prod(shape) for shape in shapes]
        self.free = mmap.mmap(-1, workers * slots)  # 1: free, its last batch was copied out
        self.free.write(b"\x01" * (workers * slots))
        self.memory = np.frombuffer(mmap.mmap(-1, workers * slots * sum(self.sizes)), dtype=np.uint8)
        self.next_slot = 0  # counted by each worker in its own copy of the ring, after the fork

    def parts(self, slot: int, rows: int) -> list[np.ndarray]:
        offset, parts = slot * sum(self.sizes), []
        for size, shape in zip(self.sizes, self.shapes):
            parts.append(self.memory[offset:offset + size].reshape(self.batch_size, *shape)[:rows])
            offset += size
        return parts

    def put(self, samples: list[tuple[np.ndarray, np.ndarray]]) -> SlotBatch | tuple[torch.Tensor, torch.Tensor]:
        """On a loader worker: the batch into its next slot, or as tensors if that slot is taken."""
        slot = get_worker_info().id * self.slots + self.next_slot % self.slots
        fits = len(samples) <= self.batch_size and all(
            part.shape == shape for sample in samples for part, shape in zip(sample, self.shapes))
        if not fits or not self.free[slot]:
            return stack_samples(samples)
        self.free[slot], self.next_slot = 0, self.next_slot + 1
        for out, part in zip(self.parts(slot, len(samples)), (0, 1)):
            fill_rows(out, [sample[part] for sample in samples])
        return SlotBatch(slot, len(samples))

    def take(self, batch: SlotBatch | tuple[torch.Tensor, torch.Tensor],
             pin_memory: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """On the main process: the batch as tensors of its own, its slot freed."""
        if not isinstance(batch, SlotBatch):
            return pinned(batch, pin_memory)
        images, masks = (copy_rows(part, pin_memory) for part in self.parts(batch.slot, batch.rows))
        self.free[batch.slot] = 1
        return images, masks


class Batches:
    """The batches of `dataset` over `rows` (a list of rows, or a batch sampler such as EpochRows),
    as (uint8 NHWC images, uint8 NHW masks) tensors. With loader `workers`, each iteration forks
    its own, and a BatchRing for them to put their batches in."""

    def __init__(self, dataset: SplitDataset, rows: list[int] | Sampler, batch_size: int, drop_last: bool,
                 seed: int, workers: int, pin_memory: bool):
        self.dataset, self.batch_size, self.workers, self.pin_memory = dataset, batch_size, workers, pin_memory
        self.batching = {"batch_sampler": rows} if isinstance(rows, Sampler) else {
            "batch_size": batch_size, "sampler": rows, "drop_last": drop_last}
        self.generator = torch.Generator().manual_seed(seed)
        self.ring: BatchRing | None = None

    def collate(self, samples: list[tuple[np.ndarray, np.ndarray]]):
        if self.ring is not None:
            return self.ring.put(samples)
        return stack_samples(samples, self.pin_memory and self.workers == 0)  # workers never pin

    def __len__(self) -> int:
        return len(self.loader())

    def loader(self) -> DataLoader:
        workers = {"multiprocessing_context": loader_context(),
                   "prefetch_factor": PREFETCH_BATCHES} if self.workers > 0 else {}
        return DataLoader(self.dataset, num_workers=self.workers, collate_fn=self.collate,
                          worker_init_fn=seed_loader_worker, generator=self.generator, **self.batching, **workers)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.workers == 0:
            yield from self.loader()
            return
        # Made before the loader forks its workers, which then share it; a later iteration's
        # workers get a ring of their own. Spawned workers (no fork) could not share it.
        forked = loader_context() is not None
        ring = self.ring = BatchRing(self.workers, PREFETCH_BATCHES + 1, self.batch_size,
                                     self.dataset.sample_shapes) if forked else None
        for batch in self.loader():
            yield ring.take(batch, self.pin_memory) if ring is not None else pinned(batch, self.pin_memory)


class IterationLoader:
    """The loader of one iteration's epochs: `epoch(e)` yields epoch e's batches from one live
    iterator, whose workers therefore persist from epoch to epoch. Epochs are read in order; any
    other epoch, or one after an epoch left unfinished, starts the iterator afresh there."""

    def __init__(self, batches: Batches, rows: EpochRows):
        self.batches, self.rows = batches, rows
        self.iterator, self.next_epoch = None, None

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.iterator is None or epoch != self.next_epoch:
            self.iterator = None  # shuts the previous workers down before new ones fork
            self.rows.first_epoch = epoch
            self.iterator = iter(self.batches)
        self.next_epoch = None  # until this epoch has been read to its end
        for _ in range(self.rows.batches_per_epoch):
            yield next(self.iterator)
        self.next_epoch = epoch + 1

    def close(self) -> None:
        """Shuts the loader workers down and lets their shared memory go: a process that trains
        trial after trial (a reused Tune trial) keeps nothing of an ended iteration's loading."""
        if self.iterator is not None:
            self.iterator.close()  # ends the batches' generator, and with it the DataLoader's workers
        self.iterator, self.next_epoch, self.batches.ring = None, None, None


def make_loader(dataset: SplitDataset, rows: np.ndarray | EpochRows, batch_size: int, training: bool,
                seed: int = 0, workers: int = 0, pin_memory: bool = False) -> Batches | IterationLoader:
    """Rows are already this rank's, in this epoch's order (see shards.rank_indices), or an
    `EpochRows` for all epochs of an iteration: then an IterationLoader, whose workers persist.

    Training drops a last partial batch (when there is a full one): a batch of one breaks
    BatchNorm in pooling branches, and the next epoch's shuffle covers those rows.

    `seed` (seeding.loader_seed) seeds the loader's own generator, from which the seeds of its
    `workers` processes derive; a loader without one would draw them from torch's global generator.
    Workers are forked, so they share the parent's memory-mapped shards instead of copying them.
    With `pin_memory`, batches come in page-locked memory, ready for asynchronous copies to CUDA."""
    if isinstance(rows, EpochRows):
        return IterationLoader(Batches(dataset, rows, batch_size, False, seed, workers, pin_memory), rows)
    return Batches(dataset, rows.tolist(), batch_size, training and len(rows) > batch_size, seed, workers, pin_memory)


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
