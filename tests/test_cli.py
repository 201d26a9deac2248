"""The CLI as a user runs it: bad input gives one line naming the field, exit 1, nothing submitted.

Validation (flags, spec file, the dataset's manifest) happens before any connection, so these
tests run `cluster.cli.app` in-process with no Redis and no Ray: anything that would connect
is replaced by a trap that records the attempt.
"""
import json
import os

import pytest
from typer.testing import CliRunner

from cluster.cli import app
from workers.shards import FORMAT_NAME, FORMAT_VERSION, MANIFEST


@pytest.fixture
def no_cluster(monkeypatch, tmp_path):
    """A fresh SEGQ_HOME with nothing running, and traps on every way to reach a cluster."""
    for name in [name for name in os.environ if name.startswith("SEGQ_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SEGQ_HOME", str(tmp_path / "home"))
    attempts = []

    def trap(name):
        def connect(*args, **kwargs):
            attempts.append(name)
            raise RuntimeError(f"{name} called before validation finished")
        return connect

    monkeypatch.setattr("cluster.cli.context.resolve", trap("resolve"))
    monkeypatch.setattr("cluster.local.up", trap("local.up"))
    for module in ("cluster.cli.submit", "cluster.cli.watch", "cluster.connect"):
        monkeypatch.setattr(f"{module}.connect_redis", trap("connect_redis"))
    monkeypatch.setattr("cluster.cli.submit.jobs_client", trap("jobs_client"))
    monkeypatch.setattr("cluster.connect.init_ray", trap("init_ray"))
    return attempts


@pytest.fixture
def dataset(tmp_path):
    """A folder that passes the CLI's dataset check (a manifest; no shards are read before submission)."""
    root = tmp_path / "data"
    root.mkdir()
    (root / MANIFEST).write_text(json.dumps({"format": FORMAT_NAME, "format_version": FORMAT_VERSION}))
    return root


def segq(*args):
    return CliRunner().invoke(app, list(args))


def assert_refused(result, message, attempts):
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert attempts == []  # nothing was started, nothing connected, nothing submitted


@pytest.mark.parametrize("args, message", [
    (["--arch", "unet,bogusnet"], "archs: unknown architecture 'bogusnet'; valid:"),
    (["--arch", "unet", "--lr", "-0.1"], "train.lr: Input should be greater than 0"),
    (["--arch", "unet", "--lr", "1e-3,-2"], "train.lr: Input should be greater than 0"),
    (["--arch", "unet", "--lr", "fast"], "cannot read 'fast' as a comma-separated list of float"),
    (["--arch", "unet", "--workers-per-trial", "0"], "resources.workers_per_trial: 0 workers: a trial needs at least 1"),
    (["--arch", "unet", "--epochs", "0"], "train.epochs: Input should be greater than or equal to 1"),
    ([], "archs: missing (pass --arch NAME[,NAME] or set archs: in the spec file)"),
])
def test_bad_sweep_flags_are_refused_before_submission(no_cluster, dataset, args, message):
    assert_refused(segq("submit", "sweep", "--data", str(dataset), *args, "--wait"), message, no_cluster)


@pytest.mark.parametrize("args, message", [
    (["--keep-percent", "120"], "keep_percent: Input should be less than 100"),
    (["--relevance", "loudest"], "relevance: Input should be 'softmax_foreground' or 'random'"),
    (["--fill", "sideways"], "fill: Input should be 'zero', 'blur' or 'mean'"),
    (["--iterations", "0"], "iterations: Input should be greater than or equal to 1"),
])
def test_bad_saliency_flags_are_refused_before_submission(no_cluster, dataset, args, message):
    result = segq("submit", "saliency", "--data", str(dataset), "--arch", "unet", *args)
    assert_refused(result, message, no_cluster)


def test_missing_data_flag_is_refused(no_cluster):
    assert_refused(segq("submit", "sweep", "--arch", "unet"), "data: missing (pass --data DIR", no_cluster)


@pytest.mark.parametrize("body, message", [
    ("archs: [unet]\ntrain:\n  epochs: 1\n  learning_rate: 0.1\n", "train.learning_rate: unknown field"),
    ("archs: [unet]\nmetric: val_accuracy\n", "metric: unknown metric 'val_accuracy'; valid: val_miou"),
    ("archs: [unet]\nmodels:\n  segnet: {width: 0.5}\n",
     "models.segnet: options given for an architecture not in archs"),
    ("archs: [unet]\nmodels:\n  unet: {depth: {grid: [3, deep]}}\n",
     "models.unet.depth: Input should be a valid integer"),
])
def test_bad_spec_file_names_file_and_field(no_cluster, dataset, tmp_path, body, message):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"data: {dataset}\n{body}")
    assert_refused(segq("submit", "sweep", str(spec)), f"{spec}: {message}", no_cluster)


def test_unreadable_spec_file_is_refused(no_cluster, tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text("data: [unclosed\n")
    assert_refused(segq("submit", "sweep", str(spec)), f"{spec}: not valid YAML", no_cluster)
    assert_refused(segq("submit", "sweep", str(tmp_path / "none.yaml")), "none.yaml: no such spec file", no_cluster)


def test_missing_dataset_is_refused(no_cluster, tmp_path):
    result = segq("submit", "sweep", "--data", str(tmp_path / "nothing"), "--arch", "unet")
    assert_refused(result, "no manifest; prepare the dataset first", no_cluster)


def test_a_remote_cluster_checks_no_local_path(no_cluster, tmp_path):
    """With --address the data path is the cluster's: validation passes and submission connects."""
    result = segq("--address", "http://head:8265", "--redis-url", "redis://head:6379/0",
                  "submit", "sweep", "--data", str(tmp_path / "nothing"), "--arch", "unet")
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)
    assert no_cluster == ["resolve"]


def test_bad_prepare_layout_is_refused_before_any_task(no_cluster, tmp_path):
    from tests.test_source_folder import write_folder

    root = tmp_path / "set"
    write_folder(root, count=2)
    result = segq("data", "prepare", "folder", str(root / "images"), "--out", str(tmp_path / "out"))
    assert_refused(result, f"{root / 'images'}: no images/ and no masks/ folder; expected ROOT/images/ and "
                           f"ROOT/masks/ with matching file names, and ROOT/classes.txt; {root / 'images'} is a "
                           f"folder inside the dataset: point at {root}", no_cluster)
    assert not (tmp_path / "out").exists()


def test_unknown_prepare_source_is_refused(no_cluster, tmp_path):
    result = segq("data", "prepare", "kitti", str(tmp_path), "--out", str(tmp_path / "out"))
    assert_refused(result, "source 'kitti': unknown; available:", no_cluster)


def test_unknown_job(redis_url, monkeypatch, tmp_path):
    monkeypatch.setenv("SEGQ_HOME", str(tmp_path / "home"))
    result = segq("--redis-url", redis_url, "watch", "no-such-job")
    assert result.exit_code == 1 and result.stderr.strip() == "error: no such job: no-such-job"


def test_models_lists_the_registry():
    """Every architecture of the registry, each with its backbones, and parameter counts that are
    those of the models built here for 6 classes (spot-checked on one row per kind of model)."""
    from seg_models.base import count_parameters
    from seg_models.registry import ARCHITECTURES, build_model

    result = segq("models", "--num-classes", "6")
    assert result.exit_code == 0, result.output
    rows, arch = {}, None
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) == 5 and cells[2].replace(",", "").isdigit():
            arch = cells[0] or arch
            rows[(arch, cells[1])] = int(cells[2].replace(",", ""))
    assert {name for name, _ in rows} == set(ARCHITECTURES)
    for arch, backbone in (("unet", "-"), ("segnet", "-"), ("fcn", "resnet18"), ("deeplabv3plus", "mobilenet_v2"),
                           ("pspnet", "resnet50"), ("vgg_unet", "vgg16_bn")):
        model = build_model(arch, 6, {} if backbone == "-" else {"backbone": backbone})
        assert rows[(arch, backbone)] == count_parameters(model), (arch, backbone)


def cityscapes_like(tmp_path, background):
    """A manifest of train_ids data: 19 classes, none of them background."""
    root = tmp_path / "cityscapes"
    root.mkdir()
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "source": "cityscapes",
                "label_mode": "train_ids", "num_classes": 19, "background_classes": background}
    (root / MANIFEST).write_text(json.dumps(manifest))
    return root


def test_saliency_on_data_without_a_background_class_is_refused(no_cluster, tmp_path):
    data = cityscapes_like(tmp_path, [])
    result = segq("submit", "saliency", "--data", str(data), "--arch", "unet", "--iterations", "2")
    assert_refused(result, "background_classes: ", no_cluster)
    assert "has no background class" in result.stderr and "set background_classes" in result.stderr


@pytest.mark.parametrize("background, message", [
    ("[]", "background_classes: an empty list makes every class relevant"),
    ("[19]", "background_classes: class 19 is not one of the dataset's 19 classes"),
])
def test_bad_background_classes_are_refused(no_cluster, tmp_path, background, message):
    spec = tmp_path / "saliency.yaml"
    spec.write_text(f"data: {cityscapes_like(tmp_path, [0])}\narchs: [unet]\nbackground_classes: {background}\n")
    assert_refused(segq("submit", "saliency", str(spec)), message, no_cluster)


def dry_run_lrs(result) -> list[float]:
    """The learning rates a dry run prints, at the full precision the trials keep."""
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    return [float(part.removeprefix("lr=")) for line in lines[:-1] for part in line.split() if part.startswith("lr=")]


def test_random_search_dry_run_gives_the_same_trials_twice(no_cluster, dataset, tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text("search_seed: 11\ntrain:\n  lr: {loguniform: [1.0e-4, 1.0e-2]}\n  epochs: 1\n")
    args = ["submit", "sweep", str(spec), "--data", str(dataset), "--arch", "unet",
            "--search", "random", "--samples", "4", "--dry-run"]
    first, second = segq(*args), segq(*args)
    lrs = dry_run_lrs(first)
    assert len(lrs) == 4 and len(set(lrs)) == 4 and all(1e-4 <= lr <= 1e-2 for lr in lrs)
    assert dry_run_lrs(second) == lrs and first.stdout == second.stdout
    spec.write_text(spec.read_text().replace("search_seed: 11", "search_seed: 12"))
    assert dry_run_lrs(segq(*args)) != lrs
    assert no_cluster == []  # no Redis, no Ray: nothing was submitted


def test_dry_run_lists_trials_and_resources_and_submits_nothing(no_cluster, dataset):
    result = segq("submit", "sweep", "--data", str(dataset), "--arch", "unet,fcn", "--lr", "1e-3,3e-3",
                  "--workers-per-trial", "2", "--gpus-per-worker", "1", "--dry-run", "--wait")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[:4] == ["000_unet_lr=0.001  unet  lr=0.001", "001_unet_lr=0.003  unet  lr=0.003",
                         "002_fcn_lr=0.001  fcn  lr=0.001", "003_fcn_lr=0.003  fcn  lr=0.003"]
    assert lines[4] == ("resources: 4 trials x 2 worker(s) x (0.5 CPU, 1 GPU) = 4 CPU, 8 GPU in all; "
                        "each trial trains through Ray Train (2 worker(s) of their own)")
    assert "nothing submitted" in result.stderr
    assert no_cluster == []


def test_saliency_dry_run_submits_nothing(no_cluster, tmp_path):
    result = segq("submit", "saliency", "--data", str(cityscapes_like(tmp_path, [0])), "--arch", "unet",
                  "--keep-percent", "50,90", "--dry-run")
    assert result.exit_code == 0, result.output
    assert [line.split()[-1] for line in result.stdout.splitlines()[:2]] == ["keep_percent=50.0", "keep_percent=90.0"]
    assert no_cluster == []


@pytest.mark.parametrize("args, message", [
    (["--search", "bayes"], "search: Input should be 'grid', 'random' or 'optuna'"),
    (["--samples", "0"], "samples: Input should be greater than or equal to 1"),
    (["--scheduler", "median"], "scheduler.kind: Input should be 'fifo', 'asha', 'hyperband' or 'pbt'"),
    (["--max-concurrent", "0"], "resources.max_concurrent_trials: Input should be greater than or equal to 1"),
])
def test_bad_search_flags_are_refused(no_cluster, dataset, args, message):
    result = segq("submit", "sweep", "--data", str(dataset), "--arch", "unet", *args, "--dry-run")
    assert_refused(result, message, no_cluster)
