"""Picture grids of training samples as the model sees them (saliency-masked where it applies)."""
from __future__ import annotations

from pathlib import Path

from workers.palette import colour_classes
from workers.saliency import KeepMasks, apply_fill

SAMPLES = 8


def write_sample_grid(dataset, path: Path, keep_masks: KeepMasks | None, title: str, count: int = SAMPLES) -> Path:
    """First `count` training rows: image as trained (removed pixels filled) over its coloured mask."""
    # Imported here: every train worker imports this module, and only saliency iterations draw.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = dataset.split
    count = min(count, len(split))
    figure, axes = plt.subplots(2, count, figsize=(1.6 * count, 3.4), squeeze=False)
    for column in range(count):
        _, image, mask = split.row(column)
        if keep_masks is not None:
            image = apply_fill(image, keep_masks.get(column), dataset.fill, dataset.mean_rgb)
        axes[0][column].imshow(image)
        axes[1][column].imshow(colour_classes(mask, split.manifest["palette"]))
        for row in (0, 1):
            axes[row][column].axis("off")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
