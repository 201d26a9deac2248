"""The one class-id -> colour lookup (workers.palette), as the report, predict, inspect and the
saliency sample grids draw masks."""
from __future__ import annotations

import numpy as np

from workers.palette import IGNORE_COLOUR, colour_classes

PALETTE = [[0, 0, 0], [200, 10, 10], [10, 200, 10]]


def test_classes_take_their_palette_colour_and_the_rest_draws_white():
    classes = np.array([[0, 1, 2], [255, 7, 1]], np.uint8)
    coloured = colour_classes(classes, PALETTE)
    assert coloured.shape == (2, 3, 3) and coloured.dtype == np.uint8
    assert coloured[0].tolist() == PALETTE
    assert coloured[1].tolist() == [list(IGNORE_COLOUR), list(IGNORE_COLOUR), PALETTE[1]]


def test_an_ignore_index_inside_the_palette_draws_white():
    coloured = colour_classes(np.array([0, 1, 2], np.uint8), np.asarray(PALETTE, np.uint8), ignore_index=1)
    assert coloured.tolist() == [PALETTE[0], list(IGNORE_COLOUR), PALETTE[2]]
