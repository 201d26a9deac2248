"""The same spec and seed give the same numbers: in one process, and for a whole 2-worker sweep
submitted twice on real Ray and Redis."""
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from tests.conftest import run_segq, prepare_synthetic_in_process
from workers.train_loop import start_iteration, train_one_epoch
from workers.trial_run import build_trial_run
from workers.trial_spec import TrainParams, TrialContext, TrialSpec

TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    return prepare_synthetic_in_process(tmp_path_factory.mktemp("data") / "synthetic", 16, (0.75, 0.25, 0.0))


def train_in_process(data, seed: int, epochs: int = 2) -> tuple[list[float], dict]:
    trial = TrialSpec(name="000_unet", arch="unet", model={"base_width": 4, "depth": 2},
                      train=TrainParams(epochs=epochs, batch_size=4, augment="strong", seed=seed))
    # Port 1 refuses at once: rank 0's events wait in the publisher's buffer, and nothing waits on them.
    context = TrialContext(job_id="repro", data=str(data), storage=str(data), redis_url="redis://127.0.0.1:1",
                           events_stream="unused")
    run = build_trial_run(trial, context, 0, 1, torch.device("cpu"), lambda model: model)
    state = start_iteration(run, 1, None)
    losses = [train_one_epoch(run, state, epoch)["loss"] for epoch in range(1, epochs + 1)]
    return losses, run.core.state_dict()


def test_one_process_trains_the_same_twice(dataset_dir):
    torch.manual_seed(12345)  # whatever the global state before: the trial seeds what it draws
    losses, weights = train_in_process(dataset_dir, seed=3)
    torch.manual_seed(54321)
    again, weights_again = train_in_process(dataset_dir, seed=3)
    assert losses == again
    assert all(torch.equal(weights[name], weights_again[name]) for name in weights)
    other, _ = train_in_process(dataset_dir, seed=4)
    assert other != losses


def submit_sweep(env, spec) -> list[dict]:
    result = run_segq("submit", "sweep", str(spec), "--wait", env=env, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    job_id = result.stdout.strip().splitlines()[-1]
    rows = json.loads(run_segq("summary", job_id, "--format", "json", env=env, check=True).stdout)
    return sorted(rows, key=lambda row: row["trial"])


def curves(rows: list[dict]) -> dict[str, tuple[list, list]]:
    return {row["trial"]: (row["train_loss"], row["val_miou_curve"]) for row in rows}


@pytest.mark.ray
def test_the_same_two_worker_sweep_gives_the_same_numbers_twice(segq_env, tiny_dataset, tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"""
data: {tiny_dataset}
archs: [unet]
models: {{unet: {{base_width: 4, depth: 2}}}}
train: {{epochs: 2, batch_size: 2, augment: basic, seed: 11, lr: 0.01}}
resources: {{workers_per_trial: 2, cpus_per_worker: 0.5}}
""")
    # Both at once: the two jobs' trials also share the cluster differently from run to run.
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: curves(submit_sweep(segq_env, spec)), range(2))
    assert len(first) == 1 and first.keys() == second.keys()
    for trial, (losses, mious) in first.items():
        again_losses, again_mious = second[trial]
        assert len(losses) == len(mious) == 2 and None not in mious
        assert again_losses == pytest.approx(losses, abs=TOLERANCE, rel=0)
        assert again_mious == pytest.approx(mious, abs=TOLERANCE, rel=0)
    # The comparison means something: the models learn, so their scores move from epoch to epoch.
    assert all(mious[0] != mious[1] for _, mious in first.values())
