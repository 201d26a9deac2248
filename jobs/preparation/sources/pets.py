"""The `pets` source: Oxford-IIIT Pet with its trimaps and its official split.

    ROOT/images/<name>.jpg
    ROOT/annotations/trimaps/<name>.png          1 pet, 2 background, 3 border
    ROOT/annotations/trainval.txt, test.txt      lines like `Abyssinian_100 1 1 1` (name first)

Samples are listed from the two split files, so the other files of the archives (`._*.png`, `.mat`,
`xmls/`) are never read. val is carved out of trainval by a seeded shuffle.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from workers.exceptions import DataError
from jobs.preparation.sources.base import SKIP_HINT, Dataset, Sample, Source, SourceFlag, SourceRequest
from jobs.preparation.sources.images import inside_hint, load_pair, remap_labels, require_folder

BORDER_MODES = ("class", "ignore")
PALETTE = ((0, 0, 0), (230, 25, 75), (255, 225, 25))
TRIMAP_MEANING = "a trimap value (1 pet, 2 background, 3 border)"


def trimap_table(border: str) -> dict[int, int]:
    return {1: 1, 2: 0, 3: 2 if border == "class" else 255}


def load_pets(ref: tuple[str, str, str], height: int, width: int):
    """Sample loader: `ref` is (image path, trimap path, border mode)."""
    image_path, trimap_path, border = ref
    image, trimap = load_pair(image_path, trimap_path, height, width)
    return image, remap_labels(trimap, trimap_table(border), trimap_path, TRIMAP_MEANING)


def pets_dataset(root: Path, val_fraction: float = 0.1, seed: int = 0, border: str = "class",
                 skip_bad: bool = False) -> Dataset:
    if border not in BORDER_MODES:
        raise DataError(f"--border {border!r}: expected one of {', '.join(BORDER_MODES)}")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-fraction {val_fraction}: expected a fraction in [0, 1)")
    root = Path(root)
    check_layout(root)
    train, val = carve_val(read_split_list(root / "annotations" / "trainval.txt"), val_fraction, seed)
    names = {"train": train, "val": val, "test": read_split_list(root / "annotations" / "test.txt")}
    skipped: list[dict] = []
    splits = {split: list_samples(root, split_names, border, skip_bad, skipped) for split, split_names in names.items()}
    class_names = ["background", "pet", "border"] if border == "class" else ["background", "pet"]
    return Dataset(
        source="pets",
        options={"root": str(root.resolve()), "val_fraction": val_fraction, "seed": seed, "border": border,
                 "skip_bad": skip_bad},
        class_names=class_names,
        palette=list(PALETTE[:len(class_names)]),
        splits={split: samples for split, samples in splits.items() if samples},
        labeled={split: True for split in splits},
        label_mode=f"trimap, border {border}",
        skipped=skipped,
    )


def check_layout(root: Path) -> None:
    expected = "the Oxford-IIIT Pet root that holds images/ and annotations/"
    require_folder(root, expected)
    missing = [name for name in ("images", "annotations") if not (root / name).is_dir()]
    if missing:
        hint = inside_hint(root, ("images", "annotations")) or "; unpack images.tar.gz and annotations.tar.gz there"
        raise DataError(f"{root}: no {' and no '.join(m + '/' for m in missing)} folder; expected {expected}{hint}")
    require_folder(root / "annotations" / "trimaps", "annotations/trimaps/ from annotations.tar.gz")


def carve_val(names: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, val): a seeded `fraction` of the names goes to val; both keep the file's order."""
    order = np.random.default_rng(seed).permutation(len(names))
    chosen = set(order[:int(round(fraction * len(names)))].tolist())
    return ([name for i, name in enumerate(names) if i not in chosen],
            [name for i, name in enumerate(names) if i in chosen])


def read_split_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: missing; it holds the official split: restore it from annotations.tar.gz")
    names = [line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not names:
        raise DataError(f"{path}: lists no images; expected lines like `Abyssinian_100 1 1 1`")
    return names


def list_samples(root: Path, names: list[str], border: str, skip_bad: bool, skipped: list[dict]) -> list[Sample]:
    samples = []
    for name in names:
        image = root / "images" / f"{name}.jpg"
        trimap = root / "annotations" / "trimaps" / f"{name}.png"
        missing = next((path for path in (image, trimap) if not path.is_file()), None)
        if missing is not None:
            what = "image" if missing == image else "mask (trimap)"
            problem = f"{missing}: missing {what} of {name}; restore it from the Oxford-IIIT Pet archives"
            if not skip_bad:
                raise DataError(f"{problem}, {SKIP_HINT}")
            skipped.append({"key": name, "problem": problem})
            continue
        samples.append(Sample(name, (str(image), str(trimap), border), label_file=str(trimap)))
    return samples


def list_pets(request: SourceRequest) -> Dataset:
    return pets_dataset(request.root, request.options["--val-fraction"], request.seed, request.options["--border"],
                        request.skip_bad)


VAL_FRACTION_FLAG = SourceFlag("--val-fraction", 0.1, "share of trainval held out as val")
BORDER_FLAG = SourceFlag("--border", "class", "the trimap border as a 'class' or 'ignore' (255)")
SOURCE = Source("pets", list_pets, load_pets, flags=(VAL_FRACTION_FLAG, BORDER_FLAG))
