"""The pieces of a trial's workers that need no Ray cluster: the best-epoch rule, the report Ray
keeps checkpoints by, retention under ties (Ray Train's own checkpoint manager), the checkpoint
layout, the choice of the best checkpoint, and a saliency iteration's lifecycle in one process."""
import asyncio
import dataclasses
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from jobs.checkpoints.inference import load_trained_model
from jobs.execution.sweep import best_checkpoint_path, checkpoint_config
from jobs.execution.tuning import CheckpointRetention, with_best_checkpoint
from seg_models.metrics import SCORE_NAMES
from workers.checkpointing import (CHECKPOINT_FILE, RETENTION_SCORE, BestWeights, checkpoint_state, load_checkpoint,
                                   save_checkpoint)
from workers.saliency import KeepMasks, read_meta
from workers.saliency_iterations import (compute_keep_masks, finish_iteration, last_finished_iteration, masks_dir,
                                         prepare_iteration)
from workers.target import Target
from workers.reporting import FINAL_REPORT, epoch_report, rankable
from workers.train_loop import start_iteration, train_epochs, train_one_epoch
from workers.trial_run import Progress, build_trial_run, deciding_target
from workers.events import decode_event
from workers.trial_spec import SaliencyParams, TrainParams, TrialContext, TrialSpec
from tests.conftest import prepare_synthetic_in_process

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
    # no val split: the training loss decides the trial's best epoch
    run = SimpleNamespace(context=SimpleNamespace(target=MAX), target=Target(metric="train_loss", mode="min"),
                          num_params=10)
    state = SimpleNamespace(iteration=2)
    progress = SimpleNamespace(best_epoch=1, best_metric=1.2)
    scores = {"test": {"miou": None, "mdice": 0.0, "pixel_acc": 0.5, "mean_acc": 0.5, "fwiou": 0.5}}
    report = epoch_report(run, state, progress, 3, {"loss": 1.5, "lr": 1e-3}, scores, final=True)
    assert report["val_miou"] == float("-inf")  # no val split: still there for Tune
    assert report["test_miou"] == float("-inf") and report["test_mdice"] == 0.0
    assert (report["epoch"], report["iteration"], report["best_epoch"], report["train_loss"]) == (3, 2, 1, 1.5)
    assert report[RETENTION_SCORE] == 0.0 and report[FINAL_REPORT] is True and report["lr"] == 1e-3
    assert epoch_report(run, state, progress, 1, {"loss": 1.5, "lr": 1e-3}, scores, final=False)[RETENTION_SCORE] == 1.0


def test_the_final_report_carries_the_best_value_of_the_target():
    """What a search algorithm (Optuna) learns from a trial's last report: its best epoch's value."""
    run = SimpleNamespace(context=SimpleNamespace(target=MAX), target=MAX, num_params=10)
    state, progress = SimpleNamespace(iteration=1), SimpleNamespace(best_epoch=1, best_metric=0.7)
    scores = {"val": {"miou": 0.4, "mdice": 0.5, "pixel_acc": 0.5, "mean_acc": 0.5, "fwiou": 0.5}}
    assert epoch_report(run, state, progress, 3, {"loss": 1.0, "lr": 1e-3}, scores, final=False)["val_miou"] == 0.4
    assert epoch_report(run, state, progress, 3, {"loss": 1.0, "lr": 1e-3}, scores, final=True)["val_miou"] == 0.7


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    return prepare_synthetic_in_process(tmp_path_factory.mktemp("data") / "synthetic", 20, (0.6, 0.2, 0.2))


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


def split_scores(miou: float | None) -> dict:
    return {name: miou if name == "miou" else 0.5 for name in SCORE_NAMES}


def retain_with_ray(storage: Path, values: list[float | None], target: Target, splits=("val",)):
    """Report one epoch per value to Ray Train's own checkpoint manager, configured and scored as a
    trial's are; return the published decision, the epochs whose checkpoints survive, and the last
    report as the trial function gets it (each epoch forwarded with where its checkpoint went)."""
    from ray.train import Checkpoint
    from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import CheckpointManager
    from ray.train.v2._internal.execution.storage import StorageContext
    from ray.train.v2._internal.execution.training_report import _TrainingReport

    run = SimpleNamespace(context=SimpleNamespace(target=MAX), num_params=10)
    progress, reports, checkpoints = Progress(), [], {}
    in_trial, kept_in_trial = CheckpointRetention(keep_all=False), []  # the same reports, as a trial in its Tune trial keeps them

    async def report_epochs():  # the manager notifies its listeners on the running event loop
        context = StorageContext(str(storage), "trial")
        manager = CheckpointManager(checkpoint_config(), context)
        for epoch, value in enumerate(values, start=1):
            train = {"loss": value if target.split == "train" else 1.0, "lr": 1e-3}
            progress.record_epoch(epoch, target.value_of({"train": train, "val": {"miou": value}}), target)
            reports.append(epoch_report(run, SimpleNamespace(iteration=1), progress, epoch, train,
                                        {split: split_scores(value) for split in splits}, final=False))
            directory = Path(context.build_checkpoint_path_from_name(f"epoch-{epoch}"))
            directory.mkdir(parents=True)
            manager.register_checkpoint(_TrainingReport(Checkpoint(str(directory)), reports[-1], False))
            dropped = in_trial.add(f"epoch-{epoch}", reports[-1][RETENTION_SCORE])
            kept_in_trial[:] = [name for name in [*kept_in_trial, f"epoch-{epoch}"] if name not in dropped]
            forwarded = with_best_checkpoint({"metrics": dict(reports[-1]), "checkpoint": str(directory)}, checkpoints)
        return forwarded

    last_report = asyncio.run(report_epochs())
    kept = sorted(int(path.name.split("-")[1]) for path in (storage / "trial").glob("epoch-*"))
    assert sorted(int(name.split("-")[1]) for name in kept_in_trial) == kept  # the same rule on both paths
    return progress.best_epoch, kept, last_report


@pytest.mark.parametrize("values, target, splits, best", [
    ([0.6, 0.6, 0.6, 0.2], MAX, ("val",), 1),  # tied: the earliest epoch, which Ray would rank last
    ([0.1, 0.6, 0.6, 0.6, 0.6], MAX, ("val",), 2),
    ([None, 0.0, 0.0, None], MAX, ("val",), 2),  # 0.0 is a score, None is none
    ([0.3, 0.3, 0.3], MAX, ("val",), 1),  # the latest is not the best
    ([0.1, 0.2, 0.3], MAX, ("val",), 3),  # the best is the latest: one checkpoint
    ([0.9, 0.5, 0.5, 0.7], MIN, ("test",), 2),  # no val split: the training loss decides
])
def test_retention_keeps_the_published_best_epoch_whatever_the_ties(tmp_path, values, target, splits, best):
    decided, kept, last_report = retain_with_ray(tmp_path, values, target, splits)
    assert decided == best and kept == sorted({best, len(values)})
    trial = TrialSpec(name="000_unet", arch="unet", model=MODEL, train=TrainParams())
    named = best_checkpoint_path(last_report, trial, context_for(tmp_path, "sweep-test"))
    assert named == str(tmp_path / "trial" / f"epoch-{best}") and Path(named).is_dir()


def test_a_saliency_trial_names_its_last_iteration_model(tmp_path):
    trial = TrialSpec(name="000_unet", arch="unet", model=MODEL, train=TrainParams(),
                      saliency=SaliencyParams(iterations=3))
    last_report = {"epoch": 1, "iteration": 3, "best_epoch": 1, "best_checkpoint": None}
    assert best_checkpoint_path(last_report, trial, context_for(tmp_path, "sweep-test")) == str(
        tmp_path / "keep_masks" / "sweep-test" / "000_unet" / "iteration-03" / CHECKPOINT_FILE)


class RecordingPublisher:
    def __init__(self):
        self.saliency, self.published = [], []

    def saliency_event(self, *args):
        self.saliency.append(args)

    def publish_encoded(self, encoded: list[str]) -> None:
        self.published.append(list(encoded))


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
    best = BestWeights()
    best.take(run.core, 1)
    finish_iteration(run, state, best, last=False)
    assert last_finished_iteration(run) == 1
    meta = read_meta(masks_dir(run, 1))
    assert meta["kept_fraction"] == 1.0 and meta["next_kept_fraction"] == pytest.approx(0.8, abs=0.01)
    [(iteration, kept, next_kept, checkpoint, samples)] = run.publisher.saliency
    assert (iteration, kept, next_kept, checkpoint) == (1, 1.0, meta["next_kept_fraction"], meta["checkpoint"])
    assert Path(samples).exists() and load_checkpoint(checkpoint)["iteration"] == 1
    assert load_checkpoint(checkpoint)["epoch"] == 1
    masks = prepare_iteration(run, 2, resuming=False)
    assert isinstance(masks, KeepMasks) and len(masks) == len(run.splits["train"])
    assert start_iteration(run, 2, None).train_data.keep_masks is not None
    assert run.datasets["train"].keep_masks is None  # the trial-level datasets stay unmasked


def test_evaluation_needs_no_ray():
    code = "import sys; sys.modules['ray'] = None; import workers.evaluation, jobs.checkpoints.evaluate; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).parent.parent)
    assert result.stdout.strip() == "ok", result.stderr


def same_weights(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[name].cpu(), second[name].cpu()) for name in first)


def train_scripted_epochs(run, monkeypatch, val_mious: list[float]) -> tuple:
    """Train one epoch per value, with the value as the epoch's val mIoU; return what each epoch
    reported to Ray Train (its metrics and its loaded checkpoint)."""
    import workers.train_loop

    scripted = {"val": iter(val_mious), "test": iter(val_mious)}
    monkeypatch.setattr(workers.train_loop, "evaluate",
                        lambda model, dataset, *args: split_scores(next(scripted[dataset.split.split])))
    channel = RecordingChannel()
    run = dataclasses.replace(run, channel=channel)
    state, progress, best = start_iteration(run, 1, None), Progress(), BestWeights()
    train_epochs(run, state, progress, best)
    return state, progress, best, channel.reported


class RecordingChannel:
    """A trial's channel (workers.trial_channel) that keeps each report and its loaded checkpoint."""

    rank, world_size, device = 0, 1, torch.device("cpu")

    def __init__(self):
        self.reported, self.published_after = [], []

    def report(self, metrics: dict, directory: Path | None, publish=lambda: None) -> None:
        self.reported.append((metrics, load_checkpoint(directory) if directory else None))
        publish()
        self.published_after.append(len(self.reported))


def test_a_saliency_iteration_ends_with_its_best_epoch(dataset_dir, monkeypatch):
    """Three epochs whose val mIoU ties and then drops: epoch 1 is the best. The stored model, the
    keep-masks, the next iteration's start and a resumed iteration's end are all epoch 1's model."""
    trial = TrialSpec(name="000_unet", arch="unet", model=MODEL, train=TrainParams(epochs=3, batch_size=4),
                      saliency=SaliencyParams(iterations=2, keep_percent=80.0))
    run = build_trial_run(trial, context_for(dataset_dir, "saliency-best"), 0, 1, torch.device("cpu"), lambda m: m)
    run = dataclasses.replace(run, publisher=RecordingPublisher())
    state, progress, best, reported = train_scripted_epochs(run, monkeypatch, [0.5, 0.5, 0.4])
    assert progress.best_epoch == best.epoch == 1
    assert [metrics[RETENTION_SCORE] for metrics, _ in reported] == [1.0, 0.0, 0.0]
    first, last = reported[0][1], reported[-1][1]
    assert not same_weights(first["model"], last["model"])
    # A restart after the last epoch still ends the iteration with epoch 1's model.
    assert first["best_model"] is None and same_weights(last["best_model"], first["model"])
    resumed = BestWeights.from_checkpoint(last)
    assert resumed.epoch == 1 and same_weights(resumed.weights, first["model"])
    finish_iteration(run, state, best, last=False)
    stored = load_checkpoint(masks_dir(run, 1))
    assert stored["epoch"] == 1 and same_weights(stored["model"], first["model"])
    assert same_weights(run.core.state_dict(), first["model"])  # what iteration 2 starts from
    # The keep-masks are epoch 1's: derived again from it they are the same, from the last model not.
    height, width = run.manifest["image_size"]
    stored_masks = KeepMasks(masks_dir(run, 1), height, width)
    for name, weights in (("best", first["model"]), ("last", last["model"])):
        run.core.load_state_dict(weights)
        compute_keep_masks(run, state, dataset_dir / name)
    rows = range(len(stored_masks))
    again = KeepMasks(dataset_dir / "best", height, width)
    assert all((stored_masks.get(row) == again.get(row)).all() for row in rows)
    other = KeepMasks(dataset_dir / "last", height, width)
    assert not all((stored_masks.get(row) == other.get(row)).all() for row in rows)


def test_an_early_stop_checkpoint_trains_no_more_epochs(dataset_dir, monkeypatch):
    """Patience runs out at epoch 2 of 5: that checkpoint says the iteration is over, so a restart
    from it trains nothing more (and the loop then reports its last report again)."""
    trial = TrialSpec(name="000_unet", arch="unet", model=MODEL,
                      train=TrainParams(epochs=5, batch_size=4, early_stop_patience=1))
    run = build_trial_run(trial, context_for(dataset_dir, "early-stop"), 0, 1, torch.device("cpu"), lambda m: m)
    run = dataclasses.replace(run, publisher=RecordingPublisher())
    _, progress, _, reported = train_scripted_epochs(run, monkeypatch, [0.5, 0.4, 0.3])
    assert len(reported) == 2 and reported[-1][0][FINAL_REPORT]
    saved = reported[-1][1]
    assert saved["progress"]["next_epoch"] == 6 and "scaler" in saved
    resumed = Progress(**saved["progress"])
    assert train_epochs(run, start_iteration(run, 1, saved), resumed, BestWeights.from_checkpoint(saved)) == 0


def test_a_taken_over_checkpoint_trains_under_the_mutated_hyperparameters(dataset_dir, monkeypatch):
    """PBT hands trial B trial A's checkpoint under a mutated lr, weight decay and momentum: after the
    optimizer state is loaded every group holds B's values, and B's best epoch starts afresh."""
    from workers.train_loop import taken_over

    donor = TrialSpec(name="000_unet", arch="unet", model=MODEL,
                      train=TrainParams(epochs=3, batch_size=4, optimizer="sgd", lr=0.01, weight_decay=1e-4,
                                        momentum=0.9, scheduler="cosine"))
    run = build_trial_run(donor, context_for(dataset_dir, "pbt-donor"), 0, 1, torch.device("cpu"), lambda m: m)
    run = dataclasses.replace(run, publisher=RecordingPublisher())
    _, _, _, reported = train_scripted_epochs(run, monkeypatch, [0.5, 0.6, 0.4])
    saved = reported[1][1]  # epoch 2, its own best
    mutated = donor.model_copy(update={"name": "001_unet", "train": donor.train.model_copy(
        update={"lr": 0.012, "weight_decay": 3e-4, "momentum": 0.7})})
    exploiter = build_trial_run(mutated, context_for(dataset_dir, "pbt-donor"), 0, 1, torch.device("cpu"), lambda m: m)
    handed = taken_over(saved)
    state = start_iteration(exploiter, 1, handed)
    scheduled = saved["optimizer"]["param_groups"][0]["lr"]  # the donor's lr where its cosine schedule stands
    for group in state.optimizer.param_groups:
        assert group["lr"] == pytest.approx(scheduled * 0.012 / 0.01, rel=1e-12)
        assert group["weight_decay"] == 3e-4 and group["momentum"] == 0.7
    assert state.scheduler.base_lrs == [pytest.approx(0.012, rel=1e-12)]
    progress = Progress(**handed["progress"])
    assert (progress.next_epoch, progress.best_epoch, progress.best_metric) == (3, 0, None)
    assert BestWeights.from_checkpoint(handed).weights is None


def test_an_epochs_events_are_in_its_checkpoint_and_sent_once_it_is_stored(dataset_dir, monkeypatch):
    """Each epoch's events (train, val, the decision; the last also the test split at its best
    epoch) go into its checkpoint and are published only after the channel stored it."""
    trial = TrialSpec(name="000_unet", arch="unet", model=MODEL, train=TrainParams(epochs=3, batch_size=4))
    run = build_trial_run(trial, context_for(dataset_dir, "events-once"), 0, 1, torch.device("cpu"), lambda m: m)
    channel = RecordingChannel()
    run = dataclasses.replace(run, publisher=RecordingPublisher(), channel=channel)
    monkeypatch.setattr("tests.test_train_loop.RecordingChannel", lambda: channel)
    _, _, _, reported = train_scripted_epochs(run, monkeypatch, [0.5, 0.6, 0.4, 0.55])
    assert channel.published_after == [1, 2, 3]  # each epoch's publish came after its report
    assert [saved["events"] for _, saved in reported] == run.publisher.published
    decoded = [[decode_event(data) for data in events] for events in run.publisher.published]
    assert [[(event.type, getattr(event, "split", None), event.epoch) for event in events] for events in decoded] == [
        [("metrics", "train", 1), ("metrics", "val", 1), ("best", None, 1)],
        [("metrics", "train", 2), ("metrics", "val", 2), ("best", None, 2)],
        [("metrics", "train", 3), ("metrics", "val", 3), ("metrics", "test", 2), ("best", None, 3)]]


def test_the_lr_follows_the_world_size_under_linear_scaling(dataset_dir, monkeypatch):
    """lr_scaling: linear against a minimum of 1 worker: 2 workers train at twice the lr; a restart
    of that checkpoint on 1 worker goes back to the spec's lr (the schedule where it stood)."""
    trial = TrialSpec(name="000_unet", arch="unet", model=MODEL,
                      train=TrainParams(epochs=2, batch_size=4, lr=0.01, lr_scaling="linear", scheduler="cosine"))
    context = context_for(dataset_dir, "elastic-lr")
    two = build_trial_run(trial, context, 0, 2, torch.device("cpu"), lambda m: m)
    two = dataclasses.replace(two, publisher=RecordingPublisher())
    state, _, _, reported = train_scripted_epochs(two, monkeypatch, [0.5, 0.6])
    first = reported[0][1]
    assert first["lr_scale"] == 2.0 and reported[0][0]["lr"] == pytest.approx(0.02)
    one = build_trial_run(trial, context, 0, 1, torch.device("cpu"), lambda m: m)
    resumed = start_iteration(one, 1, first)
    on_two = start_iteration(two, 1, first)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(on_two.optimizer.param_groups[0]["lr"] / 2)
    assert resumed.scheduler.base_lrs == pytest.approx([0.01])
