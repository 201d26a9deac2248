"""Worker nodes of the embedded default: `segq up --nodes N` runs the head plus N-1 worker node
processes on this machine (cluster.worker_node: Ray's node processes, all on loopback), each in its
own process group and Ray temp dir, and each carrying a custom resource that names it
(`segq_node_1`, ...; the head has `segq_node_0`).

What was started is recorded under "nodes" in HOME/cluster.json, so `segq down` stops exactly those.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from cluster.processes import free_port, pid_alive, stop_session, wait_for_port
from cluster.ray_env import use_ray_env
from jobs.exceptions import ClusterError

NODE_RESOURCE_PREFIX = "segq_node_"


def node_resource(index: int) -> str:
    """The custom resource (1 unit) that names node `index` (0 is the head)."""
    return f"{NODE_RESOURCE_PREFIX}{index}"


def split_cpus(total: int, nodes: int) -> list[int]:
    """The CPUs of each node, head first: an even share each, the remainder to the head."""
    if nodes < 1:
        raise ClusterError(f"--nodes {nodes}: a cluster needs at least 1 node (the head)")
    share = max(1, total // nodes)
    return [max(1, total - share * (nodes - 1))] + [share] * (nodes - 1)


def node_temp_dir(head_temp_dir: Path, index: int) -> Path:
    return head_temp_dir.with_name(f"{head_temp_dir.name}-n{index}")


def start_worker_node(home: Path, head: dict, index: int, num_cpus: int, temp_dir: Path, taken: set[int],
                      env: dict[str, str]) -> dict:

    ports = {name: free_port(None, taken) for name in (
        "node_manager", "object_manager", "dashboard_agent_listen", "dashboard_agent_grpc", "metrics_export",
        "runtime_env_agent")}
    temp_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "cluster.worker_node", "--address", head["address"], "--num-cpus", str(num_cpus),
               "--resources", json.dumps({node_resource(index): 1}), "--temp-dir", str(temp_dir),
               "--ports", json.dumps(ports)]
    log_path = home / "logs" / f"ray-node-{index}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                   cwd=str(home))
    try:
        wait_for_port(ports["node_manager"], 180, f"Ray worker node {index}", process.pid)
    except ClusterError:
        stop_session(process.pid, grace=5)
        raise ClusterError(f"Ray worker node {index} did not join {head['address']}; see {log_path}") from None
    return {"index": index, "pid": process.pid, "resource": node_resource(index), "num_cpus": num_cpus,
            "temp_dir": str(temp_dir), "ports": ports}


def start_with_retry(home: Path, head: dict, index: int, num_cpus: int, temp_dir: Path, taken: set[int],
                     env: dict[str, str]) -> dict:
    """A second try on fresh ports: a port found free may be taken before the raylet binds it."""
    try:
        return start_worker_node(home, head, index, num_cpus, temp_dir, taken, env)
    except ClusterError:
        return start_worker_node(home, head, index, num_cpus, temp_dir, taken, env)


def ensure_worker_nodes(home: Path, state: dict, cpus: list[int], head_temp_dir: Path, taken: set[int],
                        env: dict[str, str]) -> bool:
    """Start the worker nodes 1..len(cpus)-1 that are not running; True if any was started."""

    recorded = {node["index"]: node for node in state.get("nodes", [])}
    nodes = state["nodes"] = []  # each node recorded as soon as it runs (a failed `up` stops it)
    started = False
    for index in range(1, len(cpus)):
        node = recorded.get(index)
        if node is None or not pid_alive(node["pid"]):
            node = start_with_retry(home, state["ray"], index, cpus[index], node_temp_dir(head_temp_dir, index),
                                    taken, env)
            started = True
        nodes.append(node)
    nodes += [node for index, node in sorted(recorded.items()) if index >= len(cpus) and pid_alive(node["pid"])]
    return started


def wait_for_nodes(dashboard_url: str, count: int, timeout: float = 90) -> None:
    """Until Ray reports `count` alive nodes (a worker node registers a moment after it listens)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(alive_nodes(dashboard_url)) >= count:
                return
        except Exception:  # the state API may not answer yet; try again
            pass
        time.sleep(1.0)
    raise ClusterError(f"the Ray cluster at {dashboard_url} did not report {count} alive nodes within "
                       f"{timeout:.0f}s; see HOME/logs/ray-node-*.log")


def alive_nodes(dashboard_url: str) -> list[dict]:
    """The cluster's alive nodes as Ray's state API reports them: name (the segq node resource, or
    the node id), node id, whether it is the head, and its total resources."""
    use_ray_env(loopback=True)
    from ray.util.state import list_nodes

    nodes = []
    for node in list_nodes(address=dashboard_url, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False):
        resources = dict(node.resources_total or {})
        named = sorted(name for name in resources if name.startswith(NODE_RESOURCE_PREFIX))
        nodes.append({"name": named[0] if named else node.node_id[:12], "node_id": node.node_id,
                      "head": bool(node.is_head_node), "resources": resources})
    return sorted(nodes, key=lambda node: (not node["head"], node["name"]))
