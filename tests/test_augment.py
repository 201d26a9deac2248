"""Augmentation presets and their seeding: a row's augmentation is a function of (seed, iteration,
epoch, row) alone."""
import os
import random

import numpy as np
import pytest
import torch

from workers.augment import PRESETS, Normalize, augment, reseed, train_transform
from workers.data import SplitDataset, make_loader
from workers.seeding import augment_seed, configure_determinism
from workers.shards import ShardedSplit
from tests.conftest import prepare_synthetic_in_process

HEIGHT, WIDTH = 16, 24


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = prepare_synthetic_in_process(tmp_path_factory.mktemp("data") / "synthetic", 12, (1.0, 0.0, 0.0),
                                       (HEIGHT, WIDTH))
    return ShardedSplit(out, "train")


def train_rows(split, preset="basic", seed=7) -> SplitDataset:
    """A fresh pipeline each time, as a new run or another rank builds it."""
    normalize = Normalize(split.manifest["mean"], split.manifest["std"])
    return SplitDataset(split, train_transform(preset, HEIGHT, WIDTH, 255), normalize, seed=seed)


def same(a, b) -> bool:
    return np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("preset", ["basic", "strong"])
def test_a_rows_augmentation_does_not_depend_on_the_reading_order(split, preset):
    rows = list(range(len(split)))
    forward = train_rows(split, preset).for_epoch(1, 2)
    backward = train_rows(split, preset).for_epoch(1, 2)
    first = {row: forward[row] for row in rows}
    second = {row: backward[row] for row in reversed(rows + rows)}  # reversed, and each row read twice
    assert all(same(first[row], second[row]) for row in rows)


def test_another_epoch_iteration_or_seed_augments_differently(split):
    reference = train_rows(split).for_epoch(1, 2)
    others = [train_rows(split).for_epoch(1, 3), train_rows(split).for_epoch(2, 2),
              train_rows(split, seed=8).for_epoch(1, 2)]
    for other in others:
        changed = sum(not same(reference[row], other[row]) for row in range(len(split)))
        assert changed >= len(split) // 2  # a row is left as it is with p = 0.5 * 0.3 * 0.3


def test_a_keep_mask_does_not_change_the_draws(split):
    transform = train_transform("strong", HEIGHT, WIDTH, 255)
    _, image, mask = split.row(0)
    keep = np.ones_like(mask, dtype=bool).view(np.uint8)
    seed = augment_seed(7, 1, 2, 0)
    plain_image, plain_mask, _ = augment(transform, image, mask, seed=seed)
    masked_image, masked_mask, moved_keep = augment(transform, image, mask, keep, seed=seed)
    assert np.array_equal(plain_image, masked_image) and np.array_equal(plain_mask, masked_mask)
    assert moved_keep.shape == mask.shape


def test_every_transform_draws_from_one_shared_generator():
    # Compose.set_random_seed seeds each transform's own generator with the same seed, so their
    # first draws coincide (a flip would always come with the affine); one shared stream does not.
    transform = train_transform("strong", HEIGHT, WIDTH, 255)
    reseed(transform, 123)
    assert all(step.py_random is transform.py_random for step in transform.transforms)
    assert all(step.random_generator is transform.random_generator for step in transform.transforms)


def test_none_builds_no_pipeline_and_an_unknown_preset_names_the_valid_ones():
    assert train_transform("none", HEIGHT, WIDTH, 255) is None
    with pytest.raises(ValueError, match="valid: " + ", ".join(PRESETS)):
        train_transform("wild", HEIGHT, WIDTH, 255)


class GlobalDraws(torch.utils.data.Dataset):
    """Rows made of the global generators' draws (Python, numpy, torch), shaped as a loader's samples."""

    sample_shapes = ((1, 1, 3), (1, 1))

    def __len__(self):
        return 4

    def __getitem__(self, row):
        draws = [random.randrange(256), np.random.randint(256), int(torch.randint(256, ()))]
        return np.array(draws, np.uint8).reshape(1, 1, 3), np.zeros((1, 1), np.uint8)


def test_loader_workers_draw_from_the_loaders_seed():
    def draws(seed):
        loader = make_loader(GlobalDraws(), np.arange(4), 2, training=False, seed=seed, workers=2)
        return torch.cat([images for images, _ in loader])

    assert torch.equal(draws(5), draws(5))
    assert not torch.equal(draws(5), draws(6))


def test_deterministic_mode_is_set_and_cleared(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        configure_determinism(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()  # ops without a deterministic kernel warn
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.nn.Conv2d(3, 4, 3)(torch.rand(1, 3, 8, 8)).shape == (1, 4, 6, 6)  # harmless on CPU
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        configure_determinism(False)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
