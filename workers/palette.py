"""Class-id maps drawn in a dataset's palette (the manifest's `palette`, one RGB per class)."""
from __future__ import annotations

import numpy as np

IGNORE_COLOUR = (255, 255, 255)


def colour_classes(classes: np.ndarray, palette, ignore_index: int | None = None) -> np.ndarray:
    """uint8 class ids (any shape) -> RGB in `palette`; the ignore index and ids beyond the
    palette draw white. `ignore_index` only matters when it falls inside the palette."""
    lookup = np.full((256, 3), IGNORE_COLOUR, np.uint8)
    lookup[: len(palette)] = np.asarray(palette, np.uint8).reshape(-1, 3)
    if ignore_index is not None:
        lookup[ignore_index] = IGNORE_COLOUR
    return lookup[classes]
