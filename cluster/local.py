"""The embedded default cluster: a local redis-server and a local Ray head, started in the background.

What `up` started is recorded in HOME/cluster.json (pids, ports, URLs) so that `down` stops exactly
that and nothing else. Ray's GCS would take 6379, Redis's own default, so both get free ports.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from cluster import secrets
from cluster import local_nodes
# session_processes is also read from here by the tests' process checks
from cluster.processes import (free_port, pid_alive, session_processes, start_lock, stop_session,  # noqa: F401
                               wait_for_port)
from cluster.ray_env import ray_env
from jobs.exceptions import ClusterError
from workers.files import write_atomically

STATE_FILE = "cluster.json"
PREFERRED_REDIS_PORT = 6380
PREFERRED_GCS_PORT = 6381
PREFERRED_DASHBOARD_PORT = 8265


def state_path(home: Path) -> Path:
    return home / STATE_FILE


def read_state(home: Path) -> dict | None:
    path = state_path(home)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def write_state(home: Path, state: dict) -> None:
    write_atomically(state_path(home), json.dumps(state, indent=2))


def ensure_auth_token() -> None:
    """`ray start --head` with token auth needs ~/.ray/auth_token; create it once if missing."""
    token = Path.home() / ".ray" / "auth_token"
    if token.exists() or os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    ray_cli = Path(sys.executable).with_name("ray")
    subprocess.run([str(ray_cli), "get-auth-token", "--generate"], env=ray_env(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_redis(home: Path, taken: set[int]) -> dict:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ClusterError("redis-server is not installed; run `make setup` or `apt-get install redis-server`")
    data_dir = home / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port(PREFERRED_REDIS_PORT, taken)
    password_file = secrets.redis_password_file(home)
    with open(home / "logs" / "redis.log", "ab") as log:  # the server keeps its own copy of the descriptor
        process = subprocess.Popen(
            [binary, str(secrets.redis_secret_config(home, password_file)), "--port", str(port),
             "--bind", "127.0.0.1", "--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", "everysec",
             "--save", "", "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_for_port(port, 20, "redis-server", process.pid)
    except ClusterError:
        stop_session(process.pid, grace=5)
        raise ClusterError(f"redis-server did not start; see {home / 'logs' / 'redis.log'}") from None
    # The URL names the password's file, not the password: it may travel and be printed.
    url = f"redis://127.0.0.1:{port}/0?password_file={quote(str(password_file), safe='/')}"
    return {"pid": process.pid, "port": port, "url": url}


def ray_temp_dir(home: Path) -> Path:
    """Ray puts unix sockets under its temp dir and their paths must stay under 108 bytes,
    so the session lives in a short /tmp path derived from HOME rather than inside it."""
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"segq-ray-{digest}"


def prometheus_config(home: Path) -> Path:
    """The Prometheus configuration Ray writes for the embedded default's session: it discovers
    every node's metrics endpoint."""
    return ray_temp_dir(home) / "session_latest" / "metrics" / "prometheus" / "prometheus.yml"


def head_ports(taken: set[int]) -> dict[str, int]:
    """Free ports for every server of the Ray head (the preferred ones when they are free)."""
    return {
        "gcs": free_port(PREFERRED_GCS_PORT, taken),
        "dashboard": free_port(PREFERRED_DASHBOARD_PORT, taken),
        "client_server": free_port(None, taken),
        "dashboard_agent_listen": free_port(None, taken),
        "dashboard_agent_grpc": free_port(None, taken),
        "metrics_export": free_port(None, taken),
        "runtime_env_agent": free_port(None, taken),
        # Ray's own Prometheus endpoints for the dashboard and the autoscaler: fixed ports (44227,
        # 44217) unless set, which a second cluster on the machine could not bind.
        "dashboard_metrics": free_port(None, taken),
        "autoscaler_metrics": free_port(None, taken),
    }


def head_command(ports: dict[str, int], temp_dir: Path, num_cpus: int | None, resources: dict | None) -> list[str]:
    return [
        str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--disable-usage-stats",
        "--node-ip-address", "127.0.0.1",
        "--port", str(ports["gcs"]),
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(ports["dashboard"]),
        "--ray-client-server-port", str(ports["client_server"]),
        "--dashboard-agent-listen-port", str(ports["dashboard_agent_listen"]),
        "--dashboard-agent-grpc-port", str(ports["dashboard_agent_grpc"]),
        "--metrics-export-port", str(ports["metrics_export"]),
        "--runtime-env-agent-port", str(ports["runtime_env_agent"]),
        "--temp-dir", str(temp_dir),
        "--num-cpus", str(num_cpus or os.cpu_count() or 1),
        *(["--resources", json.dumps(resources)] if resources else []),
    ]


def start_ray(home: Path, taken: set[int], num_cpus: int | None, resources: dict | None = None) -> dict:
    ensure_auth_token()
    ports = head_ports(taken)
    temp_dir = ray_temp_dir(home)
    try:
        temp_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ClusterError(f"cannot create Ray's temp dir {temp_dir}: {error.strerror or error}") from None
    env = {**ray_env(), "DASHBOARD_METRIC_PORT": str(ports["dashboard_metrics"]),
           "AUTOSCALER_METRIC_PORT": str(ports["autoscaler_metrics"])}
    # One new session: every Ray process of this head shares the process group we record.
    with open(home / "logs" / "ray.log", "ab") as log:
        process = subprocess.Popen(head_command(ports, temp_dir, num_cpus, resources), stdout=log,
                                   stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=str(home))
    try:
        wait_for_port(ports["dashboard"], 120, "the Ray head (dashboard)", process.pid)
        wait_for_jobs_api(f"http://127.0.0.1:{ports['dashboard']}", 120, process.pid)
    except ClusterError:
        stop_session(process.pid, grace=5)
        raise ClusterError(f"the Ray head did not start; see {home / 'logs' / 'ray.log'} "
                           f"and the session logs in {temp_dir}") from None
    return {"pid": process.pid, "ports": ports, "address": f"127.0.0.1:{ports['gcs']}",
            "dashboard_url": f"http://127.0.0.1:{ports['dashboard']}"}


def wait_for_jobs_api(url: str, timeout: float, pid: int) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=2)
            return
        except urllib.error.HTTPError:
            return  # the server answers (auth may refuse): it is up
        except (urllib.error.URLError, OSError):
            if not pid_alive(pid):
                raise ClusterError("the Ray head exited during start-up; see HOME/logs/ray.log")
            time.sleep(0.5)
    raise ClusterError(f"the Ray Jobs API at {url} did not answer within {timeout:.0f}s")


def running_state(home: Path) -> dict | None:
    """The recorded state if both recorded processes are still alive."""
    state = read_state(home)
    if state and pid_alive(state["redis"]["pid"]) and pid_alive(state["ray"]["pid"]):
        return state
    return None


def up(home: Path, num_cpus: int | None = None, nodes: int | None = None) -> tuple[dict, bool]:
    """Start what is not running; return (state, started_anything). `nodes` (default: as recorded,
    else 1) is the head plus nodes-1 worker nodes on this machine, sharing `num_cpus` between them.

    Ports are chosen and bound under the machine's start lock: one `up` at a time starts processes,
    so two clusters started at the same moment get different ports. An `up` that fails stops what it
    had started before the error reaches the caller, and the state file records only what runs."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(exist_ok=True)
    before = read_state(home) or {}
    state = dict(before)
    nodes = nodes or state.get("node_count") or 1
    cpus = local_nodes.split_cpus(num_cpus or state.get("num_cpus") or os.cpu_count() or 1, nodes)
    try:
        with start_lock():
            started = start_missing(home, state, cpus)
        if nodes > 1:
            local_nodes.wait_for_nodes(state["ray"]["dashboard_url"], nodes)
    except BaseException:
        stop_new(home, state, before)
        raise
    return state, started


def start_missing(home: Path, state: dict, cpus: list[int]) -> bool:
    """Start the processes of the cluster that do not run, each recorded in `state` as it starts;
    True if any was started."""
    started = False
    taken: set[int] = set()
    if not (state.get("redis") and pid_alive(state["redis"]["pid"])):
        state["redis"] = start_redis(home, taken)
        started = True
    else:
        taken.add(state["redis"]["port"])
    if not (state.get("ray") and pid_alive(state["ray"]["pid"])):
        stop_worker_nodes(state)  # nodes of an earlier head cannot join this one
        state.pop("ray", None)
        state["ray"] = start_ray(home, taken, cpus[0], {local_nodes.node_resource(0): 1})
        started = True
    state.update(home=str(home), node_count=len(cpus), num_cpus=sum(cpus))
    started |= local_nodes.ensure_worker_nodes(home, state, cpus, ray_temp_dir(home), taken, ray_env())
    write_state(home, state)
    return started


def stop_new(home: Path, state: dict, before: dict) -> None:
    """After a failed `up`: stop every process it started (any not in the state it found), then
    record what still runs, or remove the state file if nothing does."""
    earlier_nodes = {node["pid"] for node in before.get("nodes", [])}
    for node in state.get("nodes", []):
        if node["pid"] not in earlier_nodes:
            stop_session(node["pid"], grace=8)
    for name in ("ray", "redis"):
        if state.get(name) and state[name] != before.get(name):
            stop_session(state[name]["pid"], grace=8)
    remaining = {name: before[name] for name in ("redis", "ray") if before.get(name) and pid_alive(before[name]["pid"])}
    remaining_nodes = [node for node in before.get("nodes", []) if pid_alive(node["pid"])]
    if not remaining and not remaining_nodes:
        state_path(home).unlink(missing_ok=True)
        return
    write_state(home, {**before, **remaining, "nodes": remaining_nodes})


def stop_worker_nodes(state: dict) -> list[str]:
    stopped = []
    for node in state.pop("nodes", []):
        stop_session(node["pid"], grace=8)
        stopped.append(f"ray node {node['index']} (pid {node['pid']})")
    return stopped


def down(home: Path) -> list[str]:
    """Stop what `up` recorded; return what was stopped."""
    state = read_state(home)
    if not state:
        return []
    stopped = stop_worker_nodes(state)
    if state.get("ray"):
        # Ray state is rebuilt at the next `up`; Redis holds what must survive, so it gets time to sync.
        stop_session(state["ray"]["pid"], grace=8)
        stopped.append(f"ray head (pid {state['ray']['pid']})")
    if state.get("redis"):
        stop_session(state["redis"]["pid"], grace=20)
        stopped.append(f"redis-server (pid {state['redis']['pid']})")
    state_path(home).unlink(missing_ok=True)
    return stopped
