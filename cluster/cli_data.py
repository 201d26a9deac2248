"""`segq data`: prepare and inspect datasets."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cluster.cli_context import console, endpoints_of, err
from cluster.exceptions import SpecError

data_app = typer.Typer(help="Prepare and inspect datasets (Arrow shards).", no_args_is_help=True)

SOURCES = ("synthetic", "cityscapes", "pets", "folder")
DEFAULT_SPLIT = "0.7,0.15,0.15"
# Which sources each source-specific flag applies to: a flag given to another source is refused.
SOURCE_FLAGS = {
    "--count": ("synthetic",),
    "--split": ("synthetic", "folder"),
    "--label-mode": ("cityscapes",),
    "--val-fraction": ("pets",),
    "--border": ("pets",),
    "--classes": ("folder",),
}


@data_app.command("prepare")
def data_prepare(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="synthetic, cityscapes, pets or folder"),
    root: Optional[Path] = typer.Argument(None, help="the dataset's root folder (not used by synthetic)"),
    out: Path = typer.Option(..., "--out", help="output folder for shards and manifest.json"),
    size: str = typer.Option("64x64", "--size", help="HxW of the prepared images"),
    seed: int = typer.Option(0, "--seed", help="seed of the synthetic scenes and of seeded splits"),
    shard_size: int = typer.Option(512, "--shard-size", help="rows per shard (one Ray task each)"),
    compression: str = typer.Option("none", "--compression", help="none, lz4 or zstd"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing dataset in OUT"),
    skip_bad: bool = typer.Option(False, "--skip-bad",
                                  help="leave out bad samples (listed in the manifest) instead of failing"),
    count: Optional[int] = typer.Option(None, "--count", help="synthetic: number of scenes (default 200)"),
    split: Optional[str] = typer.Option(
        None, "--split", help=f"synthetic, folder: train,val,test fractions (default {DEFAULT_SPLIT})"),
    label_mode: Optional[str] = typer.Option(
        None, "--label-mode", help="cityscapes: train_ids (19 classes, the rest 255) or label_ids (34) (default train_ids)"),
    val_fraction: Optional[float] = typer.Option(
        None, "--val-fraction", help="pets: share of trainval held out as val (default 0.1)"),
    border: Optional[str] = typer.Option(
        None, "--border", help="pets: the trimap border as a 'class' or 'ignore' (255) (default class)"),
    classes: Optional[str] = typer.Option(
        None, "--classes", help="folder: class names a,b,c, id 0 first (instead of ROOT/classes.txt)"),
) -> None:
    """Prepare a dataset as Arrow shards, one Ray task per shard."""
    from rich.progress import Progress

    from cluster.connect import init_ray
    from jobs.prepare import parse_size, prepare, run_ray_tasks

    given = {"--count": count, "--split": split, "--label-mode": label_mode, "--val-fraction": val_fraction,
             "--border": border, "--classes": classes}
    check_source_flags(source, root, given)
    dataset, loader = open_source(source, root, seed, skip_bad, given)
    endpoints = endpoints_of(ctx, start_if_missing=True)
    init_ray(endpoints.gcs_address)
    # Piped stderr gets no bar: it would leave a blank line before a one-line error.
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        bar = progress.add_task("writing shards", total=None)

        def run_tasks(tasks):
            return run_ray_tasks(tasks, lambda done, total: progress.update(bar, completed=done, total=total))

        manifest = prepare(dataset, loader, out.resolve(), parse_size(size), shard_size, compression,
                           overwrite, run_tasks, skip_bad=skip_bad)
    report_prepared(manifest, out.resolve())


def check_source_flags(source: str, root: Optional[Path], given: dict) -> None:
    if source not in SOURCES:
        raise SpecError(f"source {source!r}: unknown; available: {', '.join(SOURCES)}")
    if source != "synthetic" and root is None:
        raise SpecError(f"{source}: give the dataset's root folder: segq data prepare {source} ROOT --out DIR")
    for flag, value in given.items():
        if value is not None and source not in SOURCE_FLAGS[flag]:
            raise SpecError(f"{flag} applies to {', '.join(SOURCE_FLAGS[flag])} only, not {source}; drop it")


def open_source(source: str, root: Optional[Path], seed: int, skip_bad: bool, given: dict):
    """The source's Dataset (its samples listed and the layout checked) and its loader."""
    if source == "cityscapes":
        from jobs.sources.cityscapes import cityscapes_dataset, load_cityscapes

        return cityscapes_dataset(root, given["--label-mode"] or "train_ids", skip_bad), load_cityscapes
    if source == "pets":
        from jobs.sources.pets import load_pets, pets_dataset

        fraction = 0.1 if given["--val-fraction"] is None else given["--val-fraction"]
        return pets_dataset(root, fraction, seed, given["--border"] or "class", skip_bad), load_pets
    fractions = parse_fractions(given["--split"] or DEFAULT_SPLIT)
    if source == "folder":
        from jobs.sources.folder import folder_dataset, load_folder

        names = parse_classes(given["--classes"]) if given["--classes"] is not None else None
        return folder_dataset(root, names, fractions, seed, skip_bad), load_folder
    from jobs.sources.synthetic import load_synthetic, synthetic_dataset

    count = 200 if given["--count"] is None else given["--count"]
    return synthetic_dataset(count, seed, fractions), load_synthetic


def report_prepared(manifest: dict, out: Path) -> None:
    for name, info in manifest["splits"].items():
        masks = "" if info["has_masks"] else " (images only, no masks)"
        console.print(f"{name:<6} {info['rows']:>6} rows in {len(info['shards'])} shard(s){masks}")
    converted = manifest.get("converted", {"count": 0})
    if converted["count"]:
        first = converted["samples"][0]
        console.print(f"note: {converted['count']} image(s) converted to RGB (manifest 'converted'), "
                      f"e.g. {first['key']}: {first['change']}", markup=False, soft_wrap=True)
    skipped = manifest.get("skipped", {"count": 0})
    if skipped["count"]:
        err.print(f"warning: skipped {skipped['count']} bad sample(s), listed in {out / 'manifest.json'} "
                  f"under 'skipped'; first: {skipped['samples'][0]['problem']}", markup=False, highlight=False,
                  soft_wrap=True)
    console.print(f"wrote {out}", markup=False, highlight=False, soft_wrap=True)


def parse_fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise SpecError(f"--split {text!r}: expected three fractions, e.g. 0.7,0.15,0.15") from None
    if len(parts) != 3:
        raise SpecError(f"--split {text!r}: expected three fractions, e.g. 0.7,0.15,0.15")
    return parts  # type: ignore[return-value]


def parse_classes(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


@data_app.command("inspect")
def data_inspect(
    directory: Path = typer.Argument(..., help="a prepared dataset (the folder with manifest.json)"),
    out: Optional[Path] = typer.Option(None, "--out", help="where to write the sample grid (default DIR/inspect/samples.png)"),
    samples: int = typer.Option(8, "--samples", help="rows of the sample grid"),
) -> None:
    """Verify every shard (sha256), show splits and the class pixel histogram, draw a sample grid."""
    from jobs.inspect import open_verified, render_grid

    if samples < 1:
        raise SpecError(f"--samples {samples}: must be at least 1")
    manifest, splits = open_verified(directory)
    console.print(f"{manifest['source']}: {manifest['image_size'][0]}x{manifest['image_size'][1]} images, "
                  f"{manifest['num_classes']} classes, label mode {manifest.get('label_mode') or '-'}, "
                  f"compression {manifest['compression']}; every shard matches its sha256", markup=False)
    console.print(splits_table(manifest))
    if any(info["has_masks"] for info in manifest["splits"].values()):
        console.print(histogram_table(manifest))
    for field in ("skipped", "converted"):
        if manifest.get(field, {}).get("count"):
            console.print(f"{field}: {manifest[field]['count']} sample(s) (see manifest.json '{field}')")
    path = render_grid(manifest, splits, out or directory / "inspect" / "samples.png", samples)
    console.print(f"samples: {path}", markup=False, highlight=False, soft_wrap=True)


def splits_table(manifest: dict):
    from rich.table import Table

    table = Table(title="splits")
    for column in ("split", "rows", "shards", "masks"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for name, info in manifest["splits"].items():
        table.add_row(name, str(info["rows"]), str(len(info["shards"])), "yes" if info["has_masks"] else "no")
    return table


def histogram_table(manifest: dict):
    from rich.table import Table

    from jobs.inspect import class_histogram

    rows = class_histogram(manifest)
    splits = list(rows[0][2])
    totals = {split: max(1, sum(row[2][split] for row in rows)) for split in splits}
    table = Table(title="class pixels (% of the split's pixels)")
    table.add_column("id", justify="right")
    table.add_column("class")
    for split in splits:
        table.add_column(split, justify="right")
    for class_id, name, pixels in rows:
        table.add_row(class_id, name, *(f"{100 * pixels[s] / totals[s]:.2f}" for s in splits))
    return table
