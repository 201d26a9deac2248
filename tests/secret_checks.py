"""Where a secret could leak, read the way an onlooker would: process command lines, `ray job list`,
files, and every value in Redis (which must also be JSON, never pickle)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import redis

from jobs import keys

RAY = str(Path(sys.executable).with_name("ray"))


def command_lines() -> str:
    lines = []
    for proc in Path("/proc").iterdir():
        try:
            lines.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return "\n".join(lines)


def ray_job_list(dashboard_url: str, env: dict) -> str:
    """What `ray job list` prints: every job's runtime_env and metadata, as the dashboard shows them."""
    return subprocess.run([RAY, "job", "list", "--address", dashboard_url], env={**env, "RAY_AUTH_MODE": "token"},
                          capture_output=True, text=True, timeout=120, check=True).stdout


def redis_dump(client: redis.Redis) -> dict[str, list[str]]:
    """Every segq key and its values as strings (streams: the `data` fields)."""
    dump = {}
    for key in client.scan_iter("segq:*"):
        kind = client.type(key)
        if kind == "hash":
            dump[key] = list(client.hgetall(key).values())
        elif kind == "stream":
            dump[key] = [fields.get("data", "") for _, fields in client.xrange(key)]
        elif kind == "zset":
            dump[key] = client.zrange(key, 0, -1)
        elif kind == "set":
            dump[key] = list(client.smembers(key))
    return dump


def files_holding(secret: bytes, *roots: Path, skip: tuple[Path, ...] = ()) -> list[str]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink() and not any(path.is_relative_to(s) for s in skip):
                try:
                    if secret in path.read_bytes():
                        found.append(str(path))
                except OSError:
                    continue
    return found


def assert_values_are_json(values: dict[str, list[str]], job_id: str) -> None:
    """Streams and trial hashes hold JSON; nothing anywhere looks like a pickle."""
    assert all(not value.startswith("\x80") for key_values in values.values() for value in key_values)
    for key, key_values in values.items():
        if key == keys.events(job_id) or key.startswith(keys.trial(job_id, "")):
            for value in key_values:
                json.loads(value)  # raises on anything but JSON
    record = values[keys.job(job_id)]
    assert any(isinstance(json.loads(value), dict) for value in record if value.startswith("{"))
