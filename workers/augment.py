"""Named augmentation presets, applied jointly to image and mask, and the normalisation after them
(on the device, batch by batch).

Train and eval are kept separate: evaluation only normalises. Geometric transforms fill
the image with 0 and the mask with the ignore index, so padding is never scored.

Each call of `augment` draws from the seed it is given (workers.seeding.augment_seed), never from
the pipeline's own state: albumentations 2 seeds an unseeded `Compose` from OS entropy, which
torch.manual_seed does not reach.

albumentations and OpenCV are imported by the first pipeline built: a trial without augmentation
(and every DDP worker of one, a new process per trial) does not pay for them.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    import albumentations as A

PRESETS = ("none", "basic", "strong")


def train_transform(preset: str, height: int, width: int, ignore_index: int) -> A.Compose | None:
    """The preset's pipeline; apply it through `augment`, which seeds it for each sample."""
    if preset == "none":
        return None
    import albumentations as A

    geometric = [
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.85, 1.15), translate_percent=(-0.08, 0.08), rotate=(-15, 15),
                 fill=0, fill_mask=ignore_index, p=0.7),
    ]
    photometric = [A.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25, hue=0.03, p=0.7)]
    if preset == "basic":
        return A.Compose(geometric + photometric)
    if preset == "strong":
        return A.Compose(geometric + [
            # Elastic deformation as in the U-Net paper, plus grid distortion and scale crops.
            A.ElasticTransform(alpha=30, sigma=6, fill=0, fill_mask=ignore_index, p=0.3),
            A.GridDistortion(num_steps=5, distort_limit=0.2, fill=0, fill_mask=ignore_index, p=0.3),
            A.RandomResizedCrop(size=(height, width), scale=(0.6, 1.0), p=0.5),
        ] + photometric)
    raise ValueError(f"unknown augmentation preset {preset!r}; valid: {', '.join(PRESETS)}")


def limit_augmentation_threads(threads: int) -> None:
    """Size OpenCV's thread pool (albumentations runs on OpenCV) in this process and in the loader
    workers it forks later. By default the pool takes every core of the machine, whatever Ray gave
    the process, so DDP workers and their loader workers would each run a pool as wide as the node.
    Call it before forking: in a forked child, resizing the inherited pool can hang."""
    import cv2

    cv2.setNumThreads(max(1, threads))


class Normalize:
    """uint8 NHWC batches -> float32 NCHW, (x/255 - mean) / std with the dataset's train
    statistics, computed on the batch's own device. The one normalisation of training,
    evaluation and prediction; on the CPU it gives the same bits as numpy's float32 math."""

    def __init__(self, mean: list[float], std: list[float]):
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor,
                 memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        # The layout is set on the uint8 tensor, where a copy is cheapest; the float math keeps it.
        nchw = images.permute(0, 3, 1, 2).contiguous(memory_format=memory_format)
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        return (nchw.to(torch.float32) / 255.0 - mean) / std


def reseed(transform: A.Compose, seed: int) -> None:
    """One numpy and one Python generator, shared by every transform of the pipeline in turn.
    Compose.set_random_seed would give each transform its own generator with the same seed, so
    their draws would coincide: every flipped sample would also get the affine and the jitter."""
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


def augment(transform: A.Compose | None, image: np.ndarray, mask: np.ndarray, keep: np.ndarray | None = None,
            *, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Image and mask views from the shard go in untouched; new arrays come out only if changed.
    A saliency keep-mask goes through the same geometry as the mask, so it stays aligned. The
    output is a function of the inputs and `seed` alone."""
    if transform is None:
        return image, mask, keep
    reseed(transform, seed)
    if keep is None:
        out = transform(image=image, mask=mask)
        return out["image"], out["mask"], None
    out = transform(image=image, mask=np.dstack([mask, keep]))
    return out["image"], out["mask"][..., 0], out["mask"][..., 1]
