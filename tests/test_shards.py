import json

import numpy as np
import pyarrow as pa
import pytest

from workers.exceptions import DataError
from jobs.preparation.prepare import prepare
from jobs.preparation.sources.synthetic import CLASS_NAMES, load_synthetic, synthetic_dataset
from workers.shards import MANIFEST, ShardedSplit, rank_indices, read_manifest


def run_inline(tasks):
    return [task() for task in tasks]


@pytest.fixture
def dataset_dir(tmp_path):
    out = tmp_path / "data"
    prepare(synthetic_dataset(40, 3, (0.7, 0.15, 0.15)), load_synthetic, out, (32, 48), shard_size=8,
            compression="none", overwrite=False, run_tasks=run_inline)
    return out


def test_shards_open_with_plain_pyarrow(dataset_dir):
    manifest = json.loads((dataset_dir / MANIFEST).read_text())
    assert manifest["class_names"] == CLASS_NAMES
    assert manifest["image_size"] == [32, 48]
    assert manifest["ignore_index"] == 255
    assert sum(info["rows"] for info in manifest["splits"].values()) == 40
    shard = manifest["splits"]["train"]["shards"][0]
    table = pa.ipc.open_file(pa.memory_map(str(dataset_dir / shard["file"]))).read_all()
    assert table.column_names == ["key", "image", "mask"]
    assert str(table.schema.field("image").type.storage_type) == "fixed_size_list<item: uint8>[4608]"
    assert table.schema.field("image").type.shape == [32, 48, 3]
    assert table.schema.field("mask").type.shape == [32, 48]
    images = table.column("image").chunk(0).to_numpy_ndarray()
    assert images.shape == (shard["rows"], 32, 48, 3) and images.dtype == np.uint8


def test_rows_round_trip_and_are_zero_copy(dataset_dir):
    split = ShardedSplit(dataset_dir, "val")
    key, image, mask = split.row(0)
    expected_image, expected_mask = load_synthetic((3, int(key.split("/")[1])), 32, 48)
    assert np.array_equal(image, expected_image) and np.array_equal(mask, expected_mask)
    assert not image.flags.writeable and not image.flags.owndata  # a view of the memory map


def test_splits_are_disjoint_and_cover_every_scene(dataset_dir):
    keys = []
    for name in ("train", "val", "test"):
        split = ShardedSplit(dataset_dir, name)
        keys += [split.row(i)[0] for i in range(len(split))]
    assert len(keys) == len(set(keys)) == 40


def test_changed_shard_is_caught_at_read_time(dataset_dir):
    manifest = read_manifest(dataset_dir)
    path = dataset_dir / manifest["splits"]["train"]["shards"][1]["file"]
    data = bytearray(path.read_bytes())
    data[-200] ^= 0xFF
    path.write_bytes(bytes(data))
    split = ShardedSplit(dataset_dir, "train")
    split.row(0)  # shard 0 is fine
    with pytest.raises(DataError, match=f"{path.name}: sha256 does not match the manifest"):
        split.row(10)


def test_failed_preparation_leaves_nothing(tmp_path):
    out = tmp_path / "out"

    def failing(ref, height, width):
        if ref[1] == 7:
            raise DataError("scene 7: broken")
        return load_synthetic(ref, height, width)

    with pytest.raises(DataError, match="scene 7"):
        prepare(synthetic_dataset(30, 0, (0.7, 0.15, 0.15)), failing, out, (16, 16), 4, "none", False, run_inline)
    assert not out.exists()


def test_reuses_identical_and_refuses_different(dataset_dir):
    manifest = prepare(synthetic_dataset(40, 3, (0.7, 0.15, 0.15)), load_synthetic, dataset_dir, (32, 48), 8,
                       "none", False, run_inline)
    assert manifest == read_manifest(dataset_dir)
    with pytest.raises(DataError, match="different prepared dataset; pass --overwrite"):
        prepare(synthetic_dataset(41, 3, (0.7, 0.15, 0.15)), load_synthetic, dataset_dir, (32, 48), 8,
                "none", False, run_inline)


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_compressed_shards_read_back(tmp_path, compression):
    out = tmp_path / compression
    prepare(synthetic_dataset(10, 0, (0.6, 0.2, 0.2)), load_synthetic, out, (16, 16), 4, compression, False,
            run_inline)
    split = ShardedSplit(out, "train")
    assert np.array_equal(split.row(0)[1], load_synthetic((0, int(split.row(0)[0][-6:])), 16, 16)[0])


def test_rank_indices_partition_each_epoch_deterministically():
    parts = [rank_indices(10, rank, 3, epoch=2, seed=5, shuffle=True, pad=False) for rank in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    again = rank_indices(10, 1, 3, epoch=2, seed=5, shuffle=True, pad=False)
    assert np.array_equal(parts[1], again)
    other_epoch = rank_indices(10, 1, 3, epoch=3, seed=5, shuffle=True, pad=False)
    assert not np.array_equal(parts[1], other_epoch)
    padded = [rank_indices(10, rank, 3, epoch=2, seed=5, shuffle=True, pad=True) for rank in range(3)]
    assert {len(p) for p in padded} == {4}
