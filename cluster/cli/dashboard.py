"""`segq dashboard`: the Ray dashboard's address and how to sign in with token auth on."""
from __future__ import annotations

import typer

from cluster import secrets
from cluster.cli.context import console, settings_of
from cluster.connect import find_dashboard_url
from jobs.exceptions import ClusterError

dashboard_app = typer.Typer()


def sign_in_hint() -> str:
    return (f"sign in: the dashboard asks for the Ray auth token (from {secrets.token_source()}); "
            "`segq dashboard --show-token` prints it")


@dashboard_app.command()
def dashboard(ctx: typer.Context,
              show_token: bool = typer.Option(False, "--show-token", help="also print the Ray auth token")) -> None:
    """Print the Ray dashboard's URL and how to sign in; the token only with --show-token."""
    url = find_dashboard_url(settings_of(ctx))
    if url is None:
        home = settings_of(ctx).resolved_home()
        raise ClusterError(f"no dashboard: the embedded default is not running in {home} and --address / "
                           "SEGQ_RAY_ADDRESS is not set; run `segq up` or pass --address")
    console.print(url, markup=False, highlight=False)
    if not show_token:
        console.print(sign_in_hint(), markup=False, highlight=False)
        return
    token = secrets.ray_token()
    if token is None:
        raise ClusterError(f"no Ray auth token in {secrets.token_source()}; run `segq up` (it makes one) or "
                           "set RAY_AUTH_TOKEN")
    print(token)
