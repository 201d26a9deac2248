"""Where a job runs: the settings the control plane hands to the job's driver on the cluster.

The CLI builds a `Deployment` from its settings; the submission puts it into the Ray job's
environment (`to_env`), and the driver reads it back there (`from_env`). Nothing else carries
these settings.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from jobs.exceptions import ClusterError
from workers.redis_client import url_password
from workers.storage import absolute as storage_location

REDIS_URL = "SEGQ_REDIS_URL"
STORAGE = "SEGQ_STORAGE"
EMBEDDED = "SEGQ_EMBEDDED"
# Ray's token authentication, for every Ray process and client segq starts (cluster.ray_env too).
RAY_TOKEN_AUTH = {"RAY_AUTH_MODE": "token"}
# Every Ray client the driver starts authenticates with the cluster token; logs are not held back.
# Ray Train's controller polls a trial's workers (their reports, their end) every 0.25 s, not 2 s, and
# gives a worker group 5 minutes to start (not 1: on a busy node, starting processes queue up; a job's
# resources.start_timeout_s replaces it, jobs.lifecycle.submit.job_env).
DRIVER_ENV = {**RAY_TOKEN_AUTH, "PYTHONUNBUFFERED": "1", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
              "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300"}
# On the embedded default no node is preempted: no preemption watcher actor per trial.
EMBEDDED_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


@dataclass(frozen=True)
class Deployment:
    redis_url: str  # Redis as the cluster's nodes reach it
    storage: str | None  # checkpoint and Tune storage; None: the cluster's own SEGQ_STORAGE
    embedded: bool  # the embedded default: the head runs on this machine, with this interpreter
    # The head's GCS address, for Ray's own clients in the job's processes (Ray Train's placement
    # group cleaner looks the cluster up, and finds several where several run on one machine).
    ray_address: str | None = None

    def to_env(self) -> dict[str, str]:
        """The Ray job's env_vars; without a storage the nodes' own SEGQ_STORAGE stays in force."""
        env = {EMBEDDED: "1" if self.embedded else "0", **DRIVER_ENV, **(EMBEDDED_ENV if self.embedded else {})}
        # The dashboard shows the job's environment: a URL holding a password never goes there,
        # and the nodes' own SEGQ_REDIS_URL applies (a `password_file=` URL names only a path).
        if not url_password(self.redis_url):
            env[REDIS_URL] = self.redis_url
        if self.storage:
            env[STORAGE] = self.storage
        if self.ray_address:
            env["RAY_ADDRESS"] = self.ray_address
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
    """A URI as it is, a local path made absolute (the trials run in other working directories)."""
    return storage_location(storage)
