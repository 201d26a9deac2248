"""What a data source gives the preparation: its samples, a loader for them, and its own flags.

A source's lister checks the layout and lists the samples (so layout errors come before any Ray
task) into a `Dataset`; its `SampleLoader` then turns one sample's `ref` into arrays inside a Ray
task. A loader raises DataError naming the file and the fix for a bad sample (the preparation adds
the --skip-bad hint), and reports a conversion the manifest records by warning with
`SampleConverted`. A `Source` bundles lister, loader and flags; jobs/preparation/sources/registry.py holds
the sources by name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

IGNORE_INDEX = 255
# Ends the message of a per-sample problem that stops a preparation; not part of what --skip-bad records.
SKIP_HINT = "or pass --skip-bad to leave the sample out"


@dataclass(frozen=True)
class Sample:
    key: str
    ref: Any  # what the source needs to load it (an index, a pair of paths, ...)
    label_file: str | None = None  # named in label errors instead of the key, when there is a file


class SampleConverted(UserWarning):
    """A loader changed a sample in a way the manifest records (a grayscale image made RGB, ...)."""


@dataclass
class Dataset:
    """What a source offers: class metadata and the samples of each split."""

    source: str
    options: dict
    class_names: list[str]
    palette: list[tuple[int, int, int]]
    splits: dict[str, list[Sample]]
    labeled: dict[str, bool]
    ignore_index: int = IGNORE_INDEX
    background_classes: list[int] = field(default_factory=lambda: [0])
    label_mode: str | None = None
    skipped: list[dict] = field(default_factory=list)  # left out while listing (--skip-bad)


class SampleLoader(Protocol):
    def __call__(self, ref: Any, height: int, width: int) -> tuple[np.ndarray, np.ndarray | None]: ...


def unchanged(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class SourceFlag:
    """A flag of `segq data prepare` that only some sources take. `default` is the value the lister
    gets when the flag is not given; `parse` turns a given value into the lister's. `help` leaves out
    the sources and the default, which the registry adds."""

    name: str
    default: Any
    help: str
    parse: Callable[[Any], Any] = unchanged


@dataclass(frozen=True)
class SourceRequest:
    """What `segq data prepare` asks of a source: every flag the source takes, defaults applied."""

    root: Path | None
    seed: int
    skip_bad: bool
    options: dict[str, Any]  # flag name ("--count") -> parsed value


@dataclass(frozen=True)
class Source:
    name: str
    lister: Callable[[SourceRequest], Dataset]
    loader: SampleLoader
    flags: tuple[SourceFlag, ...] = ()
    needs_root: bool = True
