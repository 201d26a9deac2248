"""`segq data inspect`: verify a prepared dataset, tabulate its classes, draw a grid of samples."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from workers.palette import IGNORE_COLOUR, colour_classes
from workers.shards import ShardedSplit, read_manifest

NO_MASK_COLOR = (96, 96, 96)
MIN_PANEL_HEIGHT = 128  # tiny datasets (32x32) are scaled up so the grid stays readable
HEADER = 16
GAP = 4
LEGEND_ENTRY = (170, 16)


def open_verified(root: Path) -> tuple[dict, dict[str, ShardedSplit]]:
    """The manifest and every split, each shard checked against its sha256 (DataError if not)."""
    manifest = read_manifest(root)
    splits = {name: ShardedSplit(root, name, verify=True, manifest=manifest) for name in manifest["splits"]}
    for split in splits.values():
        for start in split.offsets[:-1]:
            split.row(int(start))  # opening a shard verifies it
    return manifest, splits


def class_histogram(manifest: dict) -> list[tuple[str, str, dict[str, int]]]:
    """(id, name, pixels per labeled split) per class, then the ignore index's row."""
    height, width = manifest["image_size"]
    labeled = {name: info for name, info in manifest["splits"].items() if info["has_masks"]}
    rows = [(str(index), name, {split: info["class_pixels"][index] for split, info in labeled.items()})
            for index, name in enumerate(manifest["class_names"])]
    ignored = {split: info["rows"] * height * width - sum(info["class_pixels"]) for split, info in labeled.items()}
    rows.append((str(manifest["ignore_index"]), "(ignore)", ignored))
    return rows


def pick_rows(splits: dict[str, ShardedSplit], count: int) -> list[tuple[str, int]]:
    """`count` (split, row) pairs spread evenly over the first labeled split (train if it has masks)."""
    candidates = [name for name, split in splits.items() if len(split)]
    if not candidates:
        return []
    labeled = [name for name in candidates if splits[name].has_masks]
    name = "train" if "train" in labeled else (labeled or candidates)[0]
    total = len(splits[name])
    return [(name, int(row)) for row in np.unique(np.linspace(0, total - 1, min(count, total)).round())]


def render_grid(manifest: dict, splits: dict[str, ShardedSplit], path: Path, count: int = 8) -> Path:
    """A PNG with one row per sample: image | mask in the manifest's palette (ignore in white)."""
    height, width = manifest["image_size"]
    scale = max(1, -(-MIN_PANEL_HEIGHT // height))
    panel_h, panel_w = height * scale, width * scale
    picks = pick_rows(splits, count)
    canvas_w = max(2 * panel_w + 3 * GAP, 2 * LEGEND_ENTRY[0])
    legend = legend_entries(manifest)
    per_line = max(1, canvas_w // LEGEND_ENTRY[0])
    legend_h = -(-len(legend) // per_line) * LEGEND_ENTRY[1] + GAP
    canvas = Image.new("RGB", (canvas_w, len(picks) * (panel_h + HEADER + GAP) + legend_h + GAP), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for position, (split, row) in enumerate(picks):
        key, image, mask = splits[split].row(row)
        top = position * (panel_h + HEADER + GAP) + GAP
        draw.text((GAP, top), f"{split}: {key}", fill=(0, 0, 0), font=font)
        coloured = colour_classes(mask, manifest["palette"], manifest["ignore_index"]) if mask is not None else \
            np.full((height, width, 3), NO_MASK_COLOR, np.uint8)
        for column, panel in enumerate((np.asarray(image), coloured)):
            tile = Image.fromarray(np.ascontiguousarray(panel)).resize((panel_w, panel_h), Image.Resampling.NEAREST)
            canvas.paste(tile, (GAP + column * (panel_w + GAP), top + HEADER))
    draw_legend(draw, legend, per_line, canvas.height - legend_h, font)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def legend_entries(manifest: dict) -> list[tuple[str, tuple[int, int, int]]]:
    entries = [(f"{index} {name}", tuple(color)) for index, (name, color) in
               enumerate(zip(manifest["class_names"], manifest["palette"]))]
    return entries + [(f"{manifest['ignore_index']} ignore", IGNORE_COLOUR)]


def draw_legend(draw: ImageDraw.ImageDraw, entries, per_line: int, top: int, font) -> None:
    entry_w, entry_h = LEGEND_ENTRY
    for index, (label, color) in enumerate(entries):
        left = GAP + (index % per_line) * entry_w
        y = top + (index // per_line) * entry_h
        draw.rectangle((left, y + 2, left + entry_h - 4, y + entry_h - 2), fill=color, outline=(0, 0, 0))
        draw.text((left + entry_h, y + 2), label, fill=(0, 0, 0), font=font)
