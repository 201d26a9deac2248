"""The segq shard format and its reader.

A prepared dataset is a folder with `manifest.json` and, per split, Arrow IPC *file* format shards
(`{split}-{index:05d}.arrow`) with the columns

    key    string                              source-relative sample id
    image  fixed_shape_tensor<uint8>[H, W, 3]  RGB
    mask   fixed_shape_tensor<uint8>[H, W]     class ids, 255 = ignore (absent for unlabeled splits)

The manifest is written last and atomically; it lists every shard with its row count and sha256.
Readers memory-map shards, so memory stays flat as the dataset grows, and hand out zero-copy views.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from workers.exceptions import DataError
from workers.files import atomic_path, write_atomically

FORMAT_NAME = "segq-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
COMPRESSIONS = ("none", "lz4", "zstd")
SHARED_FILE_MODE = 0o644


def shard_schema(height: int, width: int, with_mask: bool) -> pa.Schema:
    fields = [
        pa.field("key", pa.string(), nullable=False),
        pa.field("image", pa.fixed_shape_tensor(pa.uint8(), [height, width, 3]), nullable=False),
    ]
    if with_mask:
        fields.append(pa.field("mask", pa.fixed_shape_tensor(pa.uint8(), [height, width]), nullable=False))
    return pa.schema(fields)


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.arrow"


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_shard(path: Path, keys: list[str], images: np.ndarray, masks: np.ndarray | None,
                compression: str = "none") -> dict:
    """Write one shard under a temporary name, then rename it; return its manifest entry."""
    if compression not in COMPRESSIONS:
        raise DataError(f"compression {compression!r} is not one of {', '.join(COMPRESSIONS)}")
    height, width = images.shape[1:3]
    columns = {
        "key": pa.array(keys, pa.string()),
        "image": pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(images)),
    }
    if masks is not None:
        columns["mask"] = pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(masks))
    table = pa.table(columns, schema=shard_schema(height, width, masks is not None))
    options = pa.ipc.IpcWriteOptions(compression=None if compression == "none" else compression)
    with atomic_path(path, SHARED_FILE_MODE) as temporary:  # shards are read by other users' workers
        with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, table.schema, options=options) as writer:
            writer.write_table(table)
        digest = sha256_file(temporary)
    return {"file": path.name, "rows": len(keys), "sha256": digest}


def write_manifest(root: Path, manifest: dict) -> None:
    """Atomically: a reader sees either no manifest or a complete one."""
    write_atomically(root / MANIFEST, json.dumps(manifest, indent=2), SHARED_FILE_MODE)


def read_manifest(root: str | Path) -> dict:
    path = Path(root) / MANIFEST
    if not path.exists():
        raise DataError(f"{path}: no manifest; prepare the dataset first with `segq data prepare`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
    if manifest.get("format") != FORMAT_NAME:
        raise DataError(f"{path}: not a segq manifest (format {manifest.get('format')!r})")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise DataError(
            f"{path}: format version {manifest['format_version']} is newer than this segq "
            f"understands ({FORMAT_VERSION}); upgrade segq"
        )
    return manifest


@dataclass
class _OpenShard:
    images: np.ndarray  # (rows, H, W, 3) zero-copy view of the memory map
    masks: np.ndarray | None
    keys: pa.ChunkedArray


def _column_view(table: pa.Table, name: str) -> np.ndarray:
    chunks = table.column(name).chunks
    if len(chunks) == 1:
        return chunks[0].to_numpy_ndarray()
    return np.concatenate([chunk.to_numpy_ndarray() for chunk in chunks])


class ShardedSplit:
    """One split of a prepared dataset, indexed by row across its shards.

    Shards are opened lazily, verified against the manifest's sha256 the first time this object
    opens them, and memory-mapped: `row(i)` returns read-only views, no copy.
    """

    def __init__(self, root: str | Path, split: str, verify: bool = True, manifest: dict | None = None):
        self.root = Path(root)
        self.manifest = manifest or read_manifest(self.root)
        splits = self.manifest["splits"]
        if split not in splits:
            raise DataError(f"{self.root / MANIFEST}: no split {split!r} (has {', '.join(splits)})")
        self.split = split
        self.entries = splits[split]["shards"]
        self.has_masks = splits[split]["has_masks"]
        self.verify = verify
        self.offsets = np.cumsum([0] + [entry["rows"] for entry in self.entries])
        self._open: dict[int, _OpenShard] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _shard(self, index: int) -> _OpenShard:
        if index not in self._open:
            self._open[index] = self._open_shard(self.entries[index])
        return self._open[index]

    def _open_shard(self, entry: dict) -> _OpenShard:
        path = self.root / entry["file"]
        if not path.exists():
            raise DataError(f"{path}: shard listed in the manifest is missing")
        if self.verify and sha256_file(path) != entry["sha256"]:
            raise DataError(f"{path}: sha256 does not match the manifest; the shard changed or is corrupt")
        try:
            table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
        except pa.ArrowInvalid as error:
            raise DataError(f"{path}: not a readable Arrow IPC file ({error})") from None
        if table.num_rows != entry["rows"]:
            raise DataError(f"{path}: {table.num_rows} rows, the manifest says {entry['rows']}")
        masks = _column_view(table, "mask") if "mask" in table.column_names else None
        return _OpenShard(images=_column_view(table, "image"), masks=masks, keys=table.column("key"))

    def locate(self, row: int) -> tuple[int, int]:
        if not 0 <= row < len(self):
            raise IndexError(f"row {row} outside split {self.split!r} of {len(self)} rows")
        shard = int(np.searchsorted(self.offsets, row, side="right") - 1)
        return shard, row - int(self.offsets[shard])

    def row(self, row: int) -> tuple[str, np.ndarray, np.ndarray | None]:
        shard_index, local = self.locate(row)
        shard = self._shard(shard_index)
        mask = shard.masks[local] if shard.masks is not None else None
        return shard.keys[local].as_py(), shard.images[local], mask


def rank_indices(num_rows: int, rank: int, world_size: int, epoch: int, seed: int,
                 shuffle: bool, pad: bool, iteration: int = 0) -> np.ndarray:
    """Rows of one DDP rank for one epoch (of one saliency iteration): the same on every run with
    the same arguments. Every rank draws the same permutation and takes its own stride of it.

    Training pads (repeats the first rows) so every rank takes the same number of steps;
    evaluation does not pad, so each row is counted exactly once across ranks.
    """
    order = np.arange(num_rows)
    if shuffle:
        order = np.random.default_rng([seed, iteration, epoch]).permutation(num_rows)
    if pad and num_rows % world_size:
        extra = world_size - num_rows % world_size
        order = np.concatenate([order, np.resize(order, extra)])
    return order[rank::world_size]
