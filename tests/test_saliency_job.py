"""A saliency job end to end on the local cluster, with a train worker killed in iteration 2."""
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from jobs import keys
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


def events(client, job_id):
    return [json.loads(fields["data"]) for _, fields in client.xrange(keys.events(job_id))]


@pytest.fixture(scope="module")
def saliency_job(segq_env, tiny_dataset):
    before = shard_digests(tiny_dataset)
    state = json.load(open(f"{segq_env['SEGQ_HOME']}/cluster.json"))
    client = redis.Redis.from_url(state["redis"]["url"], decode_responses=True)
    process = subprocess.Popen(
        [SEGQ, "submit", "saliency", "--data", str(tiny_dataset), "--arch", "unet", "--iterations", str(ITERATIONS),
         "--keep-percent", str(KEEP), "--epochs", str(EPOCHS), "--workers-per-trial", "2", "--batch-size", "4",
         "--controls", "--wait"], env=segq_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    job_id = wait_until(lambda: next(iter(client.zrange(keys.jobs_index(), -1, -1)), None)
                        if client.zcard(keys.jobs_index()) else None, 60)
    while not job_id.startswith("saliency-"):
        time.sleep(0.5)
        job_id = client.zrange(keys.jobs_index(), -1, -1)[0]
    first_trial = "000_unet_relevance=softmax_foreground"
    # Kill one DDP worker once iteration 2 has finished an epoch: the trial must resume inside
    # iteration 2 from its checkpoint, not redo iteration 1.
    wait_until(lambda: any(e.get("trial") == first_trial and e.get("iteration") == 2 and e.get("split") == "val"
                           for e in events(client, job_id)), 600, interval=0.3)
    victims = train_worker_pids()
    assert victims, "no Ray Train worker to kill"
    os.kill(victims[0], signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stdout + stderr
    assert stdout.strip().splitlines()[-1] == job_id
    rows = json.loads(run_segq("summary", job_id, "--format", "json", env=segq_env, check=True).stdout)
    return job_id, rows, before, client, first_trial


def test_one_row_per_iteration_with_compounding_kept_fraction(saliency_job):
    _, rows, _, _, _ = saliency_job
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


def test_controls_run_beside_the_saliency_trial(saliency_job):
    _, rows, _, _, _ = saliency_job
    relevance = {row["params"]["saliency"]["relevance"] for row in rows}
    assert relevance == {"softmax_foreground", "random"}


def test_original_shards_are_byte_identical(saliency_job, tiny_dataset):
    _, _, before, _, _ = saliency_job
    assert shard_digests(tiny_dataset) == before


def test_killed_worker_resumed_inside_iteration_two(saliency_job):
    job_id, _, _, client, first_trial = saliency_job
    mine = [e for e in events(client, job_id) if e.get("trial") == first_trial and e["type"] == "metrics"]
    iteration_one_train = [e for e in mine if e["iteration"] == 1 and e["split"] == "train"]
    assert sorted(e["epoch"] for e in iteration_one_train) == [1, 2]  # iteration 1 was not redone


def test_validation_and_test_metrics_are_on_unmasked_images(saliency_job, tiny_dataset):
    """Re-score the model stored after iteration 3 (its last epoch) on the plain val and test
    splits: the published scores of that epoch match exactly, which they could not if
    evaluation had seen masked images (iteration 3 trains on 64% of each image)."""
    import torch

    from jobs.summary import trial_metrics
    from workers.augment import Normalize
    from workers.data import SplitDataset
    from workers.inference import load_trained_model
    from workers.shards import ShardedSplit
    from workers.train_loop import evaluate

    job_id, rows, _, client, first_trial = saliency_job
    last = next(row for row in rows if row["trial"] == first_trial and row["iteration"] == ITERATIONS)
    published = trial_metrics(client, job_id, first_trial)
    trained = load_trained_model(last["best_checkpoint"])
    torch.set_num_threads(1)  # as in the Ray worker, so float sums (and so argmaxes) are identical
    for split_name in ("val", "test"):
        split = ShardedSplit(tiny_dataset, split_name)
        dataset = SplitDataset(split, None, Normalize(split.manifest["mean"], split.manifest["std"]))
        scores = evaluate(trained.model, dataset, 0, 1, 4, torch.device("cpu"), split.manifest)
        expected = published[(ITERATIONS, EPOCHS, split_name)]
        assert scores["pixels"] == expected["pixels"]
        assert scores["miou"] == pytest.approx(expected["miou"], abs=1e-9)


def test_report_draws_the_saliency_curve_grids_and_the_control_comparison(segq_env, saliency_job, tmp_path):
    from tests.report_checks import check_report

    job_id, _, _, _, _ = saliency_job
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
