"""`segq data`: prepare and inspect datasets."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cluster.cli.context import console, endpoints_of, err
from jobs.preparation.sources.registry import describe_flag, describe_sources, open_source, source_flags
from seg_models.exceptions import SpecError

data_app = typer.Typer(help="Prepare and inspect datasets (Arrow shards).", no_args_is_help=True)


def source_option(flag_name: str):
    """A flag that only some sources take: not given is None, so a flag given to another source is caught."""
    return typer.Option(None, flag_name, help=describe_flag(flag_name))


@data_app.command("prepare")
def data_prepare(
    ctx: typer.Context,
    source: str = typer.Argument(..., help=describe_sources()),
    root: Optional[Path] = typer.Argument(None, help="the dataset's root folder (not used by synthetic)"),
    out: Path = typer.Option(..., "--out", help="output folder for shards and manifest.json"),
    size: str = typer.Option("64x64", "--size", help="HxW of the prepared images"),
    seed: int = typer.Option(0, "--seed", help="seed of the synthetic scenes and of seeded splits"),
    shard_size: int = typer.Option(512, "--shard-size", help="rows per shard (one Ray task each)"),
    compression: str = typer.Option("none", "--compression", help="none, lz4 or zstd"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing dataset in OUT"),
    skip_bad: bool = typer.Option(False, "--skip-bad",
                                  help="leave out bad samples (listed in the manifest) instead of failing"),
    # The source flags reach open_source through ctx.params, by name: the registry knows which source takes which.
    count: Optional[int] = source_option("--count"),
    difficulty: Optional[str] = source_option("--difficulty"),
    split: Optional[str] = source_option("--split"),
    label_mode: Optional[str] = source_option("--label-mode"),
    val_fraction: Optional[float] = source_option("--val-fraction"),
    border: Optional[str] = source_option("--border"),
    classes: Optional[str] = source_option("--classes"),
) -> None:
    """Prepare a dataset as Arrow shards, one Ray task per shard."""
    from rich.progress import Progress

    from cluster.connect import init_ray, shutdown_ray
    from jobs.preparation.prepare import parse_size, prepare
    from jobs.preparation.task_runner import run_ray_tasks

    height_width = parse_size(size)  # checked before anything starts
    dataset, loader = open_source(source, root, seed, skip_bad, given_source_flags(ctx.params))
    endpoints = endpoints_of(ctx, start_if_missing=True)
    init_ray(endpoints.gcs_address)
    try:
        # Piped stderr gets no bar: it would leave a blank line before a one-line error.
        with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
            bar = progress.add_task("writing shards", total=None)

            def run_tasks(tasks):
                return run_ray_tasks(tasks, lambda done, total: progress.update(bar, completed=done, total=total))

            manifest = prepare(dataset, loader, out.resolve(), height_width, shard_size, compression,
                               overwrite, run_tasks, skip_bad=skip_bad)
    finally:
        # Leave the cluster before the interpreter exits: Ray's core worker may abort (and print a
        # stack) when it is torn down at exit with a failed task's state still around.
        shutdown_ray()
    report_prepared(manifest, out.resolve())


def given_source_flags(params: dict) -> dict:
    """The source flags of the command line by flag name ("--val-fraction"), None where not given."""
    return {name: params[name.removeprefix("--").replace("-", "_")] for name in source_flags()}


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


@data_app.command("inspect")
def data_inspect(
    directory: Path = typer.Argument(..., help="a prepared dataset (the folder with manifest.json)"),
    out: Optional[Path] = typer.Option(None, "--out", help="where to write the sample grid (default DIR/inspect/samples.png)"),
    samples: int = typer.Option(8, "--samples", help="rows of the sample grid"),
) -> None:
    """Verify every shard (sha256), show splits and the class pixel histogram, draw a sample grid."""
    from jobs.preparation.dataset_check import open_verified, render_grid

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

    from jobs.preparation.dataset_check import class_histogram

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
