"""Elastic DDP trials on a real local multi-node cluster (the session's second, tests/conftest.py): a
1-2 worker trial starts with the one worker its head fits, grows when `segq up --nodes 2` adds a
node, and goes on with one worker from its last checkpoint when that node's raylet is killed."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from cluster.processes import stop_session
from jobs import keys
from jobs.records import JobRecord
from tests.conftest import prepare_synthetic_in_process, run_segq, wait_until
from tests.failure_checks import cluster_state, raylet_pid, redis_of
from tests.test_sweep import eval_val_miou

pytestmark = pytest.mark.ray
EPOCHS = 150
RESIZE_INTERVAL_S = 2.0
# The head's 2 CPUs hold one worker and the trial's own 0.1, the added node (2 CPUs) one more. Ray
# Train's elastic policy counts workers per node from the node's CPUs alone (not what the trial's
# own process holds), so a worker must need more than half a node's CPUs for the count to be right.
CPUS_PER_WORKER = 1.5


@pytest.fixture(scope="module")
def elastic_cluster(multinode_home):
    """The head alone, as the test starts (tests/test_multinode.py grows it again after): a worker
    node an earlier test started is stopped by its process group, and dropped from the record."""
    for node in cluster_state(multinode_home).get("nodes", []):
        stop_session(node["pid"], grace=8)
    run_segq("up", "--nodes", "1", "--num-cpus", "2", env=multinode_home, check=True, timeout=300)
    return multinode_home


def spec_file(directory: Path, data: Path) -> Path:
    spec = {"name": "elastic", "data": str(data), "archs": ["unet"], "models": {"unet": {"base_width": 8, "depth": 2}},
            "train": {"epochs": EPOCHS, "batch_size": 4, "lr": 3e-3, "augment": "none", "seed": 0,
                      "lr_scaling": "linear"},
            "resources": {"workers_per_trial": {"min": 1, "max": 2}, "cpus_per_worker": CPUS_PER_WORKER,
                          "resize_interval_s": RESIZE_INTERVAL_S, "start_timeout_s": 10, "collective_timeout_s": 10}}
    path = directory / "elastic.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def train_events(client, job_id: str) -> list[dict]:
    events = [json.loads(fields["data"]) for _, fields in client.xrange(keys.events(job_id))]
    return [event for event in events if event["type"] == "metrics" and event["split"] == "train"]


@pytest.fixture(scope="module")
def elastic_job(elastic_cluster, tmp_path_factory):
    directory = tmp_path_factory.mktemp("elastic")
    data = prepare_synthetic_in_process(directory / "data", 96, (0.5, 0.25, 0.25), size=(32, 32))
    client = redis_of(elastic_cluster)
    job_id = run_segq("submit", "sweep", str(spec_file(directory, data)), env=elastic_cluster,
                      check=True).stdout.strip().splitlines()[-1]
    wait_until(lambda: any(event["metrics"].get("world_size") == 1 for event in train_events(client, job_id)), 300)
    run_segq("up", "--nodes", "2", "--num-cpus", "4", env=elastic_cluster, check=True, timeout=300)
    grown_at = time.time()
    grown = wait_until(lambda: [event for event in train_events(client, job_id)
                                if event["metrics"].get("world_size") == 2], 120, interval=0.2)
    wait_until(lambda: len([event for event in train_events(client, job_id)
                            if event["metrics"].get("world_size") == 2]) >= 2, 60, interval=0.2)
    os.kill(raylet_pid(cluster_state(elastic_cluster)["nodes"][0]["pid"]), signal.SIGKILL)
    record = wait_until(lambda: (found := JobRecord.load(client, job_id)).status.is_final and found, 600)
    return {"job": job_id, "record": record, "client": client, "data": data, "grown_at": grown_at,
            "first_grown": grown[0]}


def test_a_trial_grows_when_a_node_joins_and_shrinks_when_it_is_lost(elastic_job):
    assert elastic_job["record"].status.value == "finished", elastic_job["record"].error
    # The grown group's first epoch came within the resize interval plus 30 s of the node joining.
    assert elastic_job["first_grown"]["ts"] - elastic_job["grown_at"] <= RESIZE_INTERVAL_S + 30
    events = train_events(elastic_job["client"], elastic_job["job"])
    sizes = [event["metrics"]["world_size"] for event in sorted(events, key=lambda event: event["epoch"])]
    changes = [size for index, size in enumerate(sizes) if index == 0 or size != sizes[index - 1]]
    assert changes == [1, 2, 1], sizes


def test_every_epoch_and_split_is_published_once(elastic_job):
    stream = elastic_job["client"].xrange(keys.events(elastic_job["job"]))
    published = [json.loads(fields["data"]) for _, fields in stream]
    keyed = [(event["epoch"], event.get("split", event["type"])) for event in published
             if event["type"] in ("metrics", "best") and event.get("split") != "test"]
    expected = [(epoch, split) for epoch in range(1, EPOCHS + 1) for split in ("train", "val", "best")]
    assert sorted(keyed) == sorted(expected)


def test_device_hours_count_each_epoch_at_its_world_size(elastic_job):
    from jobs.results.summary import trial_rows

    [row] = trial_rows(elastic_job["client"], elastic_job["job"])
    events = train_events(elastic_job["client"], elastic_job["job"])
    worker_seconds = sum(event["metrics"]["world_size"] * (event["metrics"]["epoch_time_s"]
                                                          + event["metrics"]["eval_time_s"]) for event in events)
    assert row["cost"]["device_hours"] == pytest.approx(worker_seconds * CPUS_PER_WORKER / 3600, rel=0.01)
    assert row["workers"] == "1->2->1" and row["epochs"] == EPOCHS


def test_eval_reproduces_the_best_epochs_row(elastic_cluster, elastic_job):
    from jobs.results.summary import trial_rows

    [row] = trial_rows(elastic_job["client"], elastic_job["job"])
    assert abs(eval_val_miou(elastic_cluster, row["best_checkpoint"], elastic_job["data"]) - row["val"]["miou"]) <= 1e-6
