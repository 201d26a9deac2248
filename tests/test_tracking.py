"""Where a job's numbers go besides Redis, against the real things: TensorBoard event files read back
with TensorBoard's reader, a real `mlflow server` (SQLite, local artifacts) that the test starts
and stops, and a real Prometheus scraping the session cluster's metrics endpoints."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from cluster.local import free_port, prometheus_config
from tests.conftest import run_segq, wait_until
from tests.test_sweep import redis_of
from tests.tracking_checks import tensorboard_scalars
from jobs.records import JobRecord

pytestmark = pytest.mark.ray
EPOCHS = 3
LRS = "3e-3,1e-2"


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def answers(url: str) -> bool:
    try:
        http_get(url, timeout=2.0)
        return True
    except OSError:
        return False


def start_mlflow(directory: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    process = subprocess.Popen(
        [mlflow, "server", "--backend-store-uri", f"sqlite:///{directory / 'mlflow.db'}",
         "--artifacts-destination", str(directory / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=open(directory / "mlflow.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    return process, f"http://127.0.0.1:{port}"


def start_prometheus(segq_env: dict, directory: Path) -> tuple[subprocess.Popen, str]:
    """Prometheus on Ray's own configuration (the session's service discovery of every node's
    metrics endpoint), scraping every second instead of every ten."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed (make setup installs it)"
    config = yaml.safe_load(prometheus_config(Path(segq_env["SEGQ_HOME"]).resolve()).read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={directory / 'prometheus.yml'}", f"--storage.tsdb.path={directory / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=open(directory / "prometheus.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def submit(segq_env: dict, data: Path, mlflow_url: str) -> str:
    result = run_segq("submit", "sweep", "--data", str(data), "--arch", "unet", "--lr", LRS, "--epochs", str(EPOCHS),
                      "--batch-size", "8", "--mlflow", mlflow_url, env=segq_env, check=True)
    return result.stdout.strip().splitlines()[-1]


def wait_for_end(segq_env: dict, job_id: str) -> JobRecord:
    client, _ = redis_of(segq_env)
    return wait_until(lambda: (record := JobRecord.load(client, job_id)).status.is_final and record, 300)


def segq_series(prometheus_url: str, job_id: str) -> list[dict]:
    query = urllib.parse.urlencode({"match[]": f'{{__name__=~"ray_segq_.*", job_id="{job_id}"}}'})
    return json.loads(http_get(f"{prometheus_url}/api/v1/series?{query}"))["data"]


def trial_series(prometheus_url: str, job_id: str) -> list[dict]:
    """The job's series once a trial's own are among them."""
    series = segq_series(prometheus_url, job_id)
    return series if any(one["__name__"] == "ray_segq_trial_epoch" for one in series) else []


@pytest.fixture(scope="module")
def tracked(segq_env, tiny_dataset, tmp_path_factory):
    """A 2-trial sweep recorded to a running MLflow server while Prometheus scrapes the cluster and,
    at the same time, the same sweep against a tracking URI where the server is down (nothing
    listens on its port: a stopped server, as the client sees it)."""
    directory = tmp_path_factory.mktemp("tracking")
    env = {**segq_env, "SEGQ_MAX_RUNNING_JOBS": "2"}  # the two jobs run at once
    mlflow, mlflow_url = start_mlflow(directory)
    prometheus, prometheus_url = start_prometheus(segq_env, directory)
    try:
        offline_id = submit(env, tiny_dataset, f"http://127.0.0.1:{free_port()}")
        wait_until(lambda: answers(f"{mlflow_url}/health") and answers(f"{prometheus_url}/-/ready"), 120)
        job_id = submit(env, tiny_dataset, mlflow_url)
        series = wait_until(lambda: trial_series(prometheus_url, job_id), 120, interval=0.5)
        client, _ = redis_of(segq_env)
        status_while_seen = JobRecord.load(client, job_id).status.value
        record = wait_for_end(segq_env, job_id)
        series = segq_series(prometheus_url, job_id) or series
        runs = mlflow_runs(mlflow_url, job_id)
        offline = wait_for_end(segq_env, offline_id)
    finally:
        stop(prometheus)
        stop(mlflow)
    return {"job": job_id, "record": record, "series": series, "status_while_seen": status_while_seen,
            "runs": runs, "offline": offline_id, "offline_record": offline}


def mlflow_runs(url: str, job_id: str) -> dict[str, dict]:
    """trial -> {status, tags, val_miou: [(step, value)]}, read back through MLflow's client."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name(job_id)
    assert experiment is not None, f"no MLflow experiment {job_id}"
    runs = {}
    for run in client.search_runs([experiment.experiment_id]):
        history = client.get_metric_history(run.info.run_id, "val_miou")
        runs[run.info.run_name] = {"status": run.info.status, "tags": run.data.tags, "params": run.data.params,
                                   "val_miou": sorted((metric.step, metric.value) for metric in history)}
    return runs


def summary_rows(segq_env: dict, job_id: str) -> dict[str, dict]:
    """The rows `segq summary --format json` prints (jobs.results.summary.trial_rows)."""
    from jobs.results.aggregator import Aggregator
    from jobs.results.summary import trial_rows

    client, _ = redis_of(segq_env)
    Aggregator(client, job_id).drain()
    return {row["trial"]: row for row in trial_rows(client, job_id)}


def test_tensorboard_runs_hold_the_summarys_val_miou(segq_env, tracked):
    job_id = tracked["job"]
    printed = run_segq("tensorboard", job_id, "--no-start", env=segq_env, check=True)
    logdir = Path(printed.stdout.strip().splitlines()[0])
    assert logdir == Path(tracked["record"].tensorboard_dir) and logdir.is_dir()
    assert "tensorboard --logdir" in printed.stderr
    rows = summary_rows(segq_env, job_id)
    assert sorted(path.name for path in logdir.iterdir()) == sorted(rows)
    for trial, row in rows.items():
        written = tensorboard_scalars(logdir / trial, "val/miou")
        assert [step for step, _ in written] == list(range(1, EPOCHS + 1))
        assert [value for _, value in written] == pytest.approx(row["val_miou_curve"], abs=1e-6)


def test_mlflow_has_one_run_per_trial_with_the_summarys_numbers(segq_env, tracked):
    rows = summary_rows(segq_env, tracked["job"])
    runs = tracked["runs"]
    assert sorted(runs) == sorted(rows)
    for trial, row in rows.items():
        run = runs[trial]
        assert run["status"] == "FINISHED" and run["tags"]["segq.status"] == "finished"
        assert [step for step, _ in run["val_miou"]] == list(range(1, EPOCHS + 1))
        assert [value for _, value in run["val_miou"]] == pytest.approx(row["val_miou_curve"], abs=1e-9)
        assert float(run["params"]["train.lr"]) == row["params"]["train"]["lr"]
        assert run["tags"]["segq.best_checkpoint"] == row["best_checkpoint"]


def test_a_stopped_mlflow_server_changes_no_number_and_is_said_once(segq_env, tracked):
    assert tracked["offline_record"].status.value == "finished"
    online, offline = summary_rows(segq_env, tracked["job"]), summary_rows(segq_env, tracked["offline"])
    assert [row["val_miou_curve"] for row in online.values()] == [row["val_miou_curve"] for row in offline.values()]
    assert [row["train_loss"] for row in online.values()] == [row["train_loss"] for row in offline.values()]
    log = run_segq("jobs", "logs", tracked["offline"], env=segq_env, check=True).stdout
    said = [line for line in log.splitlines() if "MLflow" in line]
    assert len(said) == 1 and "not recorded" in said[0], log[-3000:]


def test_prometheus_reads_the_running_jobs_segq_series(segq_env, tracked):
    assert tracked["status_while_seen"] == "running"
    names = {series["__name__"] for series in tracked["series"]}
    assert {"ray_segq_trial_epoch", "ray_segq_trial_val_miou", "ray_segq_trial_best_val_miou",
            "ray_segq_trial_train_loss", "ray_segq_trial_images_per_s", "ray_segq_job_trials"} <= names
    trials = {series.get("trial") for series in tracked["series"] if series["__name__"] == "ray_segq_trial_epoch"}
    assert trials == set(summary_rows(segq_env, tracked["job"]))
    assert all(series["job_id"] == tracked["job"] for series in tracked["series"])
