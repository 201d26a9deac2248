"""The `folder` source: any dataset laid out as images and masks with matching names.

    ROOT/images/<name>.{png,jpg,jpeg,bmp,tif,tiff,webp}     (subfolders allowed)
    ROOT/masks/<name>.{png,bmp,tif,tiff}                    8-bit class ids, 255 = ignore
    ROOT/classes.txt                                        one class name per line (or --classes)

A sample's key is its path under images/ without the extension. There is no official split: the
samples are split train/val/test by a seeded shuffle.
"""
from __future__ import annotations

from pathlib import Path

from workers.exceptions import DataError
from jobs.preparation.sources.base import IGNORE_INDEX, SKIP_HINT, Dataset, Sample, Source, SourceFlag, SourceRequest
from jobs.preparation.sources.splits import SPLIT_FLAG, seeded_split
from jobs.preparation.sources.images import inside_hint, load_pair, require_folder

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")  # lossless only: JPEG would blur the class ids
LAYOUT = "ROOT/images/ and ROOT/masks/ with matching file names, and ROOT/classes.txt"


def load_folder(ref: tuple[str, str], height: int, width: int):
    """Sample loader: `ref` is (image path, mask path)."""
    image_path, mask_path = ref
    return load_pair(image_path, mask_path, height, width)


def folder_dataset(root: Path, classes: list[str] | None = None, split: tuple[float, float, float] = (0.7, 0.15, 0.15),
                   seed: int = 0, skip_bad: bool = False) -> Dataset:
    root = Path(root)
    check_layout(root)
    class_names = classes if classes is not None else read_classes(root / "classes.txt")
    check_classes(class_names, "--classes" if classes is not None else str(root / "classes.txt"))
    images = index_by_stem(root / "images", IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{root / 'images'}: no images ({', '.join(IMAGE_SUFFIXES)}); expected {LAYOUT}")
    masks = index_by_stem(root / "masks", MASK_SUFFIXES)
    pairs, skipped = match_masks(root, images, masks, skip_bad)
    keys = sorted(pairs)
    parts = seeded_split(len(keys), split, seed)
    return Dataset(
        source="folder",
        options={"root": str(root.resolve()), "classes": class_names, "split": list(split), "seed": seed,
                 "skip_bad": skip_bad},
        class_names=class_names,
        palette=voc_palette(len(class_names)),
        splits={name: [sample_of(keys[i], pairs[keys[i]]) for i in rows] for name, rows in parts.items() if len(rows)},
        labeled={name: True for name in parts},
        skipped=skipped,
    )


def sample_of(key: str, pair: tuple[Path, Path]) -> Sample:
    image, mask = pair
    return Sample(key, (str(image), str(mask)), label_file=str(mask))


def check_layout(root: Path) -> None:
    require_folder(root, LAYOUT)
    missing = [name for name in ("images", "masks") if not (root / name).is_dir()]
    if missing:
        raise DataError(f"{root}: no {' and no '.join(m + '/' for m in missing)} folder; expected {LAYOUT}"
                        f"{inside_hint(root, ('images', 'masks'))}")


def read_classes(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: missing; write one class name per line (class id = line number from 0) "
                        f"or pass --classes background,cat,dog")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def check_classes(names: list[str], source: str) -> None:
    if not names:
        raise DataError(f"{source}: no class names; give one name per class, id 0 first")
    if len(names) > IGNORE_INDEX:
        raise DataError(f"{source}: {len(names)} classes; at most {IGNORE_INDEX} fit ids 0..{IGNORE_INDEX - 1} "
                        f"({IGNORE_INDEX} is the ignore index)")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DataError(f"{source}: class name {duplicates[0]!r} appears twice; class names must be unique")


def index_by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Files under `folder` by their relative path without extension; hidden files are ignored."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or path.suffix.lower() not in suffixes or any(p.startswith(".") for p in relative.parts):
            continue
        key = relative.with_suffix("").as_posix()
        if key in found:
            raise DataError(f"{path}: same name as {found[key].name} beside it; keep one file per name")
        found[key] = path
    return found


def match_masks(root: Path, images: dict[str, Path], masks: dict[str, Path],
                skip_bad: bool) -> tuple[dict[str, tuple[Path, Path]], list[dict]]:
    pairs, skipped = {}, []
    for key, image in images.items():
        if key in masks:
            pairs[key] = (image, masks[key])
            continue
        problem = (f"{image}: missing mask; expected {root / 'masks' / key}.png (or .bmp/.tif/.tiff: masks "
                   f"must be lossless), add it")
        if not skip_bad:
            raise DataError(f"{problem}, {SKIP_HINT}")
        skipped.append({"key": key, "problem": problem})
    if not pairs:
        raise DataError(f"{root / 'masks'}: no mask matches any image; expected {LAYOUT}")
    return pairs, skipped


def voc_palette(count: int) -> list[tuple[int, int, int]]:
    """The PASCAL VOC colour map: distinct colours from the bits of the class id, 0 = black."""
    palette = []
    for index in range(count):
        red = green = blue = 0
        value = index
        for bit in range(7, -1, -1):
            red |= (value & 1) << bit
            green |= ((value >> 1) & 1) << bit
            blue |= ((value >> 2) & 1) << bit
            value >>= 3
        palette.append((red, green, blue))
    return palette


def parse_classes(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def list_folder(request: SourceRequest) -> Dataset:
    return folder_dataset(request.root, request.options["--classes"], request.options["--split"], request.seed,
                          request.skip_bad)


CLASSES_FLAG = SourceFlag("--classes", None, "class names a,b,c, id 0 first (instead of ROOT/classes.txt)",
                          parse_classes)
SOURCE = Source("folder", list_folder, load_folder, flags=(SPLIT_FLAG, CLASSES_FLAG))
