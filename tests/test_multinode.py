"""A 2-node cluster on this machine (`segq up --nodes 2`): every port it opens is on loopback; a
spread trial runs its ranks on both nodes; a train worker killed with SIGKILL mid-epoch, then the second node's raylet, and the trial
still finishes from its last checkpoints (real Ray, real Redis, real SIGKILLs)."""
import json
import os
import signal

import pytest

from tests.conftest import run_segq, wait_until
from tests.socket_checks import LOOPBACK, listening_sockets, started_processes
from tests.failure_checks import (attempt_epochs, cluster_state, metric_fields, raylet_pid, redis_of, submit,
                                  trial_facts, trial_names, wait_for_epoch, wait_for_registered_checkpoint,
                                  wait_for_status, write_spec)

pytestmark = pytest.mark.ray
EPOCHS = 12  # epochs of about a second each: long enough to kill twice mid-trial


@pytest.fixture(scope="module")
def two_nodes(multinode_home):
    """A cluster of its own (the session's second, tests/conftest.py): the head and one worker node,
    2 CPUs each; a node an earlier test lost is started again."""
    run_segq("up", "--nodes", "2", "--num-cpus", "4", env=multinode_home, check=True, timeout=300)
    return multinode_home


def test_every_port_of_the_embedded_default_is_on_loopback(segq_env, two_nodes):
    """The session's cluster and this one with its worker node: every listening socket of every
    process `segq up` started (Redis, the head, its agents, the worker node's) is on loopback."""
    for env in (segq_env, two_nodes):
        state = cluster_state(env)
        sockets = listening_sockets(started_processes(state))
        names = {name for _, name, _, _ in sockets}
        assert {"redis-server", "gcs_server", "raylet"} <= names, sockets
        assert not [entry for entry in sockets if entry[2] not in LOOPBACK], sockets
    assert len([name for _, name, _, _ in listening_sockets(started_processes(cluster_state(two_nodes)))
                if name == "raylet"]) >= 4  # each node's raylet: its node manager and object manager


def test_status_lists_both_nodes(two_nodes):
    status = run_segq("status", env=two_nodes, check=True).stdout
    assert "2 node(s)" in status
    assert [line.split()[:2] for line in status.splitlines() if "segq_node_" in line and "CPU=" in line] == [
        ["segq_node_0", "head"], ["segq_node_1", "worker"]]


def test_spread_trial_survives_a_killed_worker_and_a_lost_node(two_nodes, tiny_dataset, tmp_path):
    spec = write_spec(tmp_path / "spread.yaml", tiny_dataset, EPOCHS, [1e-3], workers_per_trial=2, placement="spread")
    client = redis_of(two_nodes)
    job_id = submit(two_nodes, spec)
    trial = wait_until(lambda: next(iter(trial_names(client, job_id)), None), timeout=180)

    wait_for_epoch(client, job_id, trial, 2, timeout=240)
    wait_for_registered_checkpoint(two_nodes, job_id, trial, after=0, timeout=60)
    first = trial_facts(client, job_id, trial)["ranks"]
    assert sorted(rank["node"] for rank in first) == ["segq_node_0", "segq_node_1"]  # spread: one rank per node
    victim = next(rank for rank in first if rank["node"] == "segq_node_0")
    os.kill(victim["pid"], signal.SIGKILL)  # mid-epoch 3: a train worker dies
    second = wait_until(lambda: new_ranks(client, job_id, trial, first), timeout=180)
    assert {rank["pid"] for rank in second}.isdisjoint(rank["pid"] for rank in first)

    wait_for_registered_checkpoint(two_nodes, job_id, trial, after=latest_start(client, job_id, trial), timeout=120)
    node = cluster_state(two_nodes)["nodes"][0]
    os.kill(raylet_pid(node["pid"]), signal.SIGKILL)  # the second node is lost mid-trial
    third = wait_until(lambda: new_ranks(client, job_id, trial, second), timeout=240)
    assert [rank["node"] for rank in third] == ["segq_node_0", "segq_node_0"]

    assert wait_for_status(client, job_id, ("finished", "failed"), timeout=300) == "finished"
    facts = trial_facts(client, job_id, trial)
    assert facts["status"] == "finished" and len(facts["attempts"]) == 3
    attempts = attempt_epochs(client, job_id, trial)
    assert len(attempts) == 3 and attempts[0][0] == 1, attempts
    # Each restart resumes from a registered checkpoint (not epoch 1), at most one epoch past the
    # last one its predecessor reported: the node can die just after a checkpoint, or mid-epoch.
    for earlier, later in zip(attempts, attempts[1:]):
        assert 1 < later[0] <= earlier[-1] + 1, attempts
    assert sorted({epoch for epochs in attempts for epoch in epochs}) == list(range(1, EPOCHS + 1))
    every_epoch = sorted(f"1:{e}:{s}" for e in range(1, EPOCHS + 1) for s in ("best", "train", "val"))
    assert [field for field in metric_fields(client, job_id, trial) if not field.endswith(":test")] == every_epoch
    row = json.loads(run_segq("summary", job_id, "--format", "json", env=two_nodes, check=True).stdout)[0]
    assert row["attempts"] == 3 and row["epochs"] == EPOCHS and len(row["train_loss"]) == EPOCHS
    assert len(row["val_miou_curve"]) == EPOCHS and row["nodes"] == ["segq_node_0", "segq_node_0"]


def latest_start(client, job_id: str, trial: str) -> float:
    return max(attempt["started"] for attempt in trial_facts(client, job_id, trial)["attempts"].values())


def new_ranks(client, job_id: str, trial: str, before: list[dict]) -> list[dict] | None:
    """The trial's ranks once a new worker group has started (every pid new), else None."""
    ranks = trial_facts(client, job_id, trial).get("ranks") or []
    pids = {rank["pid"] for rank in before}
    return ranks if ranks and not pids & {rank["pid"] for rank in ranks} else None
