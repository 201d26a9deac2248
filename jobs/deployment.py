"""Where a job runs: the settings the control plane hands to the job's driver on the cluster.

The CLI builds a `Deployment` from its settings; the submission puts it into the Ray job's
environment (`to_env`), and the driver reads it back there (`from_env`). Nothing else carries
these settings.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jobs.exceptions import ClusterError

REDIS_URL = "SEGQ_REDIS_URL"
STORAGE = "SEGQ_STORAGE"
EMBEDDED = "SEGQ_EMBEDDED"
# Every Ray client the driver starts authenticates with the cluster token; logs are not held back.
DRIVER_ENV = {"RAY_AUTH_MODE": "token", "PYTHONUNBUFFERED": "1"}


@dataclass(frozen=True)
class Deployment:
    redis_url: str  # Redis as the cluster's nodes reach it
    storage: str | None  # checkpoint and Tune storage; None: the cluster's own SEGQ_STORAGE
    embedded: bool  # the embedded default: the head runs on this machine, with this interpreter

    def to_env(self) -> dict[str, str]:
        """The Ray job's env_vars; without a storage the nodes' own SEGQ_STORAGE stays in force."""
        env = {REDIS_URL: self.redis_url, EMBEDDED: "1" if self.embedded else "0", **DRIVER_ENV}
        if self.storage:
            env[STORAGE] = self.storage
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Deployment":
        """The deployment as the driver sees it on the cluster: Redis and storage must both be set."""
        for name in (REDIS_URL, STORAGE):
            if not environ.get(name):
                raise ClusterError(f"{name} is not set in the job's environment (set it on the cluster's nodes)")
        return cls(redis_url=environ[REDIS_URL], storage=absolute(environ[STORAGE]),
                   embedded=environ.get(EMBEDDED) == "1")


def absolute(storage: str) -> str:
    """A local storage path made absolute (the trials run in other working directories)."""
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())
