"""A saliency job end to end on the local cluster, with a train worker killed in iteration 2."""
import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest
import redis

from jobs import keys
from workers.redis_client import open_redis
from tests.tracking_checks import tensorboard_scalars
from tests.conftest import SEGQ, run_segq, wait_until

pytestmark = pytest.mark.ray
ITERATIONS, EPOCHS, KEEP = 3, 2, 80


def shard_digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob("*.arrow"))}


def train_worker_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cmdline.startswith("ray::RayTrainWorker"):
                pids.append(int(entry))
    return pids


def stream_entries(client, job_id) -> list[tuple[str, dict]]:
    """The job's raw event stream: every event as published, replays included."""
    return [(entry_id, json.loads(fields["data"])) for entry_id, fields in client.xrange(keys.events(job_id))]


def events(client, job_id):
    return [event for _, event in stream_entries(client, job_id)]


def stream_order(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence)


def newest_saliency_job(client) -> str | None:
    """Earlier tests of the session may have submitted sweeps: wait for this module's job."""
    newest = client.zrange(keys.jobs_index(), -1, -1)
    return newest[0] if newest and newest[0].startswith("saliency-") else None


class SaliencyJob(NamedTuple):
    job_id: str
    rows: list[dict]
    before: dict[str, str]
    client: redis.Redis
    first_trial: str
    killed_after: str  # the last stream entry before the train workers were killed


@pytest.fixture(scope="module")
def saliency_job(segq_env, tiny_dataset):
    before = shard_digests(tiny_dataset)
    state = json.load(open(f"{segq_env['SEGQ_HOME']}/cluster.json"))
    client = open_redis(state["redis"]["url"], decode_responses=True)
    process = subprocess.Popen(
        [SEGQ, "submit", "saliency", "--data", str(tiny_dataset), "--arch", "unet", "--iterations", str(ITERATIONS),
         "--keep-percent", str(KEEP), "--epochs", str(EPOCHS), "--workers-per-trial", "2", "--batch-size", "4",
         "--controls", "--wait"], env=segq_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    job_id = wait_until(lambda: newest_saliency_job(client), 120)
    first_trial = "000_unet_relevance=softmax_foreground"
    # Kill the DDP workers once iteration 2 has finished an epoch: the trial must resume inside
    # iteration 2 from its checkpoint, not redo iteration 1. Every train worker alive is killed,
    # so the first trial's are among them whichever trials run beside it.
    wait_until(lambda: any(e.get("trial") == first_trial and e.get("iteration") == 2 and e.get("split") == "val"
                           for e in events(client, job_id)), 600, interval=0.3)
    victims = train_worker_pids()
    assert victims, "no Ray Train worker to kill"
    killed_after = stream_entries(client, job_id)[-1][0]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stdout + stderr
    assert stdout.strip().splitlines()[-1] == job_id
    rows = json.loads(run_segq("summary", job_id, "--format", "json", env=segq_env, check=True).stdout)
    return SaliencyJob(job_id, rows, before, client, first_trial, killed_after)


def test_one_row_per_iteration_with_compounding_kept_fraction(saliency_job):
    rows = saliency_job.rows
    assert len(rows) == 2 * ITERATIONS
    for trial in {row["trial"] for row in rows}:
        mine = sorted((row for row in rows if row["trial"] == trial), key=lambda row: row["iteration"])
        assert [row["iteration"] for row in mine] == [1, 2, 3]
        for row in mine:
            assert row["kept_fraction"] == pytest.approx((KEEP / 100) ** (row["iteration"] - 1), rel=0.01)
            assert row["epochs"] == EPOCHS and row["status"] == "finished"
            for split in ("val", "test"):
                assert 0 <= row[split]["miou"] <= 1 and 0 <= row[split]["mdice"] <= 1
            assert Path(row["samples"]).exists() and Path(row["best_checkpoint"]).exists()


def test_tensorboard_has_a_run_per_iteration_with_the_rows_numbers(saliency_job):
    """Through the workers' kill inside iteration 2: the replayed epoch is in its run once."""
    from jobs.records import JobRecord

    logdir = Path(JobRecord.load(saliency_job.client, saliency_job.job_id).tensorboard_dir)
    for row in saliency_job.rows:
        run = logdir / row["trial"] / f"iteration-{row['iteration']}"
        val_miou = tensorboard_scalars(run, "val/miou")
        assert [step for step, _ in val_miou] == list(range(1, EPOCHS + 1))
        assert [value for _, value in val_miou] == pytest.approx(row["val_miou_curve"], abs=1e-6)
        assert tensorboard_scalars(run, "saliency/kept_fraction")[0][1] == pytest.approx(row["kept_fraction"])


def test_controls_run_beside_the_saliency_trial(saliency_job):
    rows = saliency_job.rows
    relevance = {row["params"]["saliency"]["relevance"] for row in rows}
    assert relevance == {"softmax_foreground", "random"}


def test_original_shards_are_byte_identical(saliency_job, tiny_dataset):
    assert shard_digests(tiny_dataset) == saliency_job.before


def test_killed_worker_resumed_inside_iteration_two(saliency_job):
    job = saliency_job
    mine = [(entry_id, e) for entry_id, e in stream_entries(job.client, job.job_id)
            if e.get("trial") == job.first_trial]
    # Each start of the trial's worker group publishes its setup facts once: a start after the
    # kill is the restart, so the kill really hit this trial.
    starts = [entry_id for entry_id, e in mine if e["type"] == "trial" and e.get("protocol")]
    restarts = [entry_id for entry_id in starts if stream_order(entry_id) > stream_order(job.killed_after)]
    assert len(starts) >= 2 and restarts, starts
    restarted = restarts[0]
    after = [e for entry_id, e in mine if stream_order(entry_id) > stream_order(restarted) and e["type"] == "metrics"]
    assert after and min(e["iteration"] for e in after) == 2  # resumed inside iteration 2...
    metrics = [e for _, e in mine if e["type"] == "metrics"]
    iteration_one_train = [e for e in metrics if e["iteration"] == 1 and e["split"] == "train"]
    assert sorted(e["epoch"] for e in iteration_one_train) == [1, 2]  # ...and iteration 1 was not redone
    # ...and recovered: every epoch of the later iterations is there, and the trial finished.
    for iteration in (2, 3):
        published = {(e["epoch"], e["split"]) for e in metrics if e["iteration"] == iteration}
        scored_once = {epoch for epoch, split in published if split == "test"}  # with the best epoch's weights
        assert published - {(epoch, "test") for epoch in scored_once} == {
            (epoch, split) for epoch in range(1, EPOCHS + 1) for split in ("train", "val")}
        assert len(scored_once) == 1
    statuses = [e["status"] for _, e in mine if e["type"] == "trial" and e.get("status")]
    assert statuses[-1] == "finished"


def test_validation_and_test_metrics_are_on_unmasked_images(saliency_job, tiny_dataset):
    """Re-score the model stored for iteration 3 (its best epoch) on the plain val and test splits,
    as the trial scored it: the published scores of that epoch match exactly, which they could not
    if evaluation had seen masked images (iteration 3 trains on 64% of each image)."""
    import torch

    from jobs.checkpoints.evaluate import replay_scores
    from jobs.results.summary import trial_metrics
    from workers.augment import Normalize
    from workers.data import SplitDataset
    from jobs.checkpoints.inference import load_trained_model
    from workers.shards import ShardedSplit

    job_id, rows, client, first_trial = (saliency_job.job_id, saliency_job.rows, saliency_job.client,
                                         saliency_job.first_trial)
    last = next(row for row in rows if row["trial"] == first_trial and row["iteration"] == ITERATIONS)
    published = trial_metrics(client, job_id, first_trial)
    trained = load_trained_model(last["best_checkpoint"])
    for split_name in ("val", "test"):
        split = ShardedSplit(tiny_dataset, split_name)
        dataset = SplitDataset(split, None, Normalize(split.manifest["mean"], split.manifest["std"]))
        scores = replay_scores(trained.model, dataset, split.manifest, torch.device("cpu"), trained.scoring)
        expected = published[(ITERATIONS, last["best_epoch"], split_name)]
        assert scores["pixels"] == expected["pixels"]
        assert scores["miou"] == pytest.approx(expected["miou"], abs=1e-9)


def test_eval_on_each_iteration_model_gives_the_row(segq_env, saliency_job, tiny_dataset):
    """Every iteration's row names the model of its best epoch: `segq eval` on it gives the row's
    val mIoU (iteration 2 of the first trial was resumed after its workers were killed)."""
    from workers.checkpointing import load_checkpoint

    assert len(saliency_job.rows) == 2 * ITERATIONS
    for row in saliency_job.rows:
        stored = load_checkpoint(row["best_checkpoint"])
        assert (stored["iteration"], stored["epoch"]) == (row["iteration"], row["best_epoch"])
        result = run_segq("eval", row["best_checkpoint"], "--data", str(tiny_dataset), "--format", "json",
                          env=segq_env, check=True)
        miou = json.loads(result.stdout)["scores"]["miou"]
        assert abs(miou - row["val"]["miou"]) <= 1e-6, (row["trial"], row["iteration"], miou, row["val"]["miou"])


def test_report_draws_the_saliency_curve_grids_and_the_control_comparison(segq_env, saliency_job, tmp_path):
    from tests.report_checks import check_report

    job_id = saliency_job.job_id
    out = tmp_path / "report"
    run_segq("summary", job_id, "--format", "md", "--out", str(out), env=segq_env, check=True)
    check_report(out, expected_plots=("saliency_curve", "learning_curves", "per_class_iou"))
    grids = sorted(out.glob("samples_*_it*.png"))
    assert len(grids) == 2 * ITERATIONS
    report = (out / "report.md").read_text()
    section = report.split("## Saliency against its random control")[1].split("##")[0]
    assert len([line for line in section.splitlines() if line.startswith("| 000_unet")]) == ITERATIONS
    table = json.loads(run_segq("summary", job_id, "--format", "json", env=segq_env, check=True).stdout)
    assert {row["iteration"] for row in table} == {1, 2, 3}
