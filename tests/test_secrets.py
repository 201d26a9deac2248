"""The embedded default keeps its secrets: Redis wants its random password (a 0600 file in
SEGQ_HOME), Redis and the dashboard listen on loopback only, and `segq dashboard` says how to sign
in, printing the Ray token only when asked. (That a whole run of jobs leaks neither secret
anywhere is checked by the soak, tests/test_soak.py; rediss:// by tests/test_redis_faults.py.)"""
import json
import stat
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from cluster import secrets
from cluster.cli import app
from workers.redis_client import open_redis

pytestmark = pytest.mark.ray


def state_of(env) -> dict:
    return json.loads((Path(env["SEGQ_HOME"]) / "cluster.json").read_text())


def test_the_embedded_redis_wants_its_password(segq_env):
    password_file = Path(segq_env["SEGQ_HOME"]) / "redis.password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600 and len(password_file.read_text().strip()) >= 32
    port = state_of(segq_env)["redis"]["port"]
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=port).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=port, password="wrong").ping()
    assert open_redis(state_of(segq_env)["redis"]["url"]).ping()


def listeners(port: int) -> list[str]:
    """Local addresses listening on `port` (IPv4 and IPv6), from /proc/net/tcp*."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, local_port = local.rsplit(":", 1)
            if state == "0A" and int(local_port, 16) == port:
                found.append(address)
    return found


def test_redis_and_the_dashboard_listen_on_loopback_only(segq_env):
    state = state_of(segq_env)
    dashboard_port = int(state["ray"]["dashboard_url"].rsplit(":", 1)[1])
    for port in (state["redis"]["port"], dashboard_port):
        assert listeners(port) and set(listeners(port)) == {"0100007F"}, (port, listeners(port))


def segq_in_process(env: dict, *args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"SEGQ_HOME": env["SEGQ_HOME"], "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_dashboard_prints_the_token_only_when_asked(segq_env):
    token = secrets.ray_token()
    plain = segq_in_process(segq_env, "dashboard")
    assert plain.splitlines()[0] == state_of(segq_env)["ray"]["dashboard_url"]
    assert "--show-token" in plain and token not in plain
    assert segq_in_process(segq_env, "dashboard", "--show-token").splitlines()[-1] == token
    for command in ("status", "up"):
        said = segq_in_process(segq_env, command)
        assert "segq dashboard --show-token" in said and token not in said
