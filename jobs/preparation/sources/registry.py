"""The data sources of `segq data prepare`, by name, and the flags that only some of them take."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from seg_models.exceptions import SpecError
from jobs.preparation.sources import cityscapes, folder, pets, synthetic
from jobs.preparation.sources.base import Dataset, SampleLoader, Source, SourceFlag, SourceRequest

SOURCES: dict[str, Source] = {source.name: source for source in
                              (synthetic.SOURCE, cityscapes.SOURCE, pets.SOURCE, folder.SOURCE)}


def source_flags() -> dict[str, SourceFlag]:
    """Every source-specific flag by name, in the order the sources list them."""
    flags: dict[str, SourceFlag] = {}
    for source in SOURCES.values():
        for flag in source.flags:
            if flags.setdefault(flag.name, flag) is not flag:
                raise AssertionError(f"{flag.name}: two sources define it; share one SourceFlag")
    return flags


def sources_taking(flag_name: str) -> list[str]:
    return [source.name for source in SOURCES.values() if any(flag.name == flag_name for flag in source.flags)]


def describe_sources() -> str:
    """The source names as a phrase: 'a, b or c'."""
    names = list(SOURCES)
    return f"{', '.join(names[:-1])} or {names[-1]}"


def describe_flag(flag_name: str) -> str:
    """A source flag's help: the sources that take it, what it does, and its default."""
    flag = source_flags()[flag_name]
    default = "" if flag.default is None else f" (default {show_default(flag.default)})"
    return f"{', '.join(sources_taking(flag_name))}: {flag.help}{default}"


def show_default(value: Any) -> str:
    return ",".join(str(part) for part in value) if isinstance(value, tuple) else str(value)


def open_source(name: str, root: Path | None, seed: int, skip_bad: bool,
                given: dict[str, Any]) -> tuple[Dataset, SampleLoader]:
    """The source's Dataset (its samples listed and the layout checked) and its loader. `given` maps
    each source flag's name to its value on the command line, None when it was not given."""
    source = source_named(name)
    if source.needs_root and root is None:
        raise SpecError(f"{name}: give the dataset's root folder: segq data prepare {name} ROOT --out DIR")
    refuse_foreign_flags(source, given)
    options = {flag.name: flag_value(flag, given.get(flag.name)) for flag in source.flags}
    return source.lister(SourceRequest(root=root, seed=seed, skip_bad=skip_bad, options=options)), source.loader


def source_named(name: str) -> Source:
    if name not in SOURCES:
        raise SpecError(f"source {name!r}: unknown; available: {', '.join(SOURCES)}")
    return SOURCES[name]


def refuse_foreign_flags(source: Source, given: dict[str, Any]) -> None:
    taken = {flag.name for flag in source.flags}
    for flag_name, value in given.items():
        if value is not None and flag_name not in taken:
            raise SpecError(f"{flag_name} applies to {', '.join(sources_taking(flag_name))} only, "
                            f"not {source.name}; drop it")


def flag_value(flag: SourceFlag, given: Any) -> Any:
    # An empty text stands for the default where there is one, as it always has (`--split ''`).
    if given is None or (given == "" and flag.default is not None):
        return flag.default
    return flag.parse(given)
