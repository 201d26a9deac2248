"""The folder source: images/ + masks/ matched by name, classes from classes.txt or a flag."""
import numpy as np
import pytest
from PIL import Image

from workers.exceptions import DataError
from jobs.preparation.prepare import prepare
from jobs.preparation.sources.folder import folder_dataset, load_folder, voc_palette
from workers.shards import ShardedSplit

CLASSES = ["background", "cat", "dog"]


def run_inline(tasks):
    return [task() for task in tasks]


def write_folder(root, count=10, height=32, width=48, classes=CLASSES, seed=0) -> dict[str, np.ndarray]:
    """PNG images and 8-bit masks (2x2-constant class ids) named sample_000..; returns the masks by key."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    masks = {}
    for index in range(count):
        key = f"sample_{index:03d}"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / "images" / f"{key}.png")
        mask = rng.integers(0, len(classes or CLASSES), (height // 2, width // 2), dtype=np.uint8)
        masks[key] = mask.repeat(2, 0).repeat(2, 1)
        Image.fromarray(masks[key]).save(root / "masks" / f"{key}.png")
    return masks


def test_pairs_by_name_and_keeps_masks_exact(tmp_path):
    root = tmp_path / "set"
    masks = write_folder(root)
    out = tmp_path / "out"
    manifest = prepare(folder_dataset(root), load_folder, out, (16, 24), 4, "none", False, run_inline)
    assert manifest["class_names"] == CLASSES and manifest["palette"] == [list(c) for c in voc_palette(3)]
    assert manifest["palette"][:3] == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    seen = []
    for split in manifest["splits"]:
        rows = ShardedSplit(out, split)
        for i in range(len(rows)):
            key, image, mask = rows.row(i)
            assert image.shape == (16, 24, 3) and np.array_equal(mask, masks[key][::2, ::2])
            seen.append(key)
    assert sorted(seen) == sorted(masks)


def test_seeded_split_and_classes_flag(tmp_path):
    root = tmp_path / "set"
    write_folder(root, count=20, classes=None)
    dataset = folder_dataset(root, classes=["bg", "a", "b"], split=(0.5, 0.25, 0.25), seed=7)
    sizes = {split: len(samples) for split, samples in dataset.splits.items()}
    assert sizes == {"train": 10, "val": 5, "test": 5} and dataset.class_names == ["bg", "a", "b"]
    again = folder_dataset(root, classes=["bg", "a", "b"], split=(0.5, 0.25, 0.25), seed=7)
    assert again.splits == dataset.splits
    assert folder_dataset(root, ["bg", "a", "b"], (0.5, 0.25, 0.25), seed=8).splits != dataset.splits


def test_nested_names_and_palette_masks(tmp_path):
    root = tmp_path / "set"
    write_folder(root, count=0)
    (root / "images" / "street").mkdir()
    (root / "masks" / "street").mkdir()
    Image.new("RGB", (20, 20), (9, 9, 9)).save(root / "images" / "street" / "a.jpg")
    palette_mask = Image.new("P", (20, 20), 2)
    palette_mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    palette_mask.save(root / "masks" / "street" / "a.png")
    out = tmp_path / "out"
    prepare(folder_dataset(root, split=(1.0, 0.0, 0.0)), load_folder, out, (10, 10), 4, "none", False, run_inline)
    key, _, mask = ShardedSplit(out, "train").row(0)
    assert key == "street/a" and (mask == 2).all()  # palette indices are the class ids


@pytest.mark.parametrize("setup, message", [
    (lambda root: (root / "classes.txt").unlink(), "classes.txt: missing; write one class name per line"),
    (lambda root: (root / "classes.txt").write_text("a\nb\na\n"), "class name 'a' appears twice"),
    (lambda root: [p.unlink() for p in (root / "images").iterdir()], "images: no images"),
    (lambda root: (root / "images" / "sample_000.jpg").write_bytes(b"x"),
     "sample_000.png: same name as sample_000.jpg beside it"),
])
def test_listing_errors(tmp_path, setup, message):
    root = tmp_path / "set"
    write_folder(root, count=2)
    setup(root)
    with pytest.raises(DataError, match=message):
        folder_dataset(root)


def test_wrong_layout_points_at_the_root(tmp_path):
    root = tmp_path / "set"
    write_folder(root, count=2)
    expected = f"{root / 'masks'}: no images/ and no masks/ folder; expected ROOT/images/ .* point at {root}$"
    with pytest.raises(DataError, match=expected):
        folder_dataset(root / "masks")
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'}: does not exist; expected ROOT/images/"):
        folder_dataset(tmp_path / "nope")
