"""The segq command line: one Typer app per noun, joined here."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from cluster import local
from cluster.cli_context import console, endpoints_of, say, settings_of
from cluster.cli_aggregator import aggregator_app
from cluster.cli_dashboard import dashboard_app, sign_in_hint
from cluster.cli_data import data_app
from cluster.cli_eval import eval_app
from cluster.cli_jobs import jobs_app, print_jobs
from cluster.cli_models import models_app
from cluster.cli_submit import submit_app
from cluster.cli_summary import summary_app
from cluster.cli_watch import watch_app
from cluster.connect import connect_redis, redact
from seg_models.exceptions import SegqError
from cluster.settings import Settings


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


# --- the embedded default -------------------------------------------------------------------

@app.command()
def up(ctx: typer.Context, num_cpus: Optional[int] = typer.Option(None, help="CPUs Ray may schedule (all nodes)"),
       nodes: Optional[int] = typer.Option(None, "--nodes", min=1,
                                           help="Ray nodes on this machine: the head + N-1 worker nodes")) -> None:
    """Start the embedded default: a local Redis (AOF on) and a local Ray head with dashboard."""
    home = settings_of(ctx).resolved_home()
    state, started = local.up(home, num_cpus, nodes)
    console.print(("started" if started else "already running") + f" in {home}")
    print_cluster(state)


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop what `segq up` started (by recorded pid), nothing else."""
    home = settings_of(ctx).resolved_home()
    stopped = local.down(home)
    console.print("stopped: " + ", ".join(stopped) if stopped else f"nothing running from {home}")


def print_cluster(state: dict) -> None:
    console.print(f"redis      {state['redis']['url']}  (pid {state['redis']['pid']})")
    console.print(f"ray        {state['ray']['address']}  (pid {state['ray']['pid']})")
    console.print(f"dashboard  {state['ray']['dashboard_url']}")
    console.print(sign_in_hint(), markup=False, highlight=False)
    for node in state.get("nodes", []):
        console.print(f"node {node['index']}     {node['resource']}  {node['num_cpus']} CPU  (pid {node['pid']})")


def print_nodes(dashboard_url: str) -> None:
    """The cluster's alive nodes with their resources, as Ray reports them."""
    from cluster.local_nodes import alive_nodes

    try:
        nodes = alive_nodes(dashboard_url)
    except Exception as error:  # the state API is down or refuses: the rest of the status still helps
        say(f"nodes: Ray at {dashboard_url} did not list its nodes ({str(error).splitlines()[0]})")
        return
    console.print(f"{len(nodes)} node(s)")
    for node in nodes:
        resources = " ".join(f"{name}={value:g}" for name, value in sorted(node["resources"].items())
                             if not name.startswith("node:") and "memory" not in name)
        console.print(f"  {node['name']:<14} {'head' if node['head'] else 'worker':<6} {resources}")


@app.command()
def status(ctx: typer.Context) -> None:
    """Show the cluster and the latest jobs."""
    settings = settings_of(ctx)
    state = local.running_state(settings.resolved_home())
    if state:
        print_cluster(state)
    elif not (settings.redis_url and settings.ray_address):
        console.print(f"embedded default: not running in {settings.resolved_home()} (start it with `segq up`)")
        raise typer.Exit(1)
    endpoints = endpoints_of(ctx)
    if not state:
        console.print(f"redis      {redact(endpoints.redis_url)}\ndashboard  {endpoints.dashboard_url}")
        console.print(sign_in_hint(), markup=False, highlight=False)
    print_nodes(endpoints.dashboard_url)
    print_jobs(connect_redis(endpoints.redis_url), limit=10)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
