"""What the failure tests share: reading a job's record, trial facts and events from the cluster's
Redis, tiny job specs, and finding (to kill, or to see gone) the processes of a segq cluster."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from cluster.local import session_processes
from jobs import keys
from tests.conftest import SEGQ, wait_until
from workers.redis_client import open_redis

# Process titles of what a job runs on Ray: Tune trial functions, Train controllers and workers.
JOB_PROCESS_TITLES = ("ImplicitFunc", "TrainController", "RayTrainWorker")


def cluster_state(env: dict) -> dict:
    return json.loads((Path(env["SEGQ_HOME"]) / "cluster.json").read_text())


def redis_of(env: dict):
    return open_redis(cluster_state(env)["redis"]["url"], decode_responses=True)


def write_spec(path: Path, data, epochs: int | list[int], lrs: list[float], **resources) -> Path:
    """A tiny sweep: a small unet on the 32x32 tiny dataset, one trial per learning rate (and per
    number of epochs, when several are given)."""
    grid = lambda values: values[0] if len(values) == 1 else {"grid": values}  # noqa: E731
    spec = {"data": str(data), "archs": ["unet"], "models": {"unet": {"base_width": 8, "depth": 2}},
            "train": {"epochs": grid(epochs if isinstance(epochs, list) else [epochs]), "batch_size": 4,
                      "lr": grid(lrs)},
            "resources": {"cpus_per_worker": 0.5, **resources}}
    path.write_text(yaml.safe_dump(spec))
    return path


def submit(env: dict, spec: Path, *args: str) -> str:
    """Submit without waiting; the job id."""
    result = subprocess.run([SEGQ, "submit", "sweep", str(spec), *args], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()[-1]


def record(client, job_id: str) -> dict:
    return client.hgetall(keys.job(job_id))


def trial_facts(client, job_id: str, trial: str) -> dict:
    return {name: json.loads(value) for name, value in client.hgetall(keys.trial(job_id, trial)).items()}


def trial_names(client, job_id: str) -> list[str]:
    return sorted(client.smembers(keys.trials(job_id)))


def job_events(client, job_id: str) -> list[dict]:
    """The job's events, in the order they were published."""
    return [json.loads(fields["data"]) for _, fields in client.xrange(keys.events(job_id))]


def metric_events(client, job_id: str, trial: str | None = None) -> list[dict]:
    return [e for e in job_events(client, job_id) if e["type"] == "metrics" and trial in (None, e["trial"])]


def train_epochs(client, job_id: str, trial: str) -> list[int]:
    """The epochs of the trial's train events, in the order they were published."""
    return [e["epoch"] for e in metric_events(client, job_id, trial) if e["split"] == "train"]


def attempt_epochs(client, job_id: str, trial: str) -> list[list[int]]:
    """The epochs of the trial's train events, one list per attempt (each worker group start), in
    the order they were published."""
    attempts: list[list[int]] = []
    for event in (e for e in job_events(client, job_id) if e["trial"] == trial):
        if event["type"] == "trial" and event.get("attempt_started"):
            attempts.append([])
        elif event["type"] == "metrics" and event["split"] == "train":
            attempts[-1].append(event["epoch"])
    return attempts


def wait_for_epoch(client, job_id: str, trial: str, epoch: int, timeout: float) -> None:
    wait_until(lambda: epoch in train_epochs(client, job_id, trial), timeout=timeout, interval=0.2)


def wait_for_status(client, job_id: str, statuses: tuple[str, ...], timeout: float) -> str:
    return wait_until(lambda: record(client, job_id).get("status") in statuses and record(client, job_id)["status"],
                      timeout=timeout, interval=0.5)


def wait_for_registered_checkpoint(env: dict, job_id: str, trial: str, after: float, timeout: float) -> None:
    """Until Ray Train has registered a checkpoint of the trial's run written after `after` (unix
    time): a restarted worker group resumes from the checkpoints Train registered, not from every
    checkpoint a worker reported (with epochs of a fraction of a second, the newest is not yet)."""
    snapshot = Path(env["SEGQ_HOME"]) / "storage" / "train" / f"{job_id}-{trial}" / "checkpoint_manager_snapshot.json"
    wait_until(lambda: snapshot.exists() and snapshot.stat().st_mtime > after, timeout=timeout, interval=0.2)


def wait_for_stored_checkpoint(env: dict, job_id: str, trial: str, timeout: float) -> None:
    """Until a trial that trains in its Tune trial has stored an epoch's checkpoint in its run's folder."""
    run = Path(env["SEGQ_HOME"]) / "storage" / "train" / f"{job_id}-{trial}"
    wait_until(lambda: any(run.glob("checkpoint_*/checkpoint.pt")), timeout=timeout, interval=0.2)


def metric_fields(client, job_id: str, trial: str) -> list[str]:
    return sorted(client.hkeys(keys.trial_metrics(job_id, trial)))


def process_title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def job_processes(head_pid: int) -> dict[int, str]:
    """The trial processes (Tune trial functions, Train controllers and workers) of one segq cluster."""
    titles = {pid: process_title(pid) for pid in session_processes(head_pid)}
    return {pid: title for pid, title in titles.items() if any(name in title for name in JOB_PROCESS_TITLES)}


def raylet_pid(node_pid: int) -> int:
    """The raylet of a worker node started by `segq up --nodes N` (recorded by its `ray start` pid)."""
    raylets = [pid for pid in session_processes(node_pid) if process_title(pid).endswith("/raylet")]
    assert len(raylets) == 1, raylets
    return raylets[0]
