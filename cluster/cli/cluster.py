"""`segq up / down / status`: the embedded default on this machine, and what any cluster runs."""
from __future__ import annotations

from typing import Optional

import typer

from cluster import local
from cluster.cli.context import console, endpoints_of, say, settings_of
from cluster.cli.dashboard import sign_in_hint
from cluster.cli.jobs import print_jobs
from cluster.connect import connect_redis, redact

cluster_app = typer.Typer()


@cluster_app.command()
def up(ctx: typer.Context, num_cpus: Optional[int] = typer.Option(None, help="CPUs Ray may schedule (all nodes)"),
       nodes: Optional[int] = typer.Option(None, "--nodes", min=1,
                                           help="Ray nodes on this machine: the head + N-1 worker nodes")) -> None:
    """Start the embedded default: a local Redis (AOF on) and a local Ray head with dashboard."""
    home = settings_of(ctx).resolved_home()
    state, started = local.up(home, num_cpus, nodes)
    console.print(("started" if started else "already running") + f" in {home}")
    print_cluster(state, home)


@cluster_app.command()
def down(ctx: typer.Context) -> None:
    """Stop what `segq up` started (by recorded pid), nothing else."""
    home = settings_of(ctx).resolved_home()
    stopped = local.down(home)
    console.print("stopped: " + ", ".join(stopped) if stopped else f"nothing running from {home}")


def print_cluster(state: dict, home) -> None:
    console.print(f"redis      {state['redis']['url']}  (pid {state['redis']['pid']})")
    console.print(f"ray        {state['ray']['address']}  (pid {state['ray']['pid']})")
    console.print(f"dashboard  {state['ray']['dashboard_url']}")
    console.print(f"metrics    {local.prometheus_config(home)}  (Ray's Prometheus configuration: every node's "
                  "metrics endpoint)", markup=False, highlight=False, soft_wrap=True)
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


@cluster_app.command()
def status(ctx: typer.Context) -> None:
    """Show the cluster and the latest jobs."""
    settings = settings_of(ctx)
    state = local.running_state(settings.resolved_home())
    if state:
        print_cluster(state, settings.resolved_home())
    elif not (settings.redis_url and settings.ray_address):
        console.print(f"embedded default: not running in {settings.resolved_home()} (start it with `segq up`)")
        raise typer.Exit(1)
    endpoints = endpoints_of(ctx)
    if not state:
        console.print(f"redis      {redact(endpoints.redis_url)}\ndashboard  {endpoints.dashboard_url}")
        console.print(sign_in_hint(), markup=False, highlight=False)
    print_nodes(endpoints.dashboard_url)
    print_jobs(connect_redis(endpoints.redis_url), limit=10)
