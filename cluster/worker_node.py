"""One worker node of the embedded default, on loopback: `python -m cluster.worker_node`, run by
`segq up --nodes N` (cluster.local_nodes) in a process group of its own, until it is signalled.

`ray start --address` cannot join a head that listens on 127.0.0.1 only: it rewrites a loopback
address (the head's and its own) to the machine's network address, and refuses to start a worker
node at all when told to keep loopback addresses. This process starts the node's Ray processes the
way `ray start --block` does (ray._private.node.Node, the class Ray's own multi-node test clusters
use), with every address on loopback; on SIGTERM the Node stops the processes it started.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from cluster.ray_env import use_ray_env

GRACEFUL_EXITS = (0, signal.SIGTERM, -signal.SIGTERM, 128 + signal.SIGTERM)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cluster.worker_node", description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="the head's GCS, HOST:PORT")
    parser.add_argument("--num-cpus", type=int, required=True)
    parser.add_argument("--resources", default="{}", help="custom resources, as JSON")
    parser.add_argument("--temp-dir", required=True)
    parser.add_argument("--ports", required=True, help="JSON: node_manager, object_manager, "
                        "dashboard_agent_listen, dashboard_agent_grpc, metrics_export, runtime_env_agent")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    use_ray_env(loopback=True)  # before Ray is imported: it reads the settings once
    from ray._private.node import Node
    from ray._private.parameter import RayParams

    ports = json.loads(args.ports)
    params = RayParams(
        node_ip_address="127.0.0.1", gcs_address=args.address, num_cpus=args.num_cpus,
        resources=json.loads(args.resources), temp_dir=args.temp_dir,
        node_manager_port=ports["node_manager"], object_manager_port=ports["object_manager"],
        dashboard_agent_listen_port=ports["dashboard_agent_listen"], metrics_agent_port=ports["dashboard_agent_grpc"],
        metrics_export_port=ports["metrics_export"], runtime_env_agent_port=ports["runtime_env_agent"],
    )
    node = Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    print(f"Ray worker node {node.node_id} joined {args.address}", flush=True)
    # Until SIGTERM (the Node's handler stops its processes and exits), or until one of its processes
    # dies (a lost raylet): then, as `ray start --block` does, the rest are stopped too.
    while True:
        time.sleep(1)
        dead = [(kind, process.returncode) for kind, process in node.dead_processes()
                if process.returncode not in GRACEFUL_EXITS]
        if dead:
            print(f"Ray processes exited: {dead}; stopping this node", flush=True)
            node.kill_all_processes(check_alive=False, allow_graceful=False)
            os._exit(1)


if __name__ == "__main__":
    main()
