"""The `cityscapes` source: the official layout, official splits, official label table.

    ROOT/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    ROOT/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

The gtFine color, instanceIds and polygons files are ignored. The test split has no public fine
labels (its gtFine files are placeholders), so its images are prepared without masks: a split with
`has_masks: false` and no mask column, usable for predictions.
"""
from __future__ import annotations

from pathlib import Path

from workers.exceptions import DataError
from jobs.preparation.sources.base import SKIP_HINT, Dataset, Sample, Source, SourceFlag, SourceRequest
from jobs.preparation.sources.images import inside_hint, load_pair, remap_labels, require_folder

SPLITS = ("train", "val", "test")
LABELED_SPLITS = ("train", "val")
IMAGE_SUFFIX = "_leftImg8bit.png"
MASK_SUFFIX = "_gtFine_labelIds.png"
LABEL_MODES = ("train_ids", "label_ids")

# The official table (cityscapesScripts helpers/labels.py): (name, labelId, trainId, color).
# 'license plate' has labelId -1 and never appears in the labelIds images, so it is left out.
LABELS: tuple[tuple[str, int, int, tuple[int, int, int]], ...] = (
    ("unlabeled", 0, 255, (0, 0, 0)),
    ("ego vehicle", 1, 255, (0, 0, 0)),
    ("rectification border", 2, 255, (0, 0, 0)),
    ("out of roi", 3, 255, (0, 0, 0)),
    ("static", 4, 255, (0, 0, 0)),
    ("dynamic", 5, 255, (111, 74, 0)),
    ("ground", 6, 255, (81, 0, 81)),
    ("road", 7, 0, (128, 64, 128)),
    ("sidewalk", 8, 1, (244, 35, 232)),
    ("parking", 9, 255, (250, 170, 160)),
    ("rail track", 10, 255, (230, 150, 140)),
    ("building", 11, 2, (70, 70, 70)),
    ("wall", 12, 3, (102, 102, 156)),
    ("fence", 13, 4, (190, 153, 153)),
    ("guard rail", 14, 255, (180, 165, 180)),
    ("bridge", 15, 255, (150, 100, 100)),
    ("tunnel", 16, 255, (150, 120, 90)),
    ("pole", 17, 5, (153, 153, 153)),
    ("polegroup", 18, 255, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)),
    ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)),
    ("terrain", 22, 9, (152, 251, 152)),
    ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)),
    ("rider", 25, 12, (255, 0, 0)),
    ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)),
    ("bus", 28, 15, (0, 60, 100)),
    ("caravan", 29, 255, (0, 0, 90)),
    ("trailer", 30, 255, (0, 0, 110)),
    ("train", 31, 16, (0, 80, 100)),
    ("motorcycle", 32, 17, (0, 0, 230)),
    ("bicycle", 33, 18, (119, 11, 32)),
)


def train_id_table() -> dict[int, int]:
    return {label_id: train_id for _, label_id, train_id, _ in LABELS}


def class_table(label_mode: str) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Class names and palette, index = class id, for a label mode."""
    if label_mode == "label_ids":
        return [name for name, *_ in LABELS], [color for *_, color in LABELS]
    evaluated = sorted((train_id, name, color) for name, _, train_id, color in LABELS if train_id != 255)
    return [name for _, name, _ in evaluated], [color for _, _, color in evaluated]


def load_cityscapes(ref: tuple[str, str | None, str], height: int, width: int):
    """Sample loader: `ref` is (image path, labelIds path or None, label mode)."""
    image_path, mask_path, label_mode = ref
    image, mask = load_pair(image_path, mask_path, height, width)
    if mask is not None and label_mode == "train_ids":
        mask = remap_labels(mask, train_id_table(), mask_path, "a Cityscapes label id (0..33)")
    return image, mask


def cityscapes_dataset(root: Path, label_mode: str = "train_ids", skip_bad: bool = False) -> Dataset:
    if label_mode not in LABEL_MODES:
        raise DataError(f"--label-mode {label_mode!r}: expected one of {', '.join(LABEL_MODES)}")
    root = Path(root)
    check_layout(root)
    splits, skipped = {}, []
    for split in SPLITS:
        if (root / "leftImg8bit" / split).is_dir():
            splits[split] = list_split(root, split, label_mode, skip_bad, skipped)
    if not splits:
        raise DataError(f"{root / 'leftImg8bit'}: no train, val or test folder; expected "
                        f"leftImg8bit/<split>/<city>/*{IMAGE_SUFFIX}")
    class_names, palette = class_table(label_mode)
    return Dataset(
        source="cityscapes",
        options={"root": str(root.resolve()), "label_mode": label_mode, "skip_bad": skip_bad},
        class_names=class_names,
        palette=palette,
        splits=splits,
        labeled={split: split in LABELED_SPLITS for split in splits},
        # train ids have no background class; among the raw ids, 0 is 'unlabeled'
        background_classes=[0] if label_mode == "label_ids" else [],
        label_mode=label_mode,
        skipped=skipped,
    )


def check_layout(root: Path) -> None:
    expected = "the Cityscapes root that holds leftImg8bit/ and gtFine/"
    require_folder(root, expected)
    if not (root / "leftImg8bit").is_dir():
        raise DataError(f"{root}: no leftImg8bit/ folder; expected {expected}"
                        f"{inside_hint(root, ('leftImg8bit',))}")
    if not (root / "gtFine").is_dir() and any((root / "leftImg8bit" / s).is_dir() for s in LABELED_SPLITS):
        raise DataError(f"{root}: has leftImg8bit/ but no gtFine/; unpack gtFine_trainvaltest.zip into {root}")


def list_split(root: Path, split: str, label_mode: str, skip_bad: bool, skipped: list[dict]) -> list[Sample]:
    folder = root / "leftImg8bit" / split
    images = sorted(folder.glob(f"*/*{IMAGE_SUFFIX}"))
    if not images:
        raise DataError(f"{folder}: no images; expected {folder}/<city>/<city>_<seq>_<frame>{IMAGE_SUFFIX}")
    labeled = split in LABELED_SPLITS
    samples = []
    for image in images:
        city, base = image.parent.name, image.name[:-len(IMAGE_SUFFIX)]
        key = f"{city}/{base}"
        mask = root / "gtFine" / split / city / f"{base}{MASK_SUFFIX}" if labeled else None
        if mask is not None and not mask.is_file():
            problem = f"{mask}: missing mask for {image.name}; restore it from gtFine_trainvaltest.zip"
            if not skip_bad:
                raise DataError(f"{problem}, {SKIP_HINT}")
            skipped.append({"key": key, "problem": problem})
            continue
        ref = (str(image), str(mask) if mask else None, label_mode)
        samples.append(Sample(key, ref, label_file=str(mask) if mask else None))
    return samples


def list_cityscapes(request: SourceRequest) -> Dataset:
    return cityscapes_dataset(request.root, request.options["--label-mode"], request.skip_bad)


LABEL_MODE_FLAG = SourceFlag("--label-mode", "train_ids",
                             "train_ids (19 classes, the rest 255) or label_ids (34)")
SOURCE = Source("cityscapes", list_cityscapes, load_cityscapes, flags=(LABEL_MODE_FLAG,))
