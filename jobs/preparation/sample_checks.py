"""Loading one sample for a shard: the loader's arrays, checked against the classes of the dataset."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from workers.exceptions import DataError
from jobs.preparation.shard_layout import ShardLayout
from jobs.preparation.sources.base import Sample, SampleConverted, SampleLoader


@dataclass(frozen=True)
class LoadedSample:
    image: np.ndarray
    mask: np.ndarray | None
    changes: list[str]  # what the loader converted on the way (recorded in the manifest)


def load_sample(sample: Sample, loader: SampleLoader, layout: ShardLayout, labeled: bool) -> LoadedSample:
    """The sample, checked; a bad one raises DataError naming its file and how to fix it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SampleConverted)
        image, mask = loader(sample.ref, layout.height, layout.width)
    changes = [str(w.message) for w in caught if issubclass(w.category, SampleConverted)]
    for other in (w for w in caught if not issubclass(w.category, SampleConverted)):
        warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    if labeled:
        if mask is None:
            raise DataError(f"{sample.label_file or sample.key}: no mask for a labeled split")
        check_labels(mask, layout.num_classes, layout.ignore_index, sample.label_file or sample.key)
    return LoadedSample(image, mask, changes)


def check_labels(mask: np.ndarray, num_classes: int, ignore_index: int, key: str) -> None:
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != ignore_index)]
    if bad.size:
        raise DataError(
            f"{key}: mask value {int(bad[0])} is outside the {num_classes} classes and is not the "
            f"ignore index {ignore_index}; fix the mask or the class list"
        )
