"""`segq up / status / down` on a second embedded cluster beside the session's one: the preferred
ports are taken, so this also shows that free ones are found."""
import json
from pathlib import Path

import pytest

from cluster.local import pid_alive, session_processes
from tests.conftest import run_segq

pytestmark = pytest.mark.ray


def test_up_is_idempotent_and_down_stops_everything(segq_env, tmp_path):
    env = {**segq_env, "SEGQ_HOME": str(tmp_path / "home")}
    first = run_segq("up", "--num-cpus", "1", env=env, check=True, timeout=300)
    assert "started" in first.stdout and "dashboard  http://127.0.0.1:" in first.stdout
    state = json.loads((tmp_path / "home" / "cluster.json").read_text())
    session = json.loads((Path(segq_env["SEGQ_HOME"]) / "cluster.json").read_text())
    assert state["redis"]["port"] != session["redis"]["port"]
    assert state["ray"]["ports"]["dashboard"] != session["ray"]["ports"]["dashboard"]
    assert (tmp_path / "home" / "redis" / "appendonlydir").exists()  # AOF on

    again = run_segq("up", env=env, check=True)
    assert "already running" in again.stdout and str(state["ray"]["pid"]) in again.stdout
    assert "jobs" in run_segq("status", env=env, check=True).stdout

    processes = session_processes(state["ray"]["pid"]) | session_processes(state["redis"]["pid"])
    assert len(processes) > 3
    assert "stopped" in run_segq("down", env=env, check=True, timeout=120).stdout
    assert not [pid for pid in processes if pid_alive(pid)]
    assert pid_alive(session["ray"]["pid"]) and pid_alive(session["redis"]["pid"])  # not ours to stop
    assert run_segq("status", env=env).returncode == 1
