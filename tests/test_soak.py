"""Soak: tiny jobs submitted back to back through the CLI, on the embedded default. All of them
finish, every job record is complete, and afterwards no segq process, job driver, Ray Train worker,
temporary file or secret is left behind: neither the Redis password nor the Ray token shows in a
process command line, `ray job list` (runtime_env, metadata), a job record, a log, a report or any
file under SEGQ_HOME and the Ray session folder.

SEGQ_SOAK_JOBS sets the size: CI runs the default 2, `make soak` runs 20."""
import json
import os
import tempfile
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cluster import secrets
from cluster.cli import app
from cluster.local import ray_temp_dir, session_processes
from jobs import keys
from tests.conftest import SEGQ, run_segq, wait_until
from tests.secret_checks import assert_values_are_json, command_lines, files_holding, ray_job_list, redis_dump
from workers.redis_client import open_redis

pytestmark = [pytest.mark.ray, pytest.mark.soak]
JOBS = int(os.environ.get("SEGQ_SOAK_JOBS", "2"))
TRAIN_ACTORS = ("ray::TrainWorker", "ray::ImplicitFunc", "ray::TrainController", "ray::_Inner")


def process_facts() -> dict[int, tuple[str, str]]:
    """pid -> (command line, SEGQ_HOME of its environment) for every process we may read."""
    facts = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        home = next((item[10:].decode(errors="replace") for item in environ if item.startswith(b"SEGQ_HOME=")), "")
        facts[int(proc.name)] = (cmdline, home)
    return facts


def leftovers(home: str, state: dict, job_ids: list[str]) -> list[str]:
    """Processes of ours that should be gone: a segq command, a driver of a soak job, a train actor."""
    cluster = session_processes(state["ray"]["pid"]) | session_processes(state["redis"]["pid"])
    found = []
    for pid, (cmdline, segq_home) in process_facts().items():
        if pid == os.getpid():
            continue
        if any(f"jobs.lifecycle.driver {job}" in cmdline for job in job_ids):
            found.append(cmdline)
        elif pid in cluster and cmdline.startswith(TRAIN_ACTORS):
            found.append(cmdline)
        elif segq_home == home and pid not in cluster and SEGQ in cmdline:
            found.append(cmdline)
    return found


def temporary_files(home: Path, before: set[str], job_ids: list[str]) -> list[str]:
    """Half-written files under HOME (checkpoints, shards, masks), and new folders in /tmp holding a
    checkpoint of one of these jobs (/tmp is shared with whatever else runs on the machine)."""
    stray = [str(path) for path in home.rglob("*.tmp")]
    for name in set(os.listdir(tempfile.gettempdir())) - before:
        for checkpoint in Path(tempfile.gettempdir(), name).glob("checkpoint.pt"):
            try:
                job_id = torch.load(checkpoint, map_location="cpu", weights_only=True).get("job_id")
            except Exception:  # another process's file, half written or gone
                continue
            if job_id in job_ids:
                stray.append(str(checkpoint))
    return stray


def segq_in_process(env: dict, *args: str) -> str:
    """The CLI in this process (the installed command's start-up is what the submissions exercise)."""
    result = CliRunner().invoke(app, list(args), env={"SEGQ_HOME": env["SEGQ_HOME"], "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


def submit_back_to_back(env: dict, data: Path) -> list[str]:
    job_ids = []
    for index in range(JOBS):
        result = run_segq("submit", "sweep", "--data", str(data), "--arch", "unet", "--lr", "1e-3",
                          "--epochs", "1", "--workers-per-trial", "1", "--cpus-per-worker", "0.5",
                          "--batch-size", "8", "--name", f"soak-{index}", env=env, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        job_ids.append(result.stdout.strip().splitlines()[-1])
    return job_ids


def wait_watching_processes(client, job_ids: list[str]) -> str:
    """Wait for every job to end, reading all processes' command lines meanwhile; what they showed."""
    seen = []

    def all_ended() -> bool:
        seen.append(command_lines())
        return all(client.hget(keys.job(job), "status") in ("finished", "failed", "cancelled") for job in job_ids)

    wait_until(all_ended, 90 * JOBS, 1)
    return "\n".join(seen)


def check_records(client, job_ids: list[str], rows: list[dict]) -> None:
    for job_id in job_ids:
        record = client.hgetall(keys.job(job_id))
        assert record["status"] == "finished", record
        assert record["ray_submission_id"] and float(record["started_at"]) <= float(record["ended_at"])
        assert len(json.loads(record["trials"])) == 1 and record["name"].startswith("soak-")
    assert len(rows) == JOBS and all(row["status"] == "finished" and row["epochs"] == 1 for row in rows)
    assert all(row["best_checkpoint"] and Path(row["best_checkpoint"]).exists() for row in rows)


def check_no_secret_shows(env: dict, state: dict, job_ids: list[str], seen: dict[str, str]) -> None:
    """Neither the Redis password nor the Ray token in any command line, `ray job list`, output,
    value in Redis, or file under SEGQ_HOME and the Ray session folder (logs, storage, reports)."""
    home = Path(env["SEGQ_HOME"])
    client = open_redis(state["redis"]["url"], decode_responses=True)
    values = redis_dump(client)
    seen = {**seen, "ray job list": ray_job_list(state["ray"]["dashboard_url"], env), "redis": json.dumps(values)}
    assert all(job in seen["ray job list"] for job in job_ids) and "runtime_env" in seen["ray job list"]
    private = (home / "redis.password", home / "secrets", home / "redis" / secrets.REDIS_SECRET_CONF)
    for secret in ((home / "redis.password").read_text().strip(), secrets.ray_token()):
        assert secret
        for where, text in seen.items():
            assert secret not in text, f"a secret shows in {where}"
        assert files_holding(secret.encode(), home, ray_temp_dir(home), skip=private) == []
    for job_id in job_ids:
        assert_values_are_json(values, job_id)


def test_jobs_back_to_back(segq_env, tiny_dataset):
    home = Path(segq_env["SEGQ_HOME"])
    state = json.loads((home / "cluster.json").read_text())
    client = open_redis(state["redis"]["url"], decode_responses=True)
    tmp_before = set(os.listdir(tempfile.gettempdir()))
    job_ids = submit_back_to_back(segq_env, tiny_dataset)
    processes = wait_watching_processes(client, job_ids)
    summary = segq_in_process(segq_env, "summary", *job_ids, "--format", "json")
    report = segq_in_process(segq_env, "summary", *job_ids, "--format", "md", "--out", str(home / "reports" / "soak"))
    check_records(client, job_ids, json.loads(summary))
    shown = segq_in_process(segq_env, "jobs", "show", job_ids[0])
    check_no_secret_shows(segq_env, state, job_ids, {"ps": processes, "segq output": summary + report + shown})
    wait_until(lambda: not leftovers(str(home), state, job_ids), 60, 2)
    time.sleep(1.0)
    assert leftovers(str(home), state, job_ids) == []
    assert temporary_files(home, tmp_before, job_ids) == []
