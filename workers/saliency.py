"""The saliency step: relevance of each training pixel, cumulative keep-masks, and their storage.

Keep-masks live next to the shards, never inside them:

    DATA/keep_masks/{job}/{trial}/iteration-{i:02d}/
        checkpoint.pt          iteration i's model at its best epoch (a segq checkpoint: predict/export take it)
        samples.png            training images as iteration i saw them
        keep-rank-{r:03d}.arrow the keep-masks derived from it (row int64, keep = packed bits, H*W)
        meta.json              iteration, kept fractions, the saliency parameters, the trial spec

The masks of iteration i are what iteration i+1 trains on. A mask is cumulative: a pixel removed
once stays removed.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from PIL import Image, ImageFilter

from seg_models.exceptions import SpecError
from workers.files import atomic_path, write_atomically

KEEP_MASK_DIR = "keep_masks"


def resolve_background_classes(given: list[int] | None, manifest: dict, data: str) -> list[int]:
    """The background classes a saliency trial ranks against: the spec's, else the dataset's (its
    manifest's), each one of the dataset's classes; never a silent class 0. The one rule, applied
    at submission (jobs.spec) and again by the trial itself."""
    classes = given
    if classes is None:
        classes = manifest.get("background_classes") or []
        if not classes:
            raise SpecError(f"background_classes: {data} has no background class "
                            f"({manifest.get('source')} {manifest.get('label_mode') or ''}".rstrip()
                            + "); set background_classes in the spec to the class ids that are not "
                              "foreground, e.g. background_classes: [0]")
    outside = [c for c in classes if not 0 <= c < manifest["num_classes"]]
    if outside:
        raise SpecError(f"background_classes: class {outside[0]} is not one of the dataset's "
                        f"{manifest['num_classes']} classes (0..{manifest['num_classes'] - 1})")
    return classes


def foreground_log_odds(logits: torch.Tensor, background_classes: list[int]) -> torch.Tensor:
    """(B, C, H, W) logits -> (B, H, W) float64: log P(foreground) - log P(background), that is
    logsumexp of the foreground logits minus logsumexp of the background ones. It ranks pixels as
    the softmax foreground probability does, without its saturation: a float32 softmax sum is
    exactly 1.0 wherever the background probability is below about 6e-8, which would tie most of
    a confidently predicted object."""
    logits = logits.double()
    background = set(background_classes)
    foreground = [c for c in range(logits.shape[1]) if c not in background]
    return logits[:, foreground].logsumexp(dim=1) - logits[:, sorted(background)].logsumexp(dim=1)


def row_noise(rows: list[int], pixels: int, seed: int, iteration: int, device: torch.device,
              stream: int = 0) -> torch.Tensor:
    """(B, pixels) uniform noise per image, reproducible per (seed, iteration, row, stream) whatever
    the batch or the number of ranks."""
    noise = [torch.rand(pixels, generator=torch.Generator().manual_seed(int(np.random.SeedSequence(
        [seed, iteration, row, stream]).generate_state(1)[0]))) for row in rows]
    return torch.stack(noise).to(device)


def random_relevance(rows: list[int], pixels: int, seed: int, iteration: int, device: torch.device) -> torch.Tensor:
    """The control: uniform noise per image (row_noise's stream 0)."""
    return row_noise(rows, pixels, seed, iteration, device)


def tie_keys(rows: list[int], pixels: int, seed: int, iteration: int, device: torch.device) -> torch.Tensor:
    """A seeded random order of each image's pixels, for ties in relevance (row_noise's stream 1)."""
    return row_noise(rows, pixels, seed, iteration, device, stream=1)


def select_keep(relevance: torch.Tensor, kept: torch.Tensor, keep_percent: float,
                ties: torch.Tensor) -> torch.Tensor:
    """Per image, keep the `keep_percent` most relevant of the pixels still kept.

    relevance: (B, N), kept: (B, N) bool, ties: (B, N), the order among equal relevances (lowest
    first; tie_keys draws a seeded random one, so that exact ties never fall in pixel order, which
    would cut rows off an image). Exactly round(kept_i * p) pixels stay in image i: the pixels are
    ordered by relevance, then by tie key (two stable sorts, on the device), and the first k kept.
    """
    batch, pixels = relevance.shape
    k = torch.round(kept.sum(dim=1).double() * keep_percent / 100.0).long()
    scores = torch.where(kept, relevance.double(), torch.tensor(float("-inf"), dtype=torch.float64,
                                                                device=relevance.device))
    by_tie = ties.argsort(dim=1, stable=True)
    order = by_tie.gather(1, scores.gather(1, by_tie).argsort(dim=1, descending=True, stable=True))
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(pixels, device=order.device).expand(batch, pixels))
    return (rank < k.unsqueeze(1)) & kept


def iteration_dir(data_root: str | Path, job_id: str, trial: str, iteration: int) -> Path:
    return Path(data_root) / KEEP_MASK_DIR / job_id / trial / f"iteration-{iteration:02d}"


def write_rank_masks(directory: Path, rank: int, rows: np.ndarray, keeps: np.ndarray) -> None:
    """keeps: (rows, H, W) bool, written bit-packed under a temporary name, then renamed."""
    directory.mkdir(parents=True, exist_ok=True)
    packed = np.packbits(keeps.reshape(len(keeps), -1), axis=1)
    table = pa.table({
        "row": pa.array(rows.astype(np.int64)),
        "keep": pa.array([bits.tobytes() for bits in packed], pa.binary()),
    })
    target = directory / f"keep-rank-{rank:03d}.arrow"
    with atomic_path(target) as temporary:
        with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)


class KeepMasks:
    """All keep-masks of one iteration, by training row; unpacked on demand."""

    def __init__(self, directory: Path, height: int, width: int):
        self.height, self.width = height, width
        self.packed: dict[int, bytes] = {}
        files = sorted(directory.glob("keep-rank-*.arrow"))
        if not files:
            raise FileNotFoundError(f"{directory}: no keep-masks")
        for file in files:
            table = pa.ipc.open_file(pa.memory_map(str(file))).read_all()
            for row, keep in zip(table.column("row").to_pylist(), table.column("keep").to_pylist()):
                self.packed[row] = keep

    def __len__(self) -> int:
        return len(self.packed)

    def get(self, row: int) -> np.ndarray:
        bits = np.frombuffer(self.packed[row], np.uint8)
        return np.unpackbits(bits, count=self.height * self.width).reshape(self.height, self.width)

    def kept_fraction(self) -> float:
        total = sum(int(np.unpackbits(np.frombuffer(bits, np.uint8), count=self.height * self.width).sum())
                    for bits in self.packed.values())
        return total / (len(self.packed) * self.height * self.width)


def apply_fill(image: np.ndarray, keep: np.ndarray, fill: str, mean_rgb: np.ndarray) -> np.ndarray:
    """What removed pixels become: zero (the notebook's), the dataset mean colour, or a blur of the image."""
    removed = keep == 0
    if not removed.any():
        return image
    out = np.array(image, copy=True)
    if fill == "zero":
        out[removed] = 0
    elif fill == "mean":
        out[removed] = mean_rgb
    elif fill == "blur":
        radius = max(2.0, min(image.shape[:2]) / 16)
        blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))
        out[removed] = blurred[removed]
    else:
        raise ValueError(f"unknown fill {fill!r}; valid: zero, blur, mean")
    return out


def write_meta(directory: Path, meta: dict) -> None:
    write_atomically(directory / "meta.json", json.dumps(meta, indent=2))


def read_meta(directory: Path) -> dict | None:
    path = directory / "meta.json"
    return json.loads(path.read_text()) if path.exists() else None
