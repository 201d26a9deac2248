"""Saliency masks against a plain per-image reference, and their storage and application."""
import numpy as np
import pytest
import torch

from workers.augment import Normalize, train_transform
from workers.data import SplitDataset
from workers.saliency import (KeepMasks, apply_fill, foreground_log_odds, random_relevance, select_keep, tie_keys,
                              write_rank_masks)
from workers.shards import ShardedSplit
from tests.conftest import prepare_synthetic_in_process


def reference_keep(relevance: np.ndarray, kept: np.ndarray, keep_percent: float, ties: np.ndarray) -> np.ndarray:
    """Slow and obvious: per image, sort the kept pixels by relevance (ties: lower tie key first),
    keep the top round(n * p)."""
    out = np.zeros_like(kept)
    for i in range(len(relevance)):
        candidates = np.flatnonzero(kept[i])
        k = int(round(len(candidates) * keep_percent / 100.0))
        order = sorted(candidates, key=lambda j: (-relevance[i, j], ties[i, j]))
        out[i, order[:k]] = True
    return out


@pytest.mark.parametrize("keep_percent", [90.0, 80.0, 50.0, 33.3, 1.0])
@pytest.mark.parametrize("case", ["random", "ties", "few_kept"])
def test_select_keep_matches_the_reference(keep_percent, case):
    generator = np.random.default_rng(7)
    images, pixels = 6, 97
    relevance = generator.random((images, pixels)).astype(np.float32)
    kept = generator.random((images, pixels)) < 0.8
    if case == "ties":
        relevance = np.round(relevance * 4) / 4  # only five distinct values: many ties at the threshold
    if case == "few_kept":
        kept[:] = False
        for i in range(images):
            kept[i, generator.choice(pixels, size=i, replace=False)] = True  # 0..5 pixels kept
    ties = tie_keys(list(range(images)), pixels, seed=3, iteration=1, device=torch.device("cpu"))
    expected = reference_keep(relevance, kept, keep_percent, ties.numpy())
    got = select_keep(torch.from_numpy(relevance), torch.from_numpy(kept), keep_percent, ties).numpy()
    assert np.array_equal(got, expected)
    assert not (got & ~kept).any()  # cumulative: never brings a removed pixel back


def test_kept_fraction_compounds_exactly():
    generator = torch.Generator().manual_seed(0)
    kept = torch.ones(4, 64 * 64, dtype=torch.bool)
    for iteration in range(1, 4):
        kept = select_keep(torch.rand(kept.shape, generator=generator), kept, 80.0, torch.rand(kept.shape))
        assert abs(kept.float().mean().item() - 0.8**iteration) < 1 / (64 * 64)


def test_foreground_log_odds_is_the_log_ratio_of_the_softmax_sums():
    logits = torch.tensor([[[[0.0]], [[1.0]], [[2.0]]]])  # 1 image, 3 classes, 1 pixel
    p = torch.softmax(torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), dim=0)
    assert foreground_log_odds(logits, [0]).item() == pytest.approx(float(torch.log((p[1] + p[2]) / p[0])))
    assert foreground_log_odds(logits, [0, 2]).item() == pytest.approx(float(torch.log(p[1] / (p[0] + p[2]))))


def test_saturated_object_loses_pixels_by_log_odds_not_by_row():
    """A confident model over a large object: its float32 softmax foreground sum is exactly 1.0 over
    most of the object, so ranked by it (ties in pixel order) the masks would cut the object's last
    rows off. Ranked by float64 log-odds, pixels go in the order of their log-odds, and the removed
    ones are spread over the object."""
    height = width = 32
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    inside = (rows >= 2) & (rows < 30) & (cols >= 2) & (cols < 30)
    # foreground logit margin 18..30 inside the object (float32 softmax saturates above ~16.6), -4 outside
    margin = torch.where(inside, 18.0 + 12.0 * torch.rand(height, width, generator=torch.Generator().manual_seed(5)),
                         torch.tensor(-4.0))
    logits = torch.stack([torch.zeros(height, width), margin]).unsqueeze(0)  # class 0: background
    saturated = torch.softmax(logits.float(), dim=1)[0, 1] == 1.0
    assert saturated[inside].float().mean() > 0.7  # the premise: most of the object saturates
    relevance = foreground_log_odds(logits, [0]).reshape(1, -1)
    kept = torch.ones(1, height * width, dtype=torch.bool)
    for iteration in range(1, 6):  # keep 80% each time, until fewer pixels than the object remain
        ties = tie_keys([0], height * width, seed=0, iteration=iteration, device=torch.device("cpu"))
        new_kept = select_keep(relevance, kept, 80.0, ties)
        removed = (kept & ~new_kept).reshape(height, width)
        order = relevance[0].double()
        # every removed pixel has log-odds no higher than any pixel still kept
        assert order[removed.reshape(-1)].max() <= order[new_kept[0]].min()
        removed_in_object = removed & inside
        if removed_in_object.any():
            mean_removed_row = rows[removed_in_object].double().mean()
            mean_object_row = rows[inside].double().mean()
            assert abs(mean_removed_row - mean_object_row) <= 0.1 * height, iteration
        kept = new_kept


def test_random_relevance_is_per_row_reproducible():
    a = random_relevance([3, 5], 16, seed=1, iteration=2, device=torch.device("cpu"))
    b = random_relevance([5], 16, seed=1, iteration=2, device=torch.device("cpu"))
    assert torch.equal(a[1], b[0]) and not torch.equal(a[0], a[1])


@pytest.fixture
def dataset_dir(tmp_path):
    return prepare_synthetic_in_process(tmp_path / "data", 20, (0.6, 0.2, 0.2))


def test_keep_masks_round_trip_bit_packed(tmp_path):
    generator = np.random.default_rng(0)
    keeps = generator.random((5, 16, 24)) < 0.5
    write_rank_masks(tmp_path, 0, np.array([0, 2, 4]), keeps[[0, 2, 4]])
    write_rank_masks(tmp_path, 1, np.array([1, 3]), keeps[[1, 3]])
    masks = KeepMasks(tmp_path, 16, 24)
    assert len(masks) == 5
    for row in range(5):
        assert np.array_equal(masks.get(row), keeps[row])
    assert masks.kept_fraction() == pytest.approx(keeps.mean())


@pytest.mark.parametrize("fill", ["zero", "mean", "blur"])
def test_training_images_are_filled_where_removed_and_labels_untouched(dataset_dir, tmp_path, fill):
    split = ShardedSplit(dataset_dir, "train")
    keeps = np.ones((len(split), 16, 24), bool)
    keeps[:, :, :12] = False  # remove the left half of every image
    write_rank_masks(tmp_path, 0, np.arange(len(split)), keeps)
    manifest = split.manifest
    normalize = Normalize(manifest["mean"], manifest["std"])
    dataset = SplitDataset(split, None, normalize, KeepMasks(tmp_path, 16, 24), fill=fill)
    plain = SplitDataset(split, None, normalize)
    image, mask = dataset[0]
    plain_image, plain_mask = plain[0]
    assert np.array_equal(mask, plain_mask)  # labels are never masked
    assert np.array_equal(image[:, 12:], plain_image[:, 12:])  # uint8 HWC: the device normalises
    _, raw, _ = split.row(0)
    expected_left = apply_fill(raw, keeps[0], fill, dataset.mean_rgb)[:, :12]
    assert np.array_equal(image[:, :12], expected_left)
    if fill == "zero":
        assert np.all(expected_left == 0)


def test_augmentation_moves_the_keep_mask_with_the_image():
    """The keep-mask goes through the same geometry as image and labels: with an image that
    draws the keep-mask, kept pixels and bright pixels still coincide after augmentation."""
    import albumentations as A

    from workers.augment import augment

    generator = np.random.default_rng(3)
    blocks = (generator.random((4, 6)) < 0.5).astype(np.uint8)
    keep = np.kron(blocks, np.ones((8, 8), np.uint8))  # 8x8 blocks: interpolation only touches edges
    keep[:, :8] = 0  # asymmetric, so a flip shows
    image = np.repeat((keep * 255)[..., None], 3, axis=2).astype(np.uint8)
    mask = keep.copy()
    flipped_image, flipped_mask, flipped_keep = augment(A.Compose([A.HorizontalFlip(p=1.0)]), image, mask, keep,
                                                            seed=0)
    assert np.array_equal(flipped_keep, keep[:, ::-1]) and np.array_equal(flipped_mask, mask[:, ::-1])
    assert np.array_equal(flipped_image[..., 0] > 0, flipped_keep > 0)

    transform = train_transform("strong", 32, 48, 255)
    for seed in range(5):
        out_image, out_mask, out_keep = augment(transform, image, mask, keep, seed=seed)
        inside = out_mask != 255  # not padding
        agree = ((out_image[..., 0] > 127) == (out_keep == 1))[inside].mean()
        assert agree > 0.9  # interpolation blurs edges of the image only
