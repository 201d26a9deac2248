"""What every CLI module shares: the consoles and the settings/endpoints of the invocation."""
from __future__ import annotations

import sys

import typer
from rich.console import Console

from cluster import local
from cluster.connect import Endpoints, find_dashboard_url, jobs_client, resolve
from jobs.exceptions import ClusterError
from cluster.settings import Settings

# Piped output is not cut to 80 columns: job ids and trial names must survive `| grep`.
PIPE_WIDTH = 240
console = Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
err = Console(stderr=True, width=None if sys.stderr.isatty() else PIPE_WIDTH)


def settings_of(ctx: typer.Context) -> Settings:
    return ctx.find_root().obj


def endpoints_of(ctx: typer.Context, start_if_missing: bool = False) -> Endpoints:
    return resolve(settings_of(ctx), start_if_missing=start_if_missing, announce=lambda m: err.print(m))


def redis_url_of(ctx: typer.Context) -> str:
    """Redis alone, for commands that never talk to Ray (watch, summary, the aggregator)."""
    settings = settings_of(ctx)
    if settings.redis_url:
        return settings.redis_url
    state = local.running_state(settings.resolved_home())
    if state is None:
        raise ClusterError(f"no Redis: SEGQ_REDIS_URL is not set and the embedded default is not running in "
                           f"{settings.resolved_home()}; pass --redis-url or run `segq up`")
    return state["redis"]["url"]


def following_jobs_client(ctx: typer.Context):
    """The Ray Jobs client a follower asks about the driver, or None (said once) when Ray is not
    known or cannot be reached: the job is then followed from Redis alone."""
    url = find_dashboard_url(settings_of(ctx))
    if url is None:
        say("no Ray address (--address or SEGQ_RAY_ADDRESS) and no embedded default running: "
            "following the job from Redis only")
        return None
    try:
        return jobs_client(url)
    except ClusterError as error:
        say(f"{str(error).splitlines()[0]}; following the job from Redis only")
        return None


def exit_unless_finished(record) -> None:
    """A job that did not finish: one line on stderr, exit 1."""
    from jobs.lifecycle.follow import outcome

    message = outcome(record)
    if message:
        say(message)
        raise typer.Exit(1)


def say(message: str) -> None:
    err.print(message, markup=False, highlight=False, soft_wrap=True)
