"""`segq data prepare` / `segq data inspect` as a user runs them, against the session's local cluster."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_segq
from tests.test_source_cityscapes import write_cityscapes
from tests.test_source_folder import write_folder

pytestmark = pytest.mark.ray

TREE = {"train": {"aachen": 4, "bochum": 3}, "val": {"frankfurt": 2}, "test": {"berlin": 1}}


def spoil_truncated(root):
    path = root / "leftImg8bit" / "train" / "bochum" / "bochum_000001_000020_leftImg8bit.png"
    path.write_bytes(path.read_bytes()[:300])
    return path


def spoil_mask_size(root):
    path = root / "gtFine" / "val" / "frankfurt" / "frankfurt_000001_000020_gtFine_labelIds.png"
    Image.fromarray(np.zeros((60, 128), np.uint8)).save(path)
    return path


def assert_nothing_written(out):
    assert not (out / "manifest.json").exists()
    assert not list(out.glob("*.arrow")) and not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("spoil, problem", [
    (spoil_truncated, "cannot decode the image (image file is truncated)"),
    (spoil_mask_size, "mask is 60x128 but its image frankfurt_000001_000020_leftImg8bit.png is 64x128"),
])
def test_bad_file_inside_a_ray_task_fails_with_one_line(segq_env, tmp_path, spoil, problem):
    root, out = tmp_path / "cityscapes", tmp_path / "out"
    write_cityscapes(root, TREE)
    bad = spoil(root)
    result = run_segq("data", "prepare", "cityscapes", str(root), "--out", str(out), "--size", "32x64",
                      "--shard-size", "2", env=segq_env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: {bad}: {problem}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert_nothing_written(out)


@pytest.fixture(scope="module")
def prepared(segq_env, tmp_path_factory):
    """A folder dataset with one corrupt image, prepared with --skip-bad into several shards."""
    base = tmp_path_factory.mktemp("data-cli")
    root, out = base / "set", base / "out"
    write_folder(root, count=12, height=32, width=48)
    bad = root / "images" / "sample_004.png"
    bad.write_bytes(bad.read_bytes()[:200])
    result = run_segq("data", "prepare", "folder", str(root), "--out", str(out), "--size", "32x48",
                      "--split", "0.5,0.25,0.25", "--shard-size", "2", "--skip-bad", env=segq_env)
    return out, bad, result


def test_multi_shard_prepare_with_skip_bad(prepared):
    out, bad, result = prepared
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and warning[0].startswith("warning: skipped 1 bad sample(s)") and str(bad) in warning[0]
    manifest = json.loads((out / "manifest.json").read_text())
    shards = [shard for info in manifest["splits"].values() for shard in info["shards"]]
    assert len(manifest["splits"]["train"]["shards"]) > 1 and len(shards) >= 5  # one Ray task per shard
    assert sorted(s["file"] for s in shards) == sorted(p.name for p in out.glob("*.arrow"))
    assert sum(info["rows"] for info in manifest["splits"].values()) == 11
    assert manifest["skipped"]["count"] == 1 and manifest["skipped"]["samples"][0]["key"] == "sample_004"


def test_inspect_draws_the_palette_and_verifies(segq_env, prepared, tmp_path):
    out, _, _ = prepared
    result = run_segq("data", "inspect", str(out), "--out", str(tmp_path / "grid.png"), env=segq_env)
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and "background" in result.stdout and "dog" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == f"samples: {tmp_path / 'grid.png'}"
    pixels = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    count_of = {tuple(int(v) for v in colour): int(n) for colour, n in zip(colours, counts)}
    palette = json.loads((out / "manifest.json").read_text())["palette"]
    # far more pixels than a legend swatch: the masks themselves are drawn in the palette
    assert all(count_of.get(tuple(colour), 0) > 2000 for colour in palette), palette


def test_inspect_refuses_a_changed_shard(segq_env, prepared, tmp_path):
    out, _, _ = prepared
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shard = copy / json.loads((copy / "manifest.json").read_text())["splits"]["val"]["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = run_segq("data", "inspect", str(copy), env=segq_env)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: {shard}: sha256 does not match the manifest; the shard changed or "
                                     f"is corrupt")
    assert not (copy / "inspect").exists()
