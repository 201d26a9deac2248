"""The environment of the Ray processes segq starts and of the Ray clients in its own processes.

Token authentication stays on everywhere: the dashboard, the Jobs API and the GCS ask for the token
in ~/.ray/auth_token. The embedded default keeps every Ray address on loopback: Ray replaces a
127.0.0.1 node address with the machine's network address (and its servers then listen on every
interface) unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER is off, the setting Ray uses for one-machine
clusters. Ray reads both settings once, when it is imported, so they are set before that.
"""
from __future__ import annotations

import os

from jobs.deployment import RAY_TOKEN_AUTH as TOKEN_AUTH

LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def ray_env() -> dict[str, str]:
    """The environment for a Ray process of the embedded default (its head, a worker node)."""
    return {"RAY_USAGE_STATS_ENABLED": "0", **os.environ, **TOKEN_AUTH, **LOOPBACK}


def use_ray_env(loopback: bool) -> None:
    """Set this process's environment for its Ray clients. `loopback`: the cluster is the embedded
    default (a client of a real cluster's node must keep Ray's own choice of address)."""
    os.environ.update({**TOKEN_AUTH, **(LOOPBACK if loopback else {})})
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
