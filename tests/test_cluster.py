"""`segq up / status / down` on embedded clusters beside the session's one: the preferred ports are
taken, so free ones are found; two `up` at the same moment both come up; a failed `up` leaves
nothing running. (That every port it opens is on loopback: tests/test_multinode.py.)"""
import json
import os
import subprocess
from pathlib import Path

import pytest

from cluster.local import pid_alive, ray_temp_dir, session_processes
from tests.conftest import SEGQ, run_segq
from tests.failure_checks import write_spec

pytestmark = pytest.mark.ray


def home_processes(home: Path) -> list[int]:
    """Processes whose command line names HOME (redis-server's --dir, Ray's temp dir and logs)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(home).encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


def test_a_failed_up_stops_what_it_started(segq_env, tmp_path):
    """Ray's head cannot start (a file stands where its temp dir goes), after Redis did: `segq up`
    exits 1 with one line and leaves nothing of its own running, nor a state file."""
    home = tmp_path / "home"
    env = {**segq_env, "SEGQ_HOME": str(home)}
    blocker = ray_temp_dir(home)
    blocker.write_text("not a directory")
    try:
        result = run_segq("up", "--num-cpus", "1", env=env, timeout=120)
    finally:
        blocker.unlink()
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and str(blocker) in result.stderr, result.stderr
    assert (home / "redis").is_dir()  # Redis had started
    assert not home_processes(home) and not (home / "cluster.json").exists()
    assert run_segq("status", env=env).returncode == 1


def test_two_ups_at_the_same_moment_both_come_up(segq_env, tiny_dataset, tmp_path):
    """Two homes, `segq up` in both at once, beside the session's cluster (which holds the preferred
    ports): both come up on ports of their own, `up` again is a no-op, each runs a one-epoch job,
    and `segq down` in one stops exactly its own processes and leaves the other running.
    SEGQ_UP_ROUNDS times (make test: 1; make soak: 5)."""
    session = json.loads((Path(segq_env["SEGQ_HOME"]) / "cluster.json").read_text())
    spec = write_spec(tmp_path / "one-epoch.yaml", tiny_dataset, 1, [1e-3])
    for round_ in range(int(os.environ.get("SEGQ_UP_ROUNDS", "1"))):
        envs = [{**segq_env, "SEGQ_HOME": str(tmp_path / f"round{round_}-{side}")} for side in "ab"]
        ups = [subprocess.Popen([SEGQ, "up", "--num-cpus", "1"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for env in envs]
        try:
            outputs = [up.communicate(timeout=300) for up in ups]
            assert [up.returncode for up in ups] == [0, 0], outputs
            assert all("started" in out and "dashboard  http://127.0.0.1:" in out for out, _ in outputs), outputs
            states = [json.loads((Path(env["SEGQ_HOME"]) / "cluster.json").read_text()) for env in envs]
            ports = [{state["redis"]["port"], *state["ray"]["ports"].values()} for state in [*states, session]]
            assert not ports[0] & ports[1] and not (ports[0] | ports[1]) & ports[2], ports
            assert all((Path(env["SEGQ_HOME"]) / "redis" / "appendonlydir").exists() for env in envs)  # AOF on
            again = run_segq("up", env=envs[0], check=True)
            assert "already running" in again.stdout and str(states[0]["ray"]["pid"]) in again.stdout

            jobs = [subprocess.Popen([SEGQ, "submit", "sweep", str(spec), "--wait"], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True) for env in envs]
            outputs = [job.communicate(timeout=300) for job in jobs]
            assert [job.returncode for job in jobs] == [0, 0], outputs

            first = session_processes(states[0]["ray"]["pid"]) | session_processes(states[0]["redis"]["pid"])
            assert len(first) > 3
            assert "stopped" in run_segq("down", env=envs[0], check=True, timeout=120).stdout
            assert not [pid for pid in first if pid_alive(pid)]
            assert run_segq("status", env=envs[0]).returncode == 1
            for state in (states[1], session):  # not ours to stop
                assert pid_alive(state["ray"]["pid"]) and pid_alive(state["redis"]["pid"])
            assert "jobs" in run_segq("status", env=envs[1], check=True).stdout
        finally:
            for env in envs:
                run_segq("down", env=env, timeout=120)
