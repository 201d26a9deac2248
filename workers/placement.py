"""Where a trial's ranks run: each rank's node and process, gathered on rank 0 once per worker
group start (one attempt of the trial), so the trial's record names the node of every rank and a
restarted group shows up as a new attempt with new pids."""
from __future__ import annotations

import os
import socket

import torch.distributed as dist

NODE_RESOURCE_PREFIX = "segq_node_"  # the resource that names a node of `segq up --nodes N`


def this_rank(rank: int) -> dict:
    import ray

    return {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
            "host": socket.gethostname()}


def gather_ranks(rank: int, world_size: int) -> list[dict]:
    """Every rank's placement, in rank order (on every rank; all ranks must call it)."""
    mine = this_rank(rank)
    if world_size == 1 or not dist.is_initialized():
        return [mine]
    gathered: list = [None] * world_size
    dist.all_gather_object(gathered, mine)
    return gathered


def name_nodes(ranks: list[dict]) -> list[dict]:
    """The ranks with a `node` name: the node's segq resource when it has one, else its node id."""
    import ray

    names = {}
    for node in ray.nodes():
        named = sorted(name for name in node.get("Resources", {}) if name.startswith(NODE_RESOURCE_PREFIX))
        names[node["NodeID"]] = named[0] if named else node["NodeID"][:12]
    return [{**entry, "node": names.get(entry["node_id"], entry["node_id"][:12])} for entry in ranks]
