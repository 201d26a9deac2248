"""One-way spec flow, without Ray: the CLI validates and expands a spec once, the job record keeps
the resolved trials, and the driver hands exactly those to Tune. The deployment settings travel
as one object: CLI -> the Ray job's env -> driver -> each trial's context."""
import json
import os
import sys

import pytest
from typer.testing import CliRunner

from cluster.cli import app
from cluster.connect import Endpoints
from jobs.lifecycle import driver
from jobs import keys
from jobs.deployment import Deployment
from jobs.exceptions import ClusterError
from jobs.records import JobRecord
from jobs.spec import Resources, SweepSpec
from tests.test_cli import dataset  # noqa: F401 (fixture)
from tests.test_watch import FakeJobs
from workers.target import Target
from workers.trial_spec import TrialContext, TrialSpec


class SubmittingJobs(FakeJobs):
    def __init__(self, *statuses):
        super().__init__(*statuses)
        self.submitted = []

    def submit_job(self, **kwargs):
        self.submitted.append(kwargs)


@pytest.fixture
def fake_cluster(redis_url, monkeypatch, tmp_path):
    """The embedded default as far as `segq submit` sees it: a real Redis, a fake Ray Jobs API."""
    for name in [name for name in os.environ if name.startswith("SEGQ_")]:
        monkeypatch.delenv(name)
    endpoints = Endpoints(redis_url=redis_url, dashboard_url="http://127.0.0.1:1", gcs_address="127.0.0.1:2")
    monkeypatch.setattr("cluster.cli.context.resolve", lambda settings, **kwargs: endpoints)
    jobs = SubmittingJobs("FAILED")  # the driver is dead before the wait begins
    monkeypatch.setattr("cluster.cli.submit.jobs_client", lambda url: jobs)
    expansions = []
    original = SweepSpec.trials
    monkeypatch.setattr(SweepSpec, "trials", lambda self: expansions.append(1) or original(self))
    return jobs, expansions, tmp_path / "home"


SPEC = """data: {data}
archs: [unet]
samples: 2
models:
  unet: {{base_width: {{choice: [8, 16, 32, 64]}}}}
train: {{lr: {{grid: [0.001, 0.003]}}, epochs: 2}}
"""


def test_submit_wait_expands_once_and_records_the_resolved_trials(fake_cluster, dataset, redis_url, redis_client,
                                                                    tmp_path):
    jobs, expansions, home = fake_cluster
    spec = tmp_path / "sweep.yaml"
    spec.write_text(SPEC.format(data=dataset))
    result = CliRunner().invoke(app, ["--home", str(home), "submit", "sweep", str(spec), "--wait"])
    assert expansions == [1]
    job_id = result.stdout.strip().splitlines()[-1]
    reason = f"the job's driver ended (Ray status FAILED); see `segq jobs logs {job_id}`"
    assert result.exit_code == 1 and result.stderr.strip().splitlines()[-1] == f"job {job_id} failed: {reason}"

    record = JobRecord.load(redis_client, job_id)
    expected = SweepSpec.trials(SweepSpec(data=str(dataset), archs=["unet"], samples=2,
                                          models={"unet": {"base_width": {"choice": [8, 16, 32, 64]}}},
                                          train={"lr": {"grid": [0.001, 0.003]}, "epochs": 2}))
    assert record.trials == [trial.model_dump(mode="json") for trial in expected]
    assert json.loads(redis_client.hget(keys.job(job_id), "trials")) == record.trials
    assert record.status.value == "failed" and record.error == reason

    [submitted] = jobs.submitted
    assert submitted["entrypoint"] == f"{sys.executable} -m jobs.lifecycle.driver {job_id}"
    assert submitted["runtime_env"]["env_vars"] == Deployment(
        redis_url=redis_url, storage=str(home.resolve() / "storage"), embedded=True).to_env()


def test_the_driver_runs_the_records_trials_as_they_are(monkeypatch):
    trials = [TrialSpec(name="000_unet_base_width=16", arch="unet", model={"base_width": 16}, train={"epochs": 3}),
              TrialSpec(name="001_fcn", arch="fcn", model={}, train={"lr": 0.01})]
    record = JobRecord(id="sweep-x", kind="sweep", trials=[t.model_dump(mode="json") for t in trials],
                       spec={"data": "/data", "archs": ["unet"], "resources": {"workers_per_trial": 2},
                             "metric": "val_mdice", "mode": "max"})
    deployment = Deployment(redis_url="redis://r:1/0", storage="/storage", embedded=False)
    calls = []
    monkeypatch.setattr(driver, "check_fits_cluster", lambda resources: None)
    monkeypatch.setattr(driver, "run_trials", lambda *args: calls.append(args) or [])
    monkeypatch.setattr(SweepSpec, "trials", lambda self: pytest.fail("the driver expanded the spec again"))
    assert driver.run(record, deployment) == []
    assert calls == [("sweep-x", "/data", trials, Resources(workers_per_trial=2),
                      Target(metric="val_mdice"), deployment, SweepSpec.model_validate(record.spec))]


def test_run_trials_gives_each_tune_trial_its_trial_context_and_resources(monkeypatch):
    from ray import tune

    from jobs.execution.sweep import run_trials

    captured = {}

    class Tuner:
        def __init__(self, trainable, param_space, tune_config, run_config):
            captured.update(param_space=param_space, run_config=run_config)

        def fit(self):
            return []

    monkeypatch.setattr(tune, "Tuner", Tuner)
    trials = [TrialSpec(name="000_unet", arch="unet", model={}, train={})]
    resources = Resources(cpus_per_worker=1)
    target = Target(metric="train_loss", mode="min")
    deployment = Deployment(redis_url="redis://r:1/0", storage="/storage", embedded=False)
    spec = SweepSpec(data="/data", archs=["unet"])
    assert run_trials("sweep-y", "/data", trials, resources, target, deployment, spec) == []
    space = captured["param_space"]
    assert space["trial"] == tune.grid_search([trials[0].model_dump()])
    assert space["context"] == TrialContext(job_id="sweep-y", data="/data", storage="/storage",
                                            redis_url="redis://r:1/0", events_stream=keys.events("sweep-y"),
                                            target=target).model_dump()
    assert space["resources"] == resources.model_dump()
    assert captured["run_config"].storage_path == "/storage/tune"


def test_deployment_travels_through_the_environment():
    deployment = Deployment(redis_url="redis://redis:6379/0", storage="s3://bucket/segq", embedded=False)
    env = deployment.to_env()
    assert env == {"SEGQ_REDIS_URL": "redis://redis:6379/0", "SEGQ_STORAGE": "s3://bucket/segq",
                   "SEGQ_EMBEDDED": "0", "RAY_AUTH_MODE": "token", "PYTHONUNBUFFERED": "1",
                   "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300"}
    assert Deployment.from_env(env) == deployment
    # Without a storage of its own, the submission leaves the cluster nodes' SEGQ_STORAGE in force.
    assert "SEGQ_STORAGE" not in Deployment(redis_url="redis://r/0", storage=None, embedded=False).to_env()
    with pytest.raises(ClusterError, match="SEGQ_STORAGE is not set in the job's environment"):
        Deployment.from_env({"SEGQ_REDIS_URL": "redis://r/0"})


def test_jobs_show_lists_the_resolved_trials(fake_cluster, dataset, monkeypatch):
    jobs, expansions, home = fake_cluster
    monkeypatch.setattr("cluster.cli.jobs.try_jobs_client", lambda url: jobs)
    submitted = CliRunner().invoke(app, ["--home", str(home), "submit", "sweep", "--data", str(dataset),
                                         "--arch", "unet,fcn", "--lr", "1e-3,3e-3", "--epochs", "2"])
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip().splitlines()[-1]

    shown = CliRunner().invoke(app, ["--home", str(home), "jobs", "show", job_id])
    data = json.loads(shown.stdout)
    assert [trial["name"] for trial in data["trials"]] == [
        "000_unet_lr=0.001", "001_unet_lr=0.003", "002_fcn_lr=0.001", "003_fcn_lr=0.003"]
    assert data["trials"][3]["arch"] == "fcn" and data["trials"][3]["train"]["lr"] == 0.003
    assert data["trials"][0]["model"] == {} and data["trials"][0]["train"]["epochs"] == 2
    assert data["status"] == "failed"  # the fake Ray says the driver is gone
    assert expansions == [1]

    table = CliRunner().invoke(app, ["--home", str(home), "jobs", "show", job_id, "--format", "table"])
    assert table.exit_code == 0 and "4 trials" in table.stdout
    assert "003_fcn_lr=0.003" in table.stdout and "batch_size=8 epochs=2 lr=0.003" in table.stdout
