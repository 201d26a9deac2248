"""The cityscapes source on a tiny tree in the official layout, prepared inline (no Ray)."""
import json

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from workers.exceptions import DataError
from jobs.preparation.prepare import prepare
from jobs.preparation.sources.cityscapes import LABELS, cityscapes_dataset, load_cityscapes
from workers.shards import ShardedSplit

TREE = {"train": {"aachen": 2, "bochum": 1}, "val": {"frankfurt": 2}, "test": {"berlin": 1}}
TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
             26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
EVAL_NAMES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
              "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
              "bicycle"]


def run_inline(tasks):
    return [task() for task in tasks]


def write_cityscapes(root, tree=TREE, height=64, width=128, seed=0) -> dict[str, np.ndarray]:
    """The official layout with every gtFine file kind; label ids are constant over 2x2 blocks.
    Returns the raw label ids of each labeled sample by key."""
    rng = np.random.default_rng(seed)
    labels = {}
    for split, cities in tree.items():
        for city, count in cities.items():
            (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
            (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
            for frame in range(count):
                base = f"{city}_{frame:06d}_{19 + frame:06d}"
                image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                Image.fromarray(image).save(root / "leftImg8bit" / split / city / f"{base}_leftImg8bit.png")
                blocks = rng.integers(0, 34, (height // 2, width // 2), dtype=np.uint8)
                raw = blocks.repeat(2, 0).repeat(2, 1) if split != "test" else np.zeros((height, width), np.uint8)
                gt = root / "gtFine" / split / city
                Image.fromarray(raw).save(gt / f"{base}_gtFine_labelIds.png")
                Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(gt / f"{base}_gtFine_color.png")
                Image.fromarray(raw.astype(np.uint16) * 1000).save(gt / f"{base}_gtFine_instanceIds.png")
                (gt / f"{base}_gtFine_polygons.json").write_text(json.dumps({"objects": []}))
                if split != "test":
                    labels[f"{city}/{base}"] = raw
    return labels


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "cityscapes"
    return root, write_cityscapes(root)


def read_split(out, split):
    rows = ShardedSplit(out, split)
    return {key: (image, mask) for key, image, mask in (rows.row(i) for i in range(len(rows)))}


def test_train_ids_follow_the_official_table_pixel_for_pixel(tree, tmp_path):
    root, labels = tree
    out = tmp_path / "out"
    manifest = prepare(cityscapes_dataset(root), load_cityscapes, out, (32, 64), 2, "none", False, run_inline)
    assert manifest["class_names"] == EVAL_NAMES and manifest["num_classes"] == 19
    assert manifest["palette"][0] == [128, 64, 128] and manifest["palette"][18] == [119, 11, 32]
    assert manifest["label_mode"] == "train_ids" and manifest["ignore_index"] == 255
    lookup = np.full(256, 255, np.uint8)
    for label_id, train_id in TRAIN_IDS.items():
        lookup[label_id] = train_id
    for split in ("train", "val"):
        for key, (image, mask) in read_split(out, split).items():
            assert image.shape == (32, 64, 3)
            assert np.array_equal(mask, lookup[labels[key][::2, ::2]]), key


def test_label_ids_keep_the_raw_34_classes(tree, tmp_path):
    root, labels = tree
    out = tmp_path / "out"
    manifest = prepare(cityscapes_dataset(root, "label_ids"), load_cityscapes, out, (32, 64), 8, "none", False,
                       run_inline)
    assert manifest["class_names"] == [name for name, *_ in LABELS] and len(LABELS) == 34
    assert manifest["class_names"][:3] == ["unlabeled", "ego vehicle", "rectification border"]
    assert manifest["class_names"][33] == "bicycle"
    for key, (_, mask) in read_split(out, "train").items():
        assert np.array_equal(mask, labels[key][::2, ::2])


def test_official_splits_keys_and_an_unlabeled_test_split(tree, tmp_path):
    root, _ = tree
    out = tmp_path / "out"
    manifest = prepare(cityscapes_dataset(root), load_cityscapes, out, (32, 64), 8, "none", False, run_inline)
    assert {name: info["rows"] for name, info in manifest["splits"].items()} == {"train": 3, "val": 2, "test": 1}
    assert sorted(read_split(out, "train")) == ["aachen/aachen_000000_000019", "aachen/aachen_000001_000020",
                                                "bochum/bochum_000000_000019"]
    test = manifest["splits"]["test"]
    assert test["has_masks"] is False and test["class_pixels"] is None
    table = pa.ipc.open_file(pa.memory_map(str(out / test["shards"][0]["file"]))).read_all()
    assert table.column_names == ["key", "image"]
    assert read_split(out, "test")["berlin/berlin_000000_000019"][1] is None


def test_pointing_at_leftimg8bit_says_where_to_point(tree):
    root, _ = tree
    for inside in (root / "leftImg8bit", root / "gtFine" / "train"):
        with pytest.raises(DataError, match=f"{inside}: no leftImg8bit/ folder; expected the Cityscapes root "
                                            f"that holds leftImg8bit/ and gtFine/; .* point at {root}$"):
            cityscapes_dataset(inside)


def test_missing_gtfine_and_empty_folders_are_layout_errors(tmp_path):
    root = tmp_path / "cs"
    with pytest.raises(DataError, match=f"{root}: does not exist; expected the Cityscapes root"):
        cityscapes_dataset(root)
    (root / "leftImg8bit" / "train" / "aachen").mkdir(parents=True)
    with pytest.raises(DataError, match="has leftImg8bit/ but no gtFine/; unpack gtFine_trainvaltest.zip"):
        cityscapes_dataset(root)
    (root / "gtFine" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=f"{root / 'leftImg8bit' / 'train'}: no images; expected"):
        cityscapes_dataset(root)


def test_missing_mask_is_found_while_listing_or_skipped(tree):
    root, _ = tree
    mask = root / "gtFine" / "val" / "frankfurt" / "frankfurt_000001_000020_gtFine_labelIds.png"
    mask.unlink()
    with pytest.raises(DataError, match=f"{mask}: missing mask for frankfurt_000001_000020_leftImg8bit.png"):
        cityscapes_dataset(root)
    dataset = cityscapes_dataset(root, skip_bad=True)
    assert [s.key for s in dataset.splits["val"]] == ["frankfurt/frankfurt_000000_000019"]
    assert dataset.skipped[0]["key"] == "frankfurt/frankfurt_000001_000020"


def test_a_value_that_is_no_label_id_names_the_mask(tree, tmp_path):
    root, _ = tree
    mask = root / "gtFine" / "train" / "bochum" / "bochum_000000_000019_gtFine_labelIds.png"
    Image.fromarray(np.full((64, 128), 40, np.uint8)).save(mask)
    with pytest.raises(DataError, match=f"{mask}: mask value 40 is not a Cityscapes label id"):
        prepare(cityscapes_dataset(root), load_cityscapes, tmp_path / "a", (32, 64), 8, "none", False, run_inline)
    with pytest.raises(DataError, match=f"{mask}: mask value 40 is outside the 34 classes"):
        prepare(cityscapes_dataset(root, "label_ids"), load_cityscapes, tmp_path / "b", (32, 64), 8, "none", False,
                run_inline)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
