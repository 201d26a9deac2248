"""Batches from shards: the split's rows for this rank, augmented and normalised."""
from __future__ import annotations

import dataclasses
from functools import cached_property

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from workers.augment import Normalize, augment, train_transform
from workers.saliency import KeepMasks, apply_fill
from workers.seeding import augment_seed, seed_loader_worker
from workers.shards import ShardedSplit


@dataclasses.dataclass(frozen=True, eq=False)
class SplitDataset(Dataset):
    """Rows of a split as (normalised image, int64 mask). With saliency keep-masks (training
    only), removed pixels are filled after augmentation; labels are never masked.

    A row's augmentation is drawn from (seed, iteration, epoch, row) alone, so it is the same
    whichever rank, batch or loader worker reads the row; `for_epoch` gives an epoch's dataset."""

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

    def __getitem__(self, row: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = int(row)
        _, image, mask = self.split.row(row)
        keep = self.keep_masks.get(row) if self.keep_masks is not None else None
        image, mask, keep = augment(self.transform, image, mask, keep,
                                    seed=augment_seed(self.seed, self.iteration, self.epoch, row))
        if keep is not None:
            image = apply_fill(image, keep, self.fill, self.mean_rgb)
        # The mask view is read-only; torch wants a writable buffer, so this is the one copy.
        return self.normalize(image), torch.from_numpy(np.array(mask, dtype=np.int64))

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


def make_loader(dataset: Dataset, rows: np.ndarray, batch_size: int, training: bool, seed: int = 0,
                workers: int = 0) -> DataLoader:
    """Rows are already this rank's, in this epoch's order (see shards.rank_indices).

    Training drops a last partial batch (when there is a full one): a batch of one breaks
    BatchNorm in pooling branches, and the next epoch's shuffle covers those rows.

    `seed` (seeding.loader_seed) seeds the loader's own generator, from which the seeds of its
    `workers` processes derive; a loader without one would draw them from torch's global generator."""
    drop_last = training and len(rows) > batch_size
    return DataLoader(dataset, batch_size=batch_size, sampler=rows.tolist(), num_workers=workers,
                      drop_last=drop_last, worker_init_fn=seed_loader_worker,
                      generator=torch.Generator().manual_seed(seed))
