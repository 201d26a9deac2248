"""Batches from shards: the split's rows for this rank, augmented and normalised."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from workers.augment import Normalize, augment
from workers.saliency import KeepMasks, apply_fill
from workers.shards import ShardedSplit


class SplitDataset(Dataset):
    """Rows of a split as (normalised image, int64 mask). With saliency keep-masks (training
    only), removed pixels are filled after augmentation; labels are never masked."""

    def __init__(self, split: ShardedSplit, transform, normalize: Normalize,
                 keep_masks: KeepMasks | None = None, fill: str = "zero"):
        self.split = split
        self.transform = transform
        self.normalize = normalize
        self.keep_masks = keep_masks
        self.fill = fill
        self.mean_rgb = np.round(np.asarray(split.manifest["mean"]) * 255).astype(np.uint8)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, row: int) -> tuple[torch.Tensor, torch.Tensor]:
        _, image, mask = self.split.row(int(row))
        keep = self.keep_masks.get(int(row)) if self.keep_masks is not None else None
        image, mask, keep = augment(self.transform, image, mask, keep)
        if keep is not None:
            image = apply_fill(image, keep, self.fill, self.mean_rgb)
        # The mask view is read-only; torch wants a writable buffer, so this is the one copy.
        return self.normalize(image), torch.from_numpy(np.array(mask, dtype=np.int64))


def make_loader(dataset: SplitDataset, rows: np.ndarray, batch_size: int, training: bool) -> DataLoader:
    """Rows are already this rank's, in this epoch's order (see shards.rank_indices).

    Training drops a last partial batch (when there is a full one): a batch of one breaks
    BatchNorm in pooling branches, and the next epoch's shuffle covers those rows."""
    drop_last = training and len(rows) > batch_size
    return DataLoader(dataset, batch_size=batch_size, sampler=rows.tolist(), num_workers=0,
                      drop_last=drop_last)
