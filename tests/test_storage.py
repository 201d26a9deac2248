"""Shared storage on a real S3 API (moto's server on 127.0.0.1, reached by endpoint override): a
sweep keeps its checkpoints and Ray's state there, and predict, eval and the report read from there.

The sweep is also the data path's end-to-end check: its two trials differ only in
`loader_workers` (0 and 2), ask for GPU-only options on this CPU machine, and must score the same."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
import torch
from PIL import Image

from cluster.local import free_port, wait_for_port
from tests.conftest import S3_CREDENTIALS, run_segq
from workers import storage
from workers.checkpointing import load_checkpoint, save_checkpoint
from workers.exceptions import CheckpointError, StorageError

BUCKET = "segq-runs"


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory, monkeypatch_module):
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, 60, "moto_server", server.pid)
    for name, value in S3_CREDENTIALS.items():
        monkeypatch_module.setenv(name, value)
    endpoint = f"127.0.0.1:{port}"
    pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", allow_bucket_creation=True).create_dir(BUCKET)
    yield endpoint
    server.terminate()
    server.wait(10)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def s3_uri(endpoint: str, prefix: str) -> str:
    return f"s3://{BUCKET}/{prefix}?endpoint_override={endpoint}&scheme=http"


def test_locations_keep_the_endpoint_and_name_what_is_wrong(s3_endpoint, tmp_path):
    base = s3_uri(s3_endpoint, "unit")
    assert storage.join(base, "train", "run") == s3_uri(s3_endpoint, "unit/train/run")
    assert storage.join(str(tmp_path), "train") == str(tmp_path / "train")
    filesystem, path = storage.resolve(base)
    assert filesystem.type_name == "s3" and path == f"{BUCKET}/unit"
    reported = storage.location_of(filesystem, f"{BUCKET}/unit/x/checkpoint_0", base)  # as Ray names checkpoints
    assert reported == s3_uri(s3_endpoint, "unit/x/checkpoint_0")
    with pytest.raises(StorageError, match=r"^hdfs://host/x: storage scheme 'hdfs' is not supported; use a path"):
        storage.absolute("hdfs://host/x")


def test_a_checkpoint_loads_from_s3(s3_endpoint, tmp_path):
    local = save_checkpoint(tmp_path, {"format": "segq-checkpoint", "model": {"w": torch.arange(3.0)}, "trial": {}})
    folder = s3_uri(s3_endpoint, "unit/checkpoint_000001")
    storage.upload_dir(tmp_path, folder)
    assert torch.equal(load_checkpoint(folder)["model"]["w"], torch.arange(3.0))  # the folder, as Ray names it
    assert load_checkpoint(storage.join(folder, local.name))["trial"] == {}
    missing = s3_uri(s3_endpoint, "unit/nothing")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(missing)


@pytest.fixture(scope="module")
def s3_sweep(segq_env, tiny_dataset, s3_endpoint, tmp_path_factory):
    spec = tmp_path_factory.mktemp("spec") / "sweep.yaml"
    spec.write_text(json.dumps({
        "name": "s3-sweep", "archs": ["unet"], "models": {"unet": {"base_width": 4, "depth": 2}},
        "train": {"epochs": 1, "batch_size": 4, "lr": 3e-3, "augment": "none", "seed": 3, "amp": "bf16",
                  "channels_last": True, "loader_workers": {"grid": [0, 2]}},
        # both trials at once on two CPUs
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 0.5}}))
    root = s3_uri(s3_endpoint, "storage")
    result = run_segq("--storage", root, "submit", "sweep", str(spec), "--data", str(tiny_dataset), "--wait",
                      env=segq_env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    job_id = result.stdout.strip().splitlines()[-1]
    rows = json.loads(run_segq("summary", job_id, "--format", "json", env=segq_env, check=True).stdout)
    return job_id, root, rows


@pytest.mark.ray
def test_a_sweep_on_s3_keeps_its_best_checkpoints_there(segq_env, s3_sweep):
    job_id, root, rows = s3_sweep
    assert len(rows) == 2 and all(row["status"] == "finished" for row in rows)
    for row in rows:
        assert row["best_checkpoint"].startswith(f"s3://{BUCKET}/storage/train/{job_id}-")
        assert row["best_checkpoint"].endswith(root.split("?")[1])  # it carries the endpoint to reach it
        assert storage.exists(storage.join(row["best_checkpoint"], "checkpoint.pt"))
    assert not list(Path(segq_env["SEGQ_HOME"]).glob(f"storage/*/{job_id}*"))  # nothing went to the local default
    # The TensorBoard runs, written on the driver's node, were uploaded as each trial ended.
    runs = storage.list_dirs(storage.join(root, "tensorboard", job_id))
    assert sorted(run.split("?")[0].rsplit("/", 1)[1] for run in runs) == sorted(row["trial"] for row in rows)
    filesystem, path = storage.resolve(runs[0])
    assert any(info.base_name.startswith("events.out.tfevents") and info.size > 0
               for info in filesystem.get_file_info(pafs.FileSelector(path)))


@pytest.mark.ray
def test_loader_workers_change_the_speed_not_the_scores_in_a_ray_job(segq_env, s3_sweep):
    job_id, _, rows = s3_sweep
    by_workers = {row["params"]["train"]["loader_workers"]: row for row in rows}
    assert set(by_workers) == {0, 2}
    assert abs(by_workers[0]["val"]["miou"] - by_workers[2]["val"]["miou"]) <= 1e-3
    logs = run_segq("jobs", "logs", job_id, env=segq_env, check=True).stdout
    notices = [line for line in logs.splitlines() if "GPU-only" in line]
    assert notices and all("segq: ignoring amp: bf16, channels_last: true: GPU-only" in line for line in notices)


@pytest.mark.ray
def test_predict_and_eval_read_the_checkpoint_from_s3(segq_env, s3_sweep, tiny_dataset, tmp_path):
    _, _, rows = s3_sweep
    row = min(rows, key=lambda row: row["params"]["train"]["loader_workers"])
    image = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(image)
    predicted = run_segq("predict", row["best_checkpoint"], str(image), "--out", str(tmp_path / "out"), env=segq_env)
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    assert Image.open(tmp_path / "out" / "frame_mask.png").size == (50, 40)
    scored = run_segq("eval", row["best_checkpoint"], "--data", str(tiny_dataset), "--format", "json", env=segq_env)
    assert scored.returncode == 0, scored.stdout + scored.stderr
    assert json.loads(scored.stdout)["scores"]["miou"] == pytest.approx(row["val"]["miou"], abs=1e-9)


@pytest.mark.ray
def test_the_report_lands_on_s3_with_the_best_models_predictions(segq_env, s3_sweep):
    job_id, root, _ = s3_sweep
    folder = storage.join(root, "reports", job_id)
    result = run_segq("summary", job_id, "--format", "html", "--out", folder, env=segq_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert storage.join(folder, "report.html") in result.stdout
    for name in ("report.html", "report.md", "trials.csv", "predictions.png"):
        assert storage.exists(storage.join(folder, name)), name
