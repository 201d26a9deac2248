"""The TCP sockets processes listen on, read from /proc (no psutil): which address each one is
bound to, for the check that the embedded default opens nothing beyond loopback."""
from __future__ import annotations

import os
import socket

from cluster.processes import session_processes

LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")  # the last: IPv4 loopback in an IPv6 socket


def socket_owners(pids: set[int]) -> dict[str, int]:
    """socket inode -> pid, for every socket the processes hold open."""
    owners = {}
    for pid in pids:
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{descriptor}")
            except OSError:
                continue
            if target.startswith("socket:["):
                owners[target[len("socket:["):-1]] = pid
    return owners


def address_of(hex_address: str, family: int) -> str:
    """/proc/net/tcp{,6} write addresses as hex words in host (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    return socket.inet_ntop(family, b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))


def listening_sockets(pids: set[int]) -> list[tuple[int, str, str, int]]:
    """(pid, process name, address, port) of every TCP socket the processes listen on."""
    owners = socket_owners(pids)
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        with open(f"/proc/net/{table}") as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state != "0A" or inode not in owners:  # 0A: LISTEN
                    continue
                hex_address, hex_port = local.split(":")
                pid = owners[inode]
                with open(f"/proc/{pid}/comm") as comm:
                    name = comm.read().strip()
                found.append((pid, name, address_of(hex_address, family), int(hex_port, 16)))
    return found


def started_processes(state: dict) -> set[int]:
    """Every process `segq up` started, as its state file records them: Redis, the head and every
    worker node, each with all it started."""
    leaders = [state["redis"]["pid"], state["ray"]["pid"], *(node["pid"] for node in state.get("nodes", []))]
    return set().union(*(session_processes(leader) for leader in leaders))
