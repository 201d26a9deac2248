"""Shared fixtures: a real redis-server per session (fresh database per test) and a real local
segq cluster (`segq up` in a temporary SEGQ_HOME) for the integration tests."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from cluster.local import ensure_auth_token, free_port, wait_for_port
from cluster.ray_env import use_ray_env

# Ray reads its auth mode and its address rule once per process, and the CLI, run in this process by
# CliRunner, sets both for the embedded default (cluster.ray_env): every Ray client and in-process
# cluster of the test session uses them from the start, so no test sees the other mode.
use_ray_env(loopback=True)
ensure_auth_token()

SEGQ = str(Path(sys.executable).with_name("segq"))
# The shared cluster's nodes hold S3 credentials, as a real cluster's would (tests/test_storage.py
# points its storage at a local S3 server, which takes any key); no instance metadata is asked.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "segq-test", "AWS_SECRET_ACCESS_KEY": "segq-test-secret",
                  "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (make setup installs it)"
    directory = tmp_path_factory.mktemp("redis")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                                "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, 20, "redis-server", process.pid)
    yield f"redis://127.0.0.1:{port}"
    process.terminate()
    process.wait(10)


@pytest.fixture
def redis_url(redis_server, request):
    """A fresh, empty database for each test (databases 1..15 in turn, flushed)."""
    db = 1 + (hash(request.node.nodeid) % 15)
    url = f"{redis_server}/{db}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def run_segq(*args: str, env: dict | None = None, timeout: float = 600, check: bool = False):
    result = subprocess.run([SEGQ, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"segq {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def segq_env(tmp_path_factory):
    """Environment of a running embedded default in a fresh SEGQ_HOME; stopped at the end."""
    home = tmp_path_factory.mktemp("segq-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGQ_")}
    env["SEGQ_HOME"] = str(home)
    env.update(S3_CREDENTIALS)
    # Ray's processes send their metrics to their node's endpoint every 2 s (10 s by default), so
    # a real Prometheus sees a short test job's series while it runs (tests/test_tracking.py).
    env["RAY_metrics_report_interval_ms"] = "2000"
    run_segq("up", env=env, check=True, timeout=300)
    yield env
    run_segq("down", env=env, timeout=120)


@pytest.fixture(scope="session")
def multinode_home(segq_env, tmp_path_factory):
    """A second embedded default, for the tests of nodes: its head has 2 CPUs and starts alone; the
    tests grow it with `segq up --nodes 2 --num-cpus 4` (a worker node of 2 CPUs). Its GCS checks
    each node every second (not 3): a killed node is taken for lost after 5 refused checks."""
    env = {**segq_env, "SEGQ_HOME": str(tmp_path_factory.mktemp("nodes")),
           "RAY_health_check_period_ms": "1000"}
    run_segq("up", "--num-cpus", "2", env=env, check=True, timeout=300)
    yield env
    run_segq("down", env=env, timeout=120)


@pytest.fixture(scope="session")
def tiny_dataset(segq_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "synthetic"
    run_segq("data", "prepare", "synthetic", "--out", str(out), "--size", "32x32", "--count", "48",
             "--seed", "1", "--shard-size", "16", env=segq_env, check=True)
    return out


def wait_until(predicate, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def prepare_synthetic_in_process(out: Path, count: int, split: tuple[float, float, float],
                                 size: tuple[int, int] = (16, 24)) -> Path:
    """A tiny synthetic dataset prepared in this process (no Ray): for unit tests of the workers."""
    from jobs.preparation.prepare import prepare
    from jobs.preparation.sources.synthetic import load_synthetic, synthetic_dataset

    prepare(synthetic_dataset(count, 1, split), load_synthetic, out, size, 8, "none", False,
            lambda tasks: [task() for task in tasks])
    return out
