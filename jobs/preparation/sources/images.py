"""Reading, checking and resizing the image and mask files of the file-based sources.

Policy (the same for every source and for `segq predict`, documented in the README):
- images: RGB as is; grayscale, palette, CMYK and YCbCr images are converted to RGB, and the
  conversion is recorded in the manifest (`converted`); an alpha channel that is fully opaque is
  dropped the same way; transparent pixels and 16/32-bit images are refused.
- masks: one 8-bit channel of class ids (PNG modes L, P or 1); 16-bit, RGB and RGBA masks are refused.
- a mask must have the size of its image; images are resized bilinearly, masks with nearest.
Every problem is a DataError that names the file and says how to fix it; the preparation adds
that --skip-bad would leave the sample out.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from workers.exceptions import DataError
from jobs.preparation.sources.base import SampleConverted

CONVERTIBLE_IMAGE_MODES = {"L": "grayscale", "P": "palette", "CMYK": "CMYK", "YCbCr": "YCbCr", "1": "bilevel"}
ALPHA_IMAGE_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
MASK_MODES = ("L", "P", "1")


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode a file, so that a truncated or corrupt one fails here."""
    image = None
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; restore it or list the dataset again") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        if image is not None:
            image.close()
        raise DataError(f"{path}: cannot decode the image ({error}); the file is truncated or corrupt: "
                        f"replace it") from None
    return image


def read_rgb(path: str | Path) -> np.ndarray:
    """The file as an (H, W, 3) uint8 array, read by the policy above."""
    return np.asarray(open_rgb(path)[0])


def open_rgb(path: str | Path) -> tuple[Image.Image, str | None]:
    """The file as an RGB image, and the conversion that took (None for an RGB file)."""
    image = open_image(path)
    if image.mode == "RGB":
        return image, None
    if image.mode in CONVERTIBLE_IMAGE_MODES:
        return image.convert("RGB"), f"{CONVERTIBLE_IMAGE_MODES[image.mode]} ({image.mode}) image converted to RGB"
    if image.mode in ALPHA_IMAGE_MODES:
        return drop_opaque_alpha(image, path), f"opaque alpha channel of the {image.mode} image dropped"
    raise DataError(f"{path}: {image.mode} image (16/32-bit or unusual mode); images must be 8-bit RGB "
                    f"or grayscale: convert it")


def drop_opaque_alpha(image: Image.Image, path: str | Path) -> Image.Image:
    # A fully opaque alpha channel carries nothing; transparent pixels have no defined colour.
    alpha = np.asarray(image.getchannel(image.mode[-1]))
    if alpha.min() < 255:
        raise DataError(f"{path}: {image.mode} image with transparent pixels; flatten it onto a background "
                        f"and save it as RGB")
    return image.convert("RGB")


def read_label(path: str | Path) -> Image.Image:
    mask = open_image(path)
    if mask.mode in MASK_MODES:
        return mask
    if mask.mode.startswith("I") or mask.mode == "F":
        problem = f"16/32-bit mask ({mask.mode})"
    elif "A" in mask.mode:
        problem = f"mask with an alpha channel ({mask.mode})"
    else:
        problem = f"{mask.mode} mask"
    raise DataError(f"{path}: {problem}; masks must hold class ids in one 8-bit channel (8-bit grayscale "
                    f"or palette PNG): convert it")


def check_same_size(image: Image.Image, mask: Image.Image, image_path: str | Path, mask_path: str | Path) -> None:
    if image.size != mask.size:
        raise DataError(
            f"{mask_path}: mask is {mask.height}x{mask.width} but its image {Path(image_path).name} is "
            f"{image.height}x{image.width}; a mask must have the size of its image: fix the pair"
        )


def resize_rgb(image: Image.Image, height: int, width: int) -> np.ndarray:
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def resize_label(mask: Image.Image, height: int, width: int) -> np.ndarray:
    if mask.size != (width, height):
        mask = mask.resize((width, height), Image.Resampling.NEAREST)
    # mode "1" reads as bool; L and P read as their 8-bit values (palette indices for P)
    return np.ascontiguousarray(np.asarray(mask).astype(np.uint8, copy=False))


def load_pair(image_path: str, mask_path: str | None, height: int, width: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The image (H, W, 3) and its mask (H, W) or None, checked and resized to height x width."""
    image, change = open_rgb(image_path)
    if change is not None:
        warnings.warn(SampleConverted(change))
    if mask_path is None:
        return resize_rgb(image, height, width), None
    mask = read_label(mask_path)
    check_same_size(image, mask, image_path, mask_path)
    return resize_rgb(image, height, width), resize_label(mask, height, width)


def remap_labels(mask: np.ndarray, table: dict[int, int], path: str, meaning: str) -> np.ndarray:
    """Apply a source's value -> class table; 255 stays the ignore index; other values are refused."""
    lookup = np.full(256, -1, np.int16)
    lookup[255] = 255
    for value, target in table.items():
        lookup[value] = target
    mapped = lookup[mask]
    if (mapped < 0).any():
        value = int(mask[mapped < 0][0])
        raise DataError(f"{path}: mask value {value} is not {meaning}; fix the mask")
    return mapped.astype(np.uint8)


def require_folder(path: Path, expected: str) -> None:
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise DataError(f"{path}: {what}; expected {expected}")


def inside_hint(path: Path, markers: tuple[str, ...]) -> str:
    """When PATH lies inside a dataset root (an ancestor holding all `markers`), say to point there."""
    for parent in list(path.resolve().parents)[:3]:
        if all((parent / marker).is_dir() for marker in markers):
            return f"; {path} is a folder inside the dataset: point at {parent}"
    return ""
