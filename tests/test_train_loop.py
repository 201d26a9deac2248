"""The pieces of a trial's workers that need no Ray cluster: the best-epoch rule, the report Ray
ranks checkpoints by, the checkpoint layout, the choice of the best checkpoint, and a saliency
iteration's lifecycle in one process."""
import dataclasses
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from jobs.inference import load_trained_model
from jobs.prepare import prepare
from jobs.sources.synthetic import load_synthetic, synthetic_dataset
from jobs.sweep import best_checkpoint_path
from workers.checkpointing import CHECKPOINT_FILE, checkpoint_state, load_checkpoint, save_checkpoint
from workers.saliency import KeepMasks, read_meta
from workers.saliency_iterations import finish_iteration, last_finished_iteration, masks_dir, prepare_iteration
from workers.target import Target
from workers.train_loop import epoch_report, rankable, start_iteration, train_one_epoch
from workers.trial_run import Progress, build_trial_run, deciding_target
from workers.trial_spec import SaliencyParams, TrainParams, TrialContext, TrialSpec

MODEL = {"base_width": 4, "depth": 2}
MAX, MIN = Target(), Target(metric="train_loss", mode="min")


def decided(values, target=MAX):
    progress = Progress()
    for epoch, value in enumerate(values, start=1):
        progress.record_epoch(epoch, value, target)
    return progress.best_epoch, progress.best_metric, progress.epochs_without_improvement


def test_ties_keep_the_earliest_epoch_and_none_never_wins():
    assert decided([0.5, 0.7, 0.7, 0.6]) == (2, 0.7, 2)
    assert decided([None, 0.0, None]) == (2, 0.0, 1)  # 0.0 is a score
    assert decided([None, None]) == (1, None, 1)  # the first epoch stands when nothing scores
    assert decided([0.9, 0.4, 0.4], MIN) == (2, 0.4, 1)


def test_patience_counts_epochs_without_strict_improvement():
    progress = Progress()
    for epoch, value in enumerate([0.5, 0.5, 0.4], start=1):
        progress.record_epoch(epoch, value, MAX)
    assert progress.next_epoch == 4
    assert progress.patience_exhausted(2)
    assert not progress.patience_exhausted(3) and not progress.patience_exhausted(None)


def test_without_a_val_split_the_training_loss_decides():
    assert deciding_target(MAX, {"train": object(), "test": object()}) == MIN
    assert deciding_target(MAX, {"train": object(), "val": object()}) == MAX
    assert deciding_target(MIN, {"train": object()}) == MIN


def test_a_missing_score_ranks_below_every_real_one():
    assert rankable(0.0, "max") == 0.0
    assert rankable(None, "max") < 0.0 and rankable(None, "min") > 1e300


def test_the_report_always_holds_the_target_and_the_decision():
    run = SimpleNamespace(context=SimpleNamespace(target=MAX), num_params=10)
    state = SimpleNamespace(iteration=2)
    progress = SimpleNamespace(best_epoch=1)
    scores = {"test": {"miou": None, "mdice": 0.0, "pixel_acc": 0.5, "mean_acc": 0.5, "fwiou": 0.5}}
    report = epoch_report(run, state, progress, 3, {"loss": 1.5}, scores)
    assert report["val_miou"] == float("-inf")  # no val split: still there for Ray to rank by
    assert report["test_miou"] == float("-inf") and report["test_mdice"] == 0.0
    assert (report["epoch"], report["iteration"], report["best_epoch"], report["train_loss"]) == (3, 2, 1, 1.5)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "synthetic"
    prepare(synthetic_dataset(20, 1, (0.6, 0.2, 0.2)), load_synthetic, out, (16, 24), 8, "none", False,
            lambda tasks: [task() for task in tasks])
    return out


def context_for(data: Path, job_id: str = "saliency-test") -> TrialContext:
    return TrialContext(job_id=job_id, data=str(data), storage=str(data), redis_url="redis://unused",
                        events_stream="unused")


def test_the_checkpoint_loads_for_prediction_with_weights_only(dataset_dir, tmp_path):
    from seg_models.registry import build_model
    from workers.shards import read_manifest

    trial = TrialSpec(name="000_unet", arch="unet", model=MODEL, train=TrainParams())
    model = build_model("unet", 6, MODEL)
    state = checkpoint_state(model, trial, context_for(dataset_dir), read_manifest(dataset_dir), epoch=3,
                             progress={"iteration": 1, "next_epoch": 4, "best_metric": None, "best_epoch": 1,
                                       "epochs_without_improvement": 2})
    path = save_checkpoint(tmp_path, state)
    loaded = load_checkpoint(path)  # weights_only=True
    assert loaded["format"] == "segq-checkpoint" and loaded["trial"] == trial.model_dump()
    assert loaded["job_id"] == "saliency-test" and loaded["epoch"] == 3 and loaded["num_classes"] == 6
    trained = load_trained_model(path)
    assert trained.class_names == loaded["dataset"]["class_names"] and (trained.height, trained.width) == (16, 24)


def fake_result(epochs: list[tuple[int, float]], best_epoch: int, latest: int):
    checkpoints = {epoch: SimpleNamespace(path=f"/ckpt/{epoch}") for epoch, _ in epochs}
    return SimpleNamespace(metrics={"epoch": latest, "best_epoch": best_epoch},
                           best_checkpoints=[(checkpoints[e], {"epoch": e, "val_miou": v}) for e, v in epochs],
                           checkpoint=checkpoints.get(latest))


def test_the_best_checkpoint_is_the_published_best_epoch(tmp_path):
    trial = TrialSpec(name="000_unet", arch="unet", model=MODEL, train=TrainParams())
    context = context_for(tmp_path, "sweep-test")
    # Ray ranks the later of equal scores higher; the published decision (epoch 2) wins.
    assert best_checkpoint_path(fake_result([(3, 0.6), (2, 0.6), (4, 0.1)], 2, 4), trial, context) == "/ckpt/2"
    # The named epoch is gone (three epochs tied): the retained one the same rule ranks first.
    assert best_checkpoint_path(fake_result([(3, 0.6), (2, 0.5), (4, 0.6)], 1, 4), trial, context) == "/ckpt/3"
    saliency = trial.model_copy(update={"saliency": SaliencyParams(iterations=3)})
    assert best_checkpoint_path(fake_result([], 1, 1), saliency, context) == str(
        tmp_path / "keep_masks" / "sweep-test" / "000_unet" / "iteration-03" / CHECKPOINT_FILE)


class RecordingPublisher:
    def __init__(self):
        self.saliency = []

    def saliency_event(self, *args):
        self.saliency.append(args)


def test_a_saliency_iteration_in_one_process(dataset_dir):
    """Train one epoch, finish the iteration (model, masks, grid, event, meta.json), then prepare
    the next one from what was stored."""
    trial = TrialSpec(name="000_unet", arch="unet", model=MODEL, train=TrainParams(epochs=1, batch_size=4),
                      saliency=SaliencyParams(iterations=2, keep_percent=80.0))
    run = build_trial_run(trial, context_for(dataset_dir), 0, 1, torch.device("cpu"), lambda model: model)
    run = dataclasses.replace(run, publisher=RecordingPublisher())
    state = start_iteration(run, 1, None)
    assert state.keep_masks is None and state.train_data.keep_masks is None
    assert train_one_epoch(run, state, 1)["loss"] > 0
    finish_iteration(run, state, last=False)
    assert last_finished_iteration(run) == 1
    meta = read_meta(masks_dir(run, 1))
    assert meta["kept_fraction"] == 1.0 and meta["next_kept_fraction"] == pytest.approx(0.8, abs=0.01)
    [(iteration, kept, next_kept, checkpoint, samples)] = run.publisher.saliency
    assert (iteration, kept, next_kept, checkpoint) == (1, 1.0, meta["next_kept_fraction"], meta["checkpoint"])
    assert Path(samples).exists() and load_checkpoint(checkpoint)["iteration"] == 1
    masks = prepare_iteration(run, 2, resuming=False)
    assert isinstance(masks, KeepMasks) and len(masks) == len(run.splits["train"])
    assert start_iteration(run, 2, None).train_data.keep_masks is not None
    assert run.datasets["train"].keep_masks is None  # the trial-level datasets stay unmasked


def test_evaluation_needs_no_ray():
    code = "import sys; sys.modules['ray'] = None; import workers.evaluation, jobs.evaluate; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).parent.parent)
    assert result.stdout.strip() == "ok", result.stderr
