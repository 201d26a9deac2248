"""The pets source on a tiny Oxford-IIIT Pet tree (JPEG images of several sizes, PNG trimaps)."""
import numpy as np
import pytest
from PIL import Image

from workers.exceptions import DataError
from jobs.preparation.prepare import prepare
from jobs.preparation.sources.pets import load_pets, pets_dataset
from workers.shards import ShardedSplit

TRAINVAL = [f"Abyssinian_{i}" for i in range(1, 11)] + [f"beagle_{i}" for i in range(1, 11)]
TEST = ["Bombay_1", "boxer_1", "boxer_2"]
SIZES = [(64, 64), (48, 80), (90, 60)]


def run_inline(tasks):
    return [task() for task in tasks]


def write_pets(root, trainval=TRAINVAL, test=TEST, seed=0) -> dict[str, np.ndarray]:
    """Images of several sizes, trimaps constant over 2x2 blocks; returns the trimaps by name.
    Also writes the archives' stray files that the source must ignore."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    trimaps = {}
    for index, name in enumerate(trainval + test):
        height, width = SIZES[index % len(SIZES)]
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / "images" / f"{name}.jpg")
        trimap = rng.integers(1, 4, (height // 2, width // 2), dtype=np.uint8).repeat(2, 0).repeat(2, 1)
        Image.fromarray(trimap).save(root / "annotations" / "trimaps" / f"{name}.png")
        trimaps[name] = trimap
    (root / "annotations" / "trimaps" / "._Abyssinian_1.png").write_bytes(b"\x00\x05\x16\x07junk")
    (root / "images" / "Abyssinian_1.mat").write_bytes(b"MATLAB")
    lines = lambda names: "".join(f"{name} {i % 37 + 1} {1 + i % 2} {i % 12 + 1}\n" for i, name in enumerate(names))
    (root / "annotations" / "trainval.txt").write_text(lines(trainval))
    (root / "annotations" / "test.txt").write_text(lines(test))
    return trimaps


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "oxford-iiit-pet"
    return root, write_pets(root)


def rows_of(out, split):
    rows = ShardedSplit(out, split)
    return {key: (image, mask) for key, image, mask in (rows.row(i) for i in range(len(rows)))}


def test_trimaps_map_to_background_pet_border(tree, tmp_path):
    root, trimaps = tree
    out = tmp_path / "out"
    manifest = prepare(pets_dataset(root), load_pets, out, (32, 32), 8, "none", False, run_inline)
    assert manifest["class_names"] == ["background", "pet", "border"] and manifest["background_classes"] == [0]
    lookup = np.array([255, 1, 0, 2] + [255] * 252, np.uint8)
    for key, (image, mask) in rows_of(out, "train").items():
        assert image.shape == (32, 32, 3) and mask.shape == (32, 32)
        if trimaps[key].shape == (64, 64):  # an exact 2x2 reduction: compare pixel for pixel
            assert np.array_equal(mask, lookup[trimaps[key][::2, ::2]]), key
        assert set(np.unique(mask)) <= {0, 1, 2}


def test_border_ignore_maps_the_border_to_255(tree, tmp_path):
    root, trimaps = tree
    out = tmp_path / "out"
    manifest = prepare(pets_dataset(root, border="ignore"), load_pets, out, (32, 32), 8, "none", False, run_inline)
    assert manifest["class_names"] == ["background", "pet"] and manifest["num_classes"] == 2
    _, mask = rows_of(out, "train")["Abyssinian_1"]  # 64x64: an exact 2x2 reduction
    assert np.array_equal(mask, np.array([0, 1, 0, 255] + [0] * 252, np.uint8)[trimaps["Abyssinian_1"][::2, ::2]])


def test_official_test_split_and_seeded_val_carved_from_trainval(tree):
    root, _ = tree
    dataset = pets_dataset(root, val_fraction=0.2, seed=3)
    keys = {split: [s.key for s in samples] for split, samples in dataset.splits.items()}
    assert keys["test"] == TEST
    assert len(keys["val"]) == 4 and len(keys["train"]) == 16
    assert sorted(keys["train"] + keys["val"]) == sorted(TRAINVAL)
    assert keys == {split: [s.key for s in samples] for split, samples in pets_dataset(root, 0.2, 3).splits.items()}
    assert keys["val"] != [s.key for s in pets_dataset(root, 0.2, 4).splits["val"]]


def test_grayscale_and_cmyk_images_are_converted_and_recorded(tree, tmp_path):
    root, _ = tree
    Image.new("L", (60, 90), 128).save(root / "images" / "beagle_2.jpg")
    Image.new("CMYK", (64, 64), (0, 0, 0, 0)).save(root / "images" / "beagle_3.jpg")
    manifest = prepare(pets_dataset(root, val_fraction=0.0), load_pets, tmp_path / "out", (32, 32), 8, "none",
                       False, run_inline)
    assert manifest["converted"] == {"count": 2, "samples": [
        {"key": "beagle_2", "change": "grayscale (L) image converted to RGB"},
        {"key": "beagle_3", "change": "CMYK (CMYK) image converted to RGB"}]}
    image, _ = rows_of(tmp_path / "out", "train")["beagle_2"]
    assert (image == 128).all()


def test_trimap_value_outside_1_to_3_names_the_file(tree, tmp_path):
    root, _ = tree
    trimap = root / "annotations" / "trimaps" / "boxer_2.png"
    Image.new("L", (80, 48), 0).save(trimap)
    with pytest.raises(DataError, match=f"{trimap}: mask value 0 is not a trimap value"):
        prepare(pets_dataset(root), load_pets, tmp_path / "out", (32, 32), 8, "none", False, run_inline)
    assert not (tmp_path / "out").exists()


def test_layout_errors(tree):
    root, _ = tree
    expected = f"{root / 'images'}: no images/ and no annotations/ folder; .*point at {root}$"
    with pytest.raises(DataError, match=expected):
        pets_dataset(root / "images")
    (root / "annotations" / "test.txt").unlink()
    with pytest.raises(DataError, match="test.txt: missing; it holds the official split"):
        pets_dataset(root)


def test_missing_trimap_is_found_while_listing_or_skipped(tree):
    root, _ = tree
    trimap = root / "annotations" / "trimaps" / "boxer_1.png"
    trimap.unlink()
    with pytest.raises(DataError, match=f"{trimap}: missing mask \\(trimap\\) of boxer_1"):
        pets_dataset(root)
    dataset = pets_dataset(root, skip_bad=True)
    assert [s.key for s in dataset.splits["test"]] == ["Bombay_1", "boxer_2"]
    assert [s["key"] for s in dataset.skipped] == ["boxer_1"]
