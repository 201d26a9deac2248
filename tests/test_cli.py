"""The CLI as a user runs it: bad input gives one line naming the field, exit 1, nothing submitted."""
import json

import pytest
import redis

from jobs import keys
from tests.conftest import run_segq

pytestmark = pytest.mark.ray


def job_count(env):
    state = json.load(open(f"{env['SEGQ_HOME']}/cluster.json"))
    return redis.Redis.from_url(state["redis"]["url"]).zcard(keys.jobs_index())


@pytest.mark.parametrize("args, message", [
    (["--arch", "unet,bogusnet"], "archs: unknown architecture 'bogusnet'; valid:"),
    (["--arch", "unet", "--lr", "-0.1"], "train.lr: Input should be greater than 0"),
    (["--arch", "unet", "--lr", "fast"], "cannot read 'fast' as a comma-separated list of float"),
    (["--arch", "unet", "--workers-per-trial", "0"], "resources.workers_per_trial: Input should be greater"),
])
def test_bad_flags_are_refused_before_submission(segq_env, tiny_dataset, args, message):
    before = job_count(segq_env)
    result = run_segq("submit", "sweep", "--data", str(tiny_dataset), *args, env=segq_env)
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: ")
    assert job_count(segq_env) == before


def test_unknown_spec_field_names_file_and_field(segq_env, tiny_dataset, tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"data: {tiny_dataset}\narchs: [unet]\ntrain:\n  epochs: 1\n  learning_rate: 0.1\n")
    before = job_count(segq_env)
    result = run_segq("submit", "sweep", str(spec), env=segq_env)
    assert result.returncode == 1
    assert f"{spec}: train.learning_rate: unknown field" in result.stderr
    assert job_count(segq_env) == before


def test_missing_dataset_is_refused(segq_env, tmp_path):
    result = run_segq("submit", "sweep", "--data", str(tmp_path / "nothing"), "--arch", "unet", env=segq_env)
    assert result.returncode == 1 and "no manifest; prepare the dataset first" in result.stderr


def test_unknown_job(segq_env):
    result = run_segq("summary", "no-such-job", env=segq_env)
    assert result.returncode == 1 and "no such job: no-such-job" in result.stderr


def test_models_lists_the_registry():
    result = run_segq("models", "--num-classes", "6", check=True)
    assert "unet" in result.stdout and "parameters" in result.stdout
