"""Bad input, prepared inline: one DataError naming the file, nothing left behind;
with skip_bad, the bad samples are counted in the manifest and the good ones written."""
import io

import numpy as np
import pytest
from PIL import Image

from workers.exceptions import DataError
from jobs.preparation.prepare import prepare
from jobs.preparation.sources.folder import folder_dataset, load_folder
from jobs.preparation.sources.images import read_rgb
from tests.test_source_folder import write_folder
from workers.shards import MANIFEST, ShardedSplit


def run_inline(tasks):
    return [task() for task in tasks]


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


def overwrite(path, data):
    path.write_bytes(data)
    return path


def save(path, array):
    Image.fromarray(array).save(path)
    return path


def image_of(root, index):
    return root / "images" / f"sample_{index:03d}.png"


def mask_of(root, index):
    return root / "masks" / f"sample_{index:03d}.png"


BAD_SAMPLES = {
    "truncated png": (lambda root: truncate(image_of(root, 3)),
                      "cannot decode the image (image file is truncated); the file is truncated or corrupt"),
    "garbage bytes": (lambda root: overwrite(image_of(root, 3), b"not a png at all" * 8),
                      "cannot decode the image (cannot identify image file"),
    "size mismatch": (lambda root: save(mask_of(root, 3), np.zeros((30, 48), np.uint8)),
                      "mask is 30x48 but its image sample_003.png is 32x48; a mask must have the size of its image"),
    "label outside classes": (lambda root: save(mask_of(root, 3), np.full((32, 48), 7, np.uint8)),
                              "mask value 7 is outside the 3 classes and is not the ignore index 255"),
    "16-bit mask": (lambda root: save(mask_of(root, 3), np.ones((32, 48), np.uint16)),
                    "16/32-bit mask (I;16); masks must hold class ids in one 8-bit channel"),
    "rgba mask": (lambda root: save(mask_of(root, 3), np.ones((32, 48, 4), np.uint8)),
                  "mask with an alpha channel (RGBA); masks must hold class ids in one 8-bit channel"),
    "rgb mask": (lambda root: save(mask_of(root, 3), np.ones((32, 48, 3), np.uint8)),
                 "RGB mask; masks must hold class ids in one 8-bit channel"),
    "transparent image": (lambda root: save(image_of(root, 3), np.zeros((32, 48, 4), np.uint8)),
                          "RGBA image with transparent pixels; flatten it onto a background"),
    "16-bit image": (lambda root: save(image_of(root, 3), np.ones((32, 48), np.uint16)),
                     "I;16 image (16/32-bit or unusual mode); images must be 8-bit RGB"),
}


@pytest.mark.parametrize("case", BAD_SAMPLES)
def test_bad_sample_fails_naming_the_file_and_leaves_nothing(tmp_path, case):
    root, out = tmp_path / "set", tmp_path / "out"
    write_folder(root, count=6)
    spoil, message = BAD_SAMPLES[case]
    bad_file = spoil(root)
    with pytest.raises(DataError) as caught:
        prepare(folder_dataset(root, split=(1.0, 0.0, 0.0)), load_folder, out, (16, 24), 2, "none", False, run_inline)
    text = str(caught.value)
    assert text.startswith(f"{bad_file}: ") and "\n" not in text
    assert message in text, text
    assert not out.exists()


def test_nothing_is_left_in_an_existing_output_folder(tmp_path):
    root, out = tmp_path / "set", tmp_path / "out"
    write_folder(root, count=6)
    truncate(image_of(root, 5))
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError):
        prepare(folder_dataset(root, split=(1.0, 0.0, 0.0)), load_folder, out, (16, 24), 2, "none", False, run_inline)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_missing_mask_fails_while_listing(tmp_path):
    root = tmp_path / "set"
    write_folder(root, count=3)
    mask_of(root, 1).unlink()
    with pytest.raises(DataError, match=f"{image_of(root, 1)}: missing mask; expected {mask_of(root, 1)}"):
        folder_dataset(root)


def test_skip_bad_writes_the_good_rows_and_counts_the_rest(tmp_path):
    root, out = tmp_path / "set", tmp_path / "out"
    masks = write_folder(root, count=10)
    truncate(image_of(root, 2))
    save(mask_of(root, 3), np.zeros((8, 8), np.uint8))
    save(mask_of(root, 5), np.full((32, 48), 9, np.uint8))
    mask_of(root, 7).unlink()
    dataset = folder_dataset(root, split=(1.0, 0.0, 0.0), skip_bad=True)
    # rows 0,1 | 2,3 | 4,5 | 6,8 | 9: the second shard holds only bad samples and is not written
    manifest = prepare(dataset, load_folder, out, (16, 24), 2, "none", False, run_inline, skip_bad=True)
    train = manifest["splits"]["train"]
    assert train["rows"] == 6
    assert [s["file"] for s in train["shards"]] == ["train-00000.arrow", "train-00002.arrow", "train-00003.arrow",
                                                    "train-00004.arrow"]
    assert [s["rows"] for s in train["shards"]] == [2, 1, 2, 1]
    assert not (out / "train-00001.arrow").exists()
    skipped = manifest["skipped"]
    assert skipped["count"] == 4
    assert sorted(s["key"] for s in skipped["samples"]) == ["sample_002", "sample_003", "sample_005", "sample_007"]
    problems = {s["key"]: s["problem"] for s in skipped["samples"]}
    assert problems["sample_005"].startswith(f"{mask_of(root, 5)}: mask value 9 is outside the 3 classes")
    assert problems["sample_007"].startswith(f"{image_of(root, 7)}: missing mask")
    rows = ShardedSplit(out, "train")
    kept = {rows.row(i)[0]: rows.row(i)[2] for i in range(len(rows))}
    assert sorted(kept) == ["sample_000", "sample_001", "sample_004", "sample_006", "sample_008", "sample_009"]
    assert all(np.array_equal(mask, masks[key][::2, ::2]) for key, mask in kept.items())
    assert sum(train["class_pixels"]) == 6 * 16 * 24


def test_skip_bad_with_nothing_good_fails_and_leaves_nothing(tmp_path):
    root, out = tmp_path / "set", tmp_path / "out"
    write_folder(root, count=2)
    truncate(image_of(root, 0))
    truncate(image_of(root, 1))
    dataset = folder_dataset(root, split=(1.0, 0.0, 0.0), skip_bad=True)
    with pytest.raises(DataError, match="every sample was bad and skipped; fix the data"):
        prepare(dataset, load_folder, out, (16, 24), 2, "none", False, run_inline, skip_bad=True)
    assert not out.exists()


def test_opaque_alpha_is_dropped_and_recorded(tmp_path):
    root, out = tmp_path / "set", tmp_path / "out"
    write_folder(root, count=3)
    rgba = np.full((32, 48, 4), 255, np.uint8)
    rgba[..., :3] = 40
    save(image_of(root, 1), rgba)
    manifest = prepare(folder_dataset(root, split=(1.0, 0.0, 0.0)), load_folder, out, (16, 24), 4, "none", False,
                       run_inline)
    assert manifest["converted"]["samples"] == [{"key": "sample_001",
                                                 "change": "opaque alpha channel of the RGBA image dropped"}]
    assert manifest["skipped"] == {"count": 0, "samples": []}
    assert (out / MANIFEST).exists()
    assert (ShardedSplit(out, "train").row(1)[1] == 40).all()


def test_jpeg_truncated_inside_its_data_is_caught(tmp_path):
    root, out = tmp_path / "set", tmp_path / "out"
    write_folder(root, count=2)
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(buffer, "JPEG")
    image_of(root, 0).unlink()
    (root / "images" / "sample_000.jpg").write_bytes(buffer.getvalue()[:-300])
    with pytest.raises(DataError, match="sample_000.jpg: cannot decode the image"):
        prepare(folder_dataset(root, split=(1.0, 0.0, 0.0)), load_folder, out, (16, 24), 4, "none", False, run_inline)


def test_read_rgb_reads_by_the_same_policy_without_the_skip_bad_hint(tmp_path):
    """`segq predict` reads its images with read_rgb: the preparation's policy, an (H, W, 3) array,
    and an error that names the file without suggesting --skip-bad, which predict does not have."""
    gray = save(tmp_path / "gray.png", np.full((6, 9), 70, np.uint8))
    assert read_rgb(gray).shape == (6, 9, 3) and (read_rgb(gray) == 70).all()
    broken = truncate(save(tmp_path / "broken.png", np.zeros((32, 48, 3), np.uint8)))
    with pytest.raises(DataError) as caught:
        read_rgb(broken)
    assert str(caught.value).startswith(f"{broken}: cannot decode the image") and "--skip-bad" not in str(caught.value)
