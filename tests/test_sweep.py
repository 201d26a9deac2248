"""A real sweep end to end: CLI subprocess -> Ray Jobs API -> Tune -> 2-worker DDP (gloo) -> Redis."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from jobs import keys
from workers.redis_client import open_redis
from tests.conftest import run_segq
from tests.tracking_checks import tensorboard_scalars

pytestmark = pytest.mark.ray
EPOCHS = 3
LRS = (3e-3, 1e-2)


@pytest.fixture(scope="module")
def finished_sweep(segq_env, tiny_dataset):
    lrs = ",".join(map(str, LRS))
    result = run_segq("submit", "sweep", "--data", str(tiny_dataset), "--arch", "unet", "--lr", lrs,
                      "--epochs", str(EPOCHS), "--workers-per-trial", "2", "--batch-size", "4", "--wait",
                      env=segq_env, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()[-1], result


def redis_of(env):
    state = json.load(open(f"{env['SEGQ_HOME']}/cluster.json"))
    return open_redis(state["redis"]["url"], decode_responses=True), state


def test_summary_json_is_complete(segq_env, finished_sweep):
    job_id, _ = finished_sweep
    rows = json.loads(run_segq("summary", job_id, "--format", "json", env=segq_env, check=True).stdout)
    assert len(rows) == len(LRS)
    for row in rows:
        assert row["status"] == "finished" and row["arch"] == "unet" and row["epochs"] == EPOCHS
        assert 1 <= row["best_epoch"] <= EPOCHS
        for split in ("val", "test"):
            scores = row[split]
            for metric in ("miou", "pixel_acc", "mean_acc", "mdice", "fwiou"):
                assert 0.0 <= scores[metric] <= 1.0
            assert set(scores["per_class_iou"]) == {"background", "disk", "square", "triangle", "ring", "cross"}
        assert row["train_time_s"] > 0 and row["images_per_s"] > 0 and row["num_params"] > 1000
        assert row["params"]["train"]["lr"] in LRS
        assert row["protocol"]["ignore_index"] == 255 and row["protocol"]["resolution"] == "32x32"
        assert row["best_checkpoint"] and row["cost"]["device_hours"] > 0
        # The loss goes down.
        assert row["train_loss"][-1] < row["train_loss"][0]


def test_each_trial_has_a_tensorboard_run_with_its_summary_numbers(segq_env, finished_sweep):
    """The DDP path's runs (tests/test_tracking.py checks the in-trial path's, and MLflow's)."""
    from jobs.records import JobRecord
    from jobs.results.summary import trial_rows

    job_id, _ = finished_sweep
    client, _ = redis_of(segq_env)
    logdir = Path(JobRecord.load(client, job_id).tensorboard_dir)
    for row in trial_rows(client, job_id):
        val_miou = tensorboard_scalars(logdir / row["trial"], "val/miou")
        assert [step for step, _ in val_miou] == list(range(1, EPOCHS + 1))
        assert [value for _, value in val_miou] == pytest.approx(row["val_miou_curve"], abs=1e-6)
        train_loss = [value for _, value in tensorboard_scalars(logdir / row["trial"], "train/loss")]
        assert train_loss == pytest.approx(row["train_loss"], abs=1e-6)


def test_metric_events_land_in_redis(segq_env, finished_sweep):
    job_id, _ = finished_sweep
    client, _ = redis_of(segq_env)
    events = [json.loads(fields["data"]) for _, fields in client.xrange(keys.events(job_id))]
    metrics = [e for e in events if e["type"] == "metrics"]
    for trial in {e["trial"] for e in metrics}:
        mine = [(e["epoch"], e["split"]) for e in metrics if e["trial"] == trial]
        best_epoch = [e["best_epoch"] for e in events if e["type"] == "best" and e["trial"] == trial][-1]
        # train and val every epoch; test once, at the trial's end, with the best epoch's weights
        assert sorted(mine) == sorted([(epoch, split) for epoch in range(1, EPOCHS + 1) for split in ("train", "val")]
                                      + [(best_epoch, "test")])
    assert len(metrics) == len(LRS) * (EPOCHS * 2 + 1)
    record = client.hgetall(keys.job(job_id))
    assert record["status"] == "finished" and record["ray_submission_id"] == job_id


def test_job_is_in_the_ray_dashboard_under_its_segq_id(segq_env, finished_sweep):
    job_id, result = finished_sweep
    _, state = redis_of(segq_env)
    listing = subprocess.run([str(Path(sys.executable).with_name("ray")), "job", "list",
                              "--address", state["ray"]["dashboard_url"]],
                             env={**segq_env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=120)
    assert f"submission_id='{job_id}'" in listing.stdout
    shown = json.loads(run_segq("jobs", "show", job_id, env=segq_env, check=True).stdout)
    assert shown["status"] == "finished" and shown["dashboard_url"].endswith(job_id)
    assert "finished" in run_segq("jobs", "logs", job_id, env=segq_env, check=True).stdout
    assert job_id in run_segq("jobs", "list", env=segq_env, check=True).stdout


def test_checkpoint_holds_the_resolved_spec(segq_env, finished_sweep):
    from workers.checkpointing import load_checkpoint

    job_id, _ = finished_sweep
    rows = json.loads(run_segq("summary", job_id, "--format", "json", env=segq_env, check=True).stdout)
    state = load_checkpoint(rows[0]["best_checkpoint"])
    assert state["trial"]["name"] == rows[0]["trial"] and state["job_id"] == job_id
    assert state["dataset"]["class_names"][0] == "background" and state["epoch"] >= 1


def test_a_trial_starts_from_the_weights_it_is_given(segq_env, finished_sweep, tiny_dataset):
    """--load-from: the sweep's first trial (lr, seed, data) again, with one worker for one epoch, from
    that trial's best checkpoint: from trained weights its loss starts well below the sweep trial's
    first epoch, which started from the seeded random weights."""
    job_id, _ = finished_sweep
    rows = {row["params"]["train"]["lr"]: row for row in json.loads(
        run_segq("summary", job_id, "--format", "json", env=segq_env, check=True).stdout)}
    source = rows[LRS[0]]
    result = run_segq("submit", "sweep", "--data", str(tiny_dataset), "--arch", "unet", "--lr", str(LRS[0]),
                      "--epochs", "1", "--workers-per-trial", "1", "--batch-size", "4",
                      "--load-from", source["best_checkpoint"], "--wait", env=segq_env, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    loaded = json.loads(run_segq("summary", result.stdout.strip().splitlines()[-1], "--format", "json",
                                 env=segq_env, check=True).stdout)[0]
    assert loaded["status"] == "finished"
    assert loaded["train_loss"][0] < source["train_loss"][0] - 0.05, (loaded["train_loss"], source["train_loss"])


def eval_val_miou(env, checkpoint: str, data) -> float:
    result = run_segq("eval", checkpoint, "--data", str(data), "--format", "json", env=env, check=True)
    return json.loads(result.stdout)["scores"]["miou"]


def test_eval_on_the_named_checkpoint_gives_the_row(segq_env, finished_sweep, tiny_dataset):
    from workers.checkpointing import load_checkpoint

    job_id, _ = finished_sweep
    rows = json.loads(run_segq("summary", job_id, "--format", "json", env=segq_env, check=True).stdout)
    assert len(rows) == len(LRS)
    for row in rows:
        assert load_checkpoint(row["best_checkpoint"])["epoch"] == row["best_epoch"]
        miou = eval_val_miou(segq_env, row["best_checkpoint"], tiny_dataset)
        assert abs(miou - row["val"]["miou"]) <= 1e-6, (row["trial"], miou, row["val"]["miou"])


def best_checkpoint(env, job_id):
    rows = json.loads(run_segq("summary", job_id, "--format", "json", env=env, check=True).stdout)
    return max(rows, key=lambda row: row["val"]["miou"])["best_checkpoint"]


def test_predict_writes_masks_and_overlays(segq_env, finished_sweep, tmp_path):
    import numpy as np
    from PIL import Image

    from jobs.preparation.sources.synthetic import PALETTE, render_sample
    from jobs.checkpoints.inference import load_trained_model, predict_classes

    job_id, _ = finished_sweep
    checkpoint = best_checkpoint(segq_env, job_id)
    inputs = tmp_path / "in"
    inputs.mkdir()
    images = [render_sample(99, i, 48, 40)[0] for i in range(3)]  # not the training size: resized back
    for i, image in enumerate(images):
        Image.fromarray(image).save(inputs / f"scene{i}.png")
    out = tmp_path / "out"
    result = run_segq("predict", checkpoint, str(inputs), "--out", str(out), "--raw", env=segq_env, check=True)
    assert "wrote 3 prediction(s)" in result.stdout
    trained = load_trained_model(checkpoint)
    expected = predict_classes(trained, images)
    for i in range(3):
        mask = np.asarray(Image.open(out / f"scene{i}_mask.png"))
        classes = np.asarray(Image.open(out / f"scene{i}_classes.png"))
        assert mask.shape == (48, 40, 3) and (out / f"scene{i}_overlay.png").exists()
        assert np.array_equal(classes, expected[i])
        assert np.array_equal(mask, np.asarray(PALETTE, np.uint8)[classes])


@pytest.mark.parametrize("format", ["torchscript", "onnx"])
def test_export_gives_the_same_logits(segq_env, finished_sweep, tmp_path, format):
    import torch

    from jobs.checkpoints.inference import load_trained_model

    job_id, _ = finished_sweep
    checkpoint = best_checkpoint(segq_env, job_id)
    target = tmp_path / f"model.{format}"
    run_segq("export", checkpoint, "--format", format, "--out", str(target), env=segq_env, check=True)
    trained = load_trained_model(checkpoint)
    x = torch.randn(1, 3, trained.height, trained.width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = trained.model(x)
    if format == "torchscript":
        exported = torch.jit.load(str(target))(x)
        assert torch.allclose(exported, expected, atol=1e-6)
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        exported = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
        assert torch.allclose(exported, expected, atol=1e-4)


@pytest.fixture(scope="module")
def zoo_sweep(segq_env, tiny_dataset, tmp_path_factory):
    spec = tmp_path_factory.mktemp("zoo") / "zoo.yaml"
    spec.write_text(f"""
data: {tiny_dataset}
archs: [unet, segnet, fcn, deeplabv3plus, pspnet, vgg_unet]
models:
  unet: {{base_width: 8, depth: 3}}
  segnet: {{width: 0.125}}
  fcn: {{backbone: resnet18, width: 0.25}}
  deeplabv3plus: {{backbone: mobilenet_v2, width: 0.25}}
  pspnet: {{backbone: resnet18, width: 0.25}}
  vgg_unet: {{width: 0.125}}
train: {{epochs: 1, batch_size: 4}}
resources: {{workers_per_trial: 1}}
""")
    result = run_segq("submit", "sweep", str(spec), "--wait", env=segq_env, timeout=900)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_all_six_architectures_in_one_sweep(segq_env, zoo_sweep):
    rows = json.loads(run_segq("summary", zoo_sweep, "--format", "json", env=segq_env, check=True).stdout)
    assert sorted(row["arch"] for row in rows) == sorted(["unet", "segnet", "fcn", "deeplabv3plus", "pspnet", "vgg_unet"])
    assert all(row["status"] == "finished" and 0 <= row["val"]["miou"] <= 1 for row in rows)


def test_csv_summary_of_two_jobs_has_the_trials_of_both(segq_env, finished_sweep, zoo_sweep):
    import csv
    import io

    job_id, _ = finished_sweep
    result = run_segq("summary", job_id, zoo_sweep, "--format", "csv", env=segq_env, check=True)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {row["job"] for row in rows} == {job_id, zoo_sweep} and len(rows) == len(LRS) + 6
    assert all(row["val_miou"] and row["val_iou_background"] for row in rows)


def test_html_report_renders_with_every_image_loaded(segq_env, finished_sweep, tmp_path):
    from tests.report_checks import check_report

    job_id, _ = finished_sweep
    out = tmp_path / "report"
    result = run_segq("summary", job_id, "--format", "html", "--out", str(out), env=segq_env, check=True)
    assert str(out / "report.html") in result.stdout
    check_report(out, expected_plots=("learning_curves", "per_class_iou", "miou_vs_time", "predictions"))
