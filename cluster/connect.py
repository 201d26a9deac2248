"""Where the cluster is: flags and env first, then the embedded default recorded in HOME."""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import redis

from cluster import local
from cluster.ray_env import use_ray_env
from jobs.exceptions import ClusterError
from cluster.settings import Settings
from workers.redis_client import open_redis, public_url


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Endpoints:
    redis_url: str
    dashboard_url: str  # Ray Jobs API / dashboard
    gcs_address: str | None  # known for the embedded default only


def resolve(settings: Settings, start_if_missing: bool = False, announce=print) -> Endpoints:
    home = settings.resolved_home()
    state = local.running_state(home)
    if state is None and (settings.redis_url is None or settings.ray_address is None):
        if not start_if_missing:
            missing = "SEGQ_REDIS_URL" if settings.redis_url is None else "SEGQ_RAY_ADDRESS"
            raise ClusterError(
                f"no cluster: the embedded default is not running in {home} and {missing} is not set; "
                "run `segq up` or pass --redis-url/--address"
            )
        announce(f"no cluster given and none running: starting the embedded default in {home}")
        state, _ = local.up(home)
    redis_url = settings.redis_url or state["redis"]["url"]
    gcs = state["ray"]["address"] if state and not settings.ray_address else None
    return Endpoints(redis_url=redis_url, dashboard_url=dashboard_url_of(settings, state), gcs_address=gcs)


def dashboard_url_of(settings: Settings, state: dict | None) -> str | None:
    """The Ray Jobs API: --address/SEGQ_RAY_ADDRESS, else the running embedded default's, else None."""
    url = settings.ray_address or (state["ray"]["dashboard_url"] if state else None)
    if url and "://" not in url:
        url = f"http://{url}"
    return url


def find_dashboard_url(settings: Settings) -> str | None:
    """The Ray Jobs API if one is given or running here; never starts anything."""
    return dashboard_url_of(settings, local.running_state(settings.resolved_home()))


def connect_redis(url: str) -> redis.Redis:
    """A checked client: one ping, so an unreachable Redis or a wrong password fails here, in one line."""
    client = open_redis(url, retries=1, decode_responses=True)
    try:
        client.ping()
    except redis.exceptions.AuthenticationError:
        raise ClusterError(f"Redis at {redact(url)} refused the password; fix the password in --redis-url / "
                           "SEGQ_REDIS_URL (or its password_file)") from None
    except redis.exceptions.ResponseError as error:
        if "NOAUTH" not in str(error):
            raise ClusterError(f"Redis at {redact(url)}: {one_line(error)}") from None
        raise ClusterError(f"Redis at {redact(url)} requires a password; put it in --redis-url / SEGQ_REDIS_URL "
                           "(redis://:PASSWORD@host:port/0)") from None
    except TypeError as error:  # redis-py passes unknown URL query items on as arguments
        raise ClusterError(f"Redis URL {redact(url)}: {one_line(error)}; remove that query item") from None
    except (redis.exceptions.RedisError, OSError) as error:
        raise ClusterError(f"cannot reach Redis at {redact(url)}: {one_line(error)}; check the address, or "
                           "start it (`segq up` for the embedded default)") from None
    return client


def redact(url: str) -> str:
    """A Redis URL without its password, for messages."""
    return public_url(url)


def one_line(error: BaseException) -> str:
    """The first line of an error's message (Ray and redis-py add detail below it)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def jobs_client(dashboard_url: str):
    use_ray_env(loopback=urlsplit(dashboard_url).hostname in LOOPBACK_HOSTS)
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(dashboard_url)
    except Exception as error:  # Ray raises ConnectionError/RuntimeError/AuthenticationError here
        raise ClusterError(f"cannot reach the Ray Jobs API at {dashboard_url}: {one_line(error)}; check --address / "
                           "SEGQ_RAY_ADDRESS and the Ray auth token") from None


def try_jobs_client(dashboard_url: str | None):
    """The Ray Jobs client, or None when Ray is unknown or cannot be reached (the caller goes on
    with Redis alone)."""
    if dashboard_url is None:
        return None
    try:
        return jobs_client(dashboard_url)
    except ClusterError:
        return None


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def init_ray(address: str | None) -> None:
    """Join the cluster as a driver (data preparation): the embedded default at `address`, or
    `auto` inside a Ray job."""
    use_ray_env(loopback=address is not None)
    import ray

    if not ray.is_initialized():
        ray.init(address=address or "auto", logging_level="ERROR", log_to_driver=False)
