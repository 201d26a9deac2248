"""Batches from shards: the split's rows for this rank, augmented and normalised."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from workers.augment import Normalize, augment
from workers.shards import ShardedSplit


class SplitDataset(Dataset):
    def __init__(self, split: ShardedSplit, transform, normalize: Normalize):
        self.split = split
        self.transform = transform
        self.normalize = normalize

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, row: int) -> tuple[torch.Tensor, torch.Tensor]:
        _, image, mask = self.split.row(int(row))
        image, mask = augment(self.transform, image, mask)
        # The mask view is read-only; torch wants a writable buffer, so this is the one copy.
        return self.normalize(image), torch.from_numpy(np.array(mask, dtype=np.int64))


def make_loader(dataset: SplitDataset, rows: np.ndarray, batch_size: int, training: bool) -> DataLoader:
    """Rows are already this rank's, in this epoch's order (see shards.rank_indices).

    Training drops a last partial batch (when there is a full one): a batch of one breaks
    BatchNorm in pooling branches, and the next epoch's shuffle covers those rows."""
    drop_last = training and len(rows) > batch_size
    return DataLoader(dataset, batch_size=batch_size, sampler=rows.tolist(), num_workers=0,
                      drop_last=drop_last)
