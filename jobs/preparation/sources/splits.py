"""The seeded train/val/test split of the sources that come without an official one."""
from __future__ import annotations

import math

import numpy as np

from seg_models.exceptions import SpecError
from workers.exceptions import DataError
from jobs.preparation.sources.base import SourceFlag


def parse_fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise SpecError(f"--split {text!r}: expected three fractions, e.g. 0.7,0.15,0.15") from None
    if len(parts) != 3:
        raise SpecError(f"--split {text!r}: expected three fractions, e.g. 0.7,0.15,0.15")
    return parts  # type: ignore[return-value]


SPLIT_FLAG = SourceFlag("--split", (0.7, 0.15, 0.15), "train,val,test fractions", parse_fractions)


def seeded_split(count: int, fractions: tuple[float, float, float], seed: int) -> dict[str, np.ndarray]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise DataError(f"--split {fractions}: expected three non-negative fractions summing to 1")
    order = np.random.default_rng(seed).permutation(count)
    n_train = int(round(fractions[0] * count))
    n_val = int(round(fractions[1] * count))
    return {
        "train": np.sort(order[:n_train]),
        "val": np.sort(order[n_train:n_train + n_val]),
        "test": np.sort(order[n_train + n_val:]),
    }
