"""Local processes and ports: whether a process lives, free ports on loopback, waiting for a
listener, and stopping a process group with everything it started (cluster.local and
cluster.local_nodes share them)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import tempfile
import time
from pathlib import Path

from jobs.exceptions import ClusterError


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return True


# Held while a `segq up` chooses its ports and starts on them: two clusters started at the same
# moment (two homes on one machine) would otherwise both find the same ports free and both bind them.
START_LOCK = Path(tempfile.gettempdir()) / "segq-up.lock"


@contextlib.contextmanager
def start_lock():
    """This machine's lock for starting local clusters, held until the block ends (waits for it).
    Read-only is enough to lock, so users other than the file's creator can take it too."""
    descriptor = os.open(START_LOCK, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None, taken: set[int] | None = None) -> int:
    taken = taken if taken is not None else set()
    if preferred and preferred not in taken and port_free(preferred):
        taken.add(preferred)
        return preferred
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        # Ray hands worker processes ports 10002-19999: stay out of that range.
        if port not in taken and not 10000 <= port < 20000:
            taken.add(port)
            return port


def wait_for_port(port: int, timeout: float, what: str, pid: int | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if pid is not None and not pid_alive(pid):
            raise ClusterError(f"{what} exited during start-up; see its log")
        time.sleep(0.3)
    raise ClusterError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state) for every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(") ", 1)[-1].split()
        except OSError:
            continue
        table[int(entry)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def session_processes(leader: int) -> set[int]:
    """The leader's process group and every descendant (Ray workers start groups of their own)."""
    table = process_table()
    members = {pid for pid, (_, pgid, _) in table.items() if pgid == leader}
    members.add(leader)
    grew = True
    while grew:
        children = {pid for pid, (ppid, _, _) in table.items() if ppid in members} - members
        members |= children
        grew = bool(children)
    return {pid for pid in members if pid in table and table[pid][2] != "Z"}


def signal_all(pids: set[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def stop_session(leader: int, grace: float) -> None:
    """SIGTERM the recorded leader's processes, SIGKILL whatever is left after `grace` seconds."""
    pids = session_processes(leader)
    signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in pids):
        time.sleep(0.3)
        pids |= session_processes(leader)
    signal_all({pid for pid in pids if pid_alive(pid)}, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in pids):
        time.sleep(0.2)
