"""The segq command line: one Typer app per noun, joined here."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from cluster.cli.aggregator import aggregator_app
from cluster.cli.cluster import cluster_app
from cluster.cli.context import say
from cluster.cli.dashboard import dashboard_app
from cluster.cli.data import data_app
from cluster.cli.eval import eval_app
from cluster.cli.jobs import jobs_app
from cluster.cli.models import models_app
from cluster.cli.submit import submit_app
from cluster.cli.summary import summary_app
from cluster.cli.tensorboard import tensorboard_app
from cluster.cli.watch import watch_app
from cluster.settings import Settings
from seg_models.exceptions import SegqError


class SegqGroup(TyperGroup):
    """The root command: every SegqError of any subcommand becomes one line and exit 1 here, so
    the installed `segq` and `typer.testing.CliRunner` behave alike."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SegqError as error:
            say(f"error: {error}")
            raise typer.Exit(1) from None


app = typer.Typer(cls=SegqGroup, help="segq: distributed training jobs for semantic segmentation on Ray.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(data_app, name="data")
app.add_typer(submit_app, name="submit")
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app)
app.add_typer(summary_app)
app.add_typer(aggregator_app)
app.add_typer(watch_app)
app.add_typer(eval_app)
app.add_typer(dashboard_app)
app.add_typer(tensorboard_app)
app.add_typer(cluster_app)


@app.callback()
def configure(
    ctx: typer.Context,
    home: Optional[Path] = typer.Option(None, "--home", help="local state folder (env SEGQ_HOME; default ./.segq)"),
    redis_url: Optional[str] = typer.Option(None, "--redis-url", help="Redis URL (env SEGQ_REDIS_URL)"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray dashboard / Jobs API URL (env SEGQ_RAY_ADDRESS)"),
    storage: Optional[str] = typer.Option(None, "--storage", help="checkpoint and Ray storage: a shared path, "
                                                                  "or an s3:// or gs:// URI (env SEGQ_STORAGE)"),
) -> None:
    overrides = {"home": home, "redis_url": redis_url, "ray_address": address, "storage": storage}
    ctx.obj = Settings(**{name: value for name, value in overrides.items() if value is not None})


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
