"""segq's schedulers, driven directly: Ray's own scheduler classes (as jobs.execution.tuning builds them) with
stand-in trials and a stand-in controller that acts on each decision the way Tune's does. What a
trial reports mirrors jobs.execution.tuning.report_epoch: a final report carries no epoch."""
from __future__ import annotations

import math

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import HyperBandScheduler, TrialScheduler
from ray.tune.schedulers.pbt import _explore

from jobs.spec import SchedulerSpec, SweepSpec
from jobs.execution.tuning import LAST_EPOCH, check_hyperband, scheduler_for
from jobs.search_space import within_space
from seg_models.exceptions import SpecError
from workers.reporting import FINAL_REPORT
from workers.target import Target

TARGET = Target(metric="val_miou", mode="max")


class StandInTrial:
    def __init__(self, index: int, epochs: int, quality: float):
        self.trial_id, self.epochs, self.quality = f"t{index:02d}", epochs, quality
        self.status, self.is_saving, self.epoch, self.last_result = Trial.PENDING, False, 0, {}
        self.config = {}

    def value(self, epoch: int) -> float:
        return self.quality * (1 - 0.5 ** epoch)  # a better trial is better at every epoch

    def __repr__(self) -> str:
        return self.trial_id


class StandInController:
    """What Tune's controller does on a scheduler's decisions (stop_trial as in TuneController)."""

    def __init__(self, scheduler, trials: list[StandInTrial]):
        self.scheduler, self.trials = scheduler, trials
        self.paused_at: dict[str, list[int]] = {trial.trial_id: [] for trial in trials}
        for trial in trials:
            scheduler.on_trial_add(self, trial)

    def get_trials(self) -> list[StandInTrial]:
        return self.trials

    def get_live_trials(self) -> list[StandInTrial]:
        return [trial for trial in self.trials if trial.status not in (Trial.TERMINATED, Trial.ERROR)]

    def stop_trial(self, trial: StandInTrial) -> None:
        if trial.status in (Trial.PENDING, Trial.PAUSED):
            self.scheduler.on_trial_remove(self, trial)
        elif trial.status == Trial.RUNNING:
            self.scheduler.on_trial_complete(self, trial, trial.last_result)
        trial.status = Trial.TERMINATED

    def run(self) -> None:
        """One trial at a time, as the scheduler chooses, each reporting epoch after epoch."""
        while trial := self.scheduler.choose_trial_to_run(self):
            trial.status = Trial.RUNNING
            while trial.status == Trial.RUNNING:
                self.report(trial)

    def report(self, trial: StandInTrial) -> None:
        trial.epoch += 1
        final = trial.epoch == trial.epochs
        result = {"val_miou": trial.value(trial.epoch), FINAL_REPORT: final}
        result |= {LAST_EPOCH: trial.epoch} if final else {"epoch": trial.epoch}
        trial.last_result = result
        decision = self.scheduler.on_trial_result(self, trial, result)
        if final:
            assert decision == TrialScheduler.CONTINUE, f"{trial} was told to {decision} on its final report"
            self.scheduler.on_trial_complete(self, trial, result)
            trial.status = Trial.TERMINATED
        elif decision == TrialScheduler.STOP:
            self.stop_trial(trial)
        elif decision == TrialScheduler.PAUSE:
            self.paused_at[trial.trial_id].append(trial.epoch)
            trial.status = Trial.PAUSED


def hyperband(epochs: int, **settings):
    return scheduler_for(SchedulerSpec(kind="hyperband", **settings), TARGET, epochs, {})


def population(count: int, epochs: int) -> list[StandInTrial]:
    # qualities in a shuffled but fixed order, so no bracket gets its trials sorted
    return [StandInTrial(index, epochs, quality=((index * 7) % count + 1) / count) for index in range(count)]


def test_hyperband_survivors_of_every_bracket_run_to_the_last_epoch():
    scheduler = hyperband(10)
    trials = population(17, 10)  # one full band: brackets of 3 (10 epochs), 5 (rung 3) and 9 (rungs 1, 3, 9)
    StandInController(scheduler, trials).run()
    brackets = [bracket for band in scheduler._hyperbands for bracket in band]
    assert [len(bracket._all_trials) for bracket in brackets] == [3, 5, 9]
    for bracket in brackets:
        members = bracket._all_trials
        ran = sorted(trial.epoch for trial in members)
        best = max(members, key=lambda trial: trial.quality)
        assert best.epoch == 10, (bracket, ran)  # the bracket's winner is never stopped short
        assert all(trial.epoch in (1, 3, 10) for trial in members), ran  # stopped at a rung, or ran to the end
    assert sum(trial.epoch == 10 for trial in trials) == 3 + 2 + 1  # ceil(5/3) and ceil(ceil(9/3)/3) go on


def test_ray_default_would_stop_the_survivors_at_epoch_9():
    """The harness can tell: Ray's default stop_last_trials=True stops the last bracket's winner at
    its last rung, epoch 9 of 10 (its trials planned one epoch more, so that no final report
    reaches Ray's class, which would decide on it)."""
    scheduler = HyperBandScheduler(time_attr="epoch", metric="val_miou", mode="max", max_t=10, reduction_factor=3)
    trials = population(17, 11)
    StandInController(scheduler, trials).run()
    assert max(trials[8:], key=lambda trial: trial.quality).epoch == 9


def test_a_trial_ending_on_a_rung_finishes_without_a_pause():
    """Trials of 3 epochs in a bracket whose first rung is epoch 3: each ends on the rung, with a
    final report that no scheduler decides on; none is paused, and the bracket goes on without them."""
    scheduler = hyperband(10)
    trials = population(17, 10)
    for trial in trials[3:8]:  # the second bracket (5 trials, rung at epoch 3)
        trial.epochs = 3
    controller = StandInController(scheduler, trials)
    controller.run()
    for trial in trials[3:8]:
        assert trial.epoch == 3 and trial.status == Trial.TERMINATED
        assert controller.paused_at[trial.trial_id] == []


def test_hyperband_that_would_halve_nothing_is_refused():
    # 3 trials of 5 epochs: Ray's first bracket runs 2 trials for all 5 epochs, the third sits alone
    with pytest.raises(SpecError, match="halves nothing"):
        check_hyperband(SchedulerSpec(kind="hyperband"), TARGET, 5, 3, None)
    check_hyperband(SchedulerSpec(kind="hyperband"), TARGET, 5, 5, None)  # its second bracket holds 3
    with pytest.raises(SpecError, match="max_concurrent_trials: 1 is below the job's 5 trials"):
        check_hyperband(SchedulerSpec(kind="hyperband"), TARGET, 5, 5, 1)


# --- ASHA -------------------------------------------------------------------------------------------

class ComparedCutoffs:
    """Spies on a Ray bracket: the values each of its decisions compared against."""

    def __init__(self, bracket):
        self.calls: list[tuple[int, float | None]] = []
        original = bracket.cutoff

        def cutoff(recorded):
            value = original(recorded)
            self.calls.append((len(recorded), value))
            return value

        bracket.cutoff = cutoff


@pytest.mark.parametrize("settings, epochs", [({"reduction_factor": 1.5, "grace_period": 1}, 6),
                                              ({"max_epochs": 4, "grace_period": 1}, 6),
                                              ({"reduction_factor": 2.5, "max_epochs": 5}, 8)])
def test_asha_records_what_its_bracket_compared(settings, epochs):
    scheduler = scheduler_for(SchedulerSpec(kind="asha", **settings), TARGET, epochs, {})
    spy = ComparedCutoffs(scheduler._brackets[0])
    trials = [StandInTrial(index, epochs, quality) for index, quality in enumerate([0.5, 0.9, 0.2, 0.7, 0.1, 0.6])]
    controller = StandInController(scheduler, trials)
    for trial in trials:  # trials arrive one after another: every later one meets recorded rungs
        trial.status = Trial.RUNNING
        while trial.status == Trial.RUNNING:
            calls_before = len(spy.calls)
            controller.report(trial)
            if trial.trial_id in scheduler.stops:
                count, cutoff = spy.calls[calls_before]
                record = scheduler.stops[trial.trial_id]
                assert record["rung"] == trial.epoch
                assert f"of {count} trials (cutoff {cutoff:.4g})" in record["reason"], (record, count, cutoff)
                assert trial.value(trial.epoch) < cutoff
                break
    stopped = [trial for trial in trials if trial.trial_id in scheduler.stops]
    finished = [trial for trial in trials if trial.epoch == epochs]
    assert stopped and finished and len(stopped) + len(finished) == len(trials)
    assert max(trials, key=lambda trial: trial.quality) in finished


# --- PBT --------------------------------------------------------------------------------------------

def pbt(mutations: dict, seed: int = 0, train: dict | None = None):
    spec = SweepSpec(data="/data", archs=["unet"], train=train or {},
                     scheduler={"kind": "pbt", "mutations": mutations, "resample_probability": 0.3})
    spec.check_tuning(spec.sections()[1])
    return scheduler_for(spec.scheduler, TARGET, 6, spec.train, seed)


def explore(scheduler, train: dict) -> dict:
    config = {"trial": {"name": "000_unet", "train": dict(train)}}
    with scheduler.own_generators():
        new, _ = _explore(config, scheduler._hyperparam_mutations, scheduler._resample_probability,
                          scheduler._perturbation_factors, scheduler._custom_explore_fn)
    return new["trial"]["train"]


def test_choice_mutations_pick_from_their_list_and_strings_stay_strings():
    scheduler = pbt({"batch_size": {"choice": [8, 16, 32]}, "augment": {"choice": ["none", "basic", "strong"]},
                     "lr": [1e-3, 3e-3]})
    train = {"batch_size": 16, "augment": "basic", "lr": 1e-3}
    seen = set()
    for _ in range(200):
        train = explore(scheduler, train)
        assert train["batch_size"] in (8, 16, 32) and train["augment"] in ("none", "basic", "strong")
        assert train["lr"] in (1e-3, 3e-3)
        seen.add(train["batch_size"])
    assert seen == {8, 16, 32}


def test_perturbed_values_stay_within_their_space():
    scheduler = pbt({"momentum": {"uniform": [0.5, 0.95]}, "batch_size": {"randint": [4, 17]},
                     "weight_decay": {"quniform": [0.0, 0.01, 0.001]}}, train={"optimizer": "sgd"})
    train = {"momentum": 0.95, "batch_size": 16, "weight_decay": 0.01}
    for _ in range(200):
        train = explore(scheduler, train)
        assert 0.5 <= train["momentum"] <= 0.95
        assert 4 <= train["batch_size"] <= 16 and isinstance(train["batch_size"], int)
        assert 0.0 <= train["weight_decay"] <= 0.01
        assert math.isclose(train["weight_decay"] / 0.001, round(train["weight_decay"] / 0.001), abs_tol=1e-9)
    assert within_space(0.95 * 1.2, "uniform", [0.5, 0.95]) == 0.95


def test_pbt_draws_are_seeded():
    mutations = {"lr": {"loguniform": [1e-4, 1e-1]}, "batch_size": {"choice": [8, 16, 32]}}

    def draws(seed: int) -> list[dict]:
        scheduler, train = pbt(mutations, seed), {"lr": 1e-3, "batch_size": 16}
        return [train := explore(scheduler, train) for _ in range(20)]

    assert draws(3) == draws(3) and draws(3) != draws(4)


@pytest.mark.parametrize("mutations, message", [
    ({"optimizer": {"choice": ["adam", "sgd"]}}, "scheduler.mutations.optimizer: PBT cannot mutate optimizer"),
    ({"epochs": [4, 8]}, "scheduler.mutations.epochs: PBT cannot mutate epochs"),
    ({"momentum": {"uniform": [0.5, 1.0]}}, "scheduler.mutations.momentum: 1.0 is not a valid momentum"),
    ({"augment": ["none", "wild"]}, "scheduler.mutations.augment: 'wild' is not a valid augment"),
    ({"lr": {"uniform": [0.0, 0.1]}}, "scheduler.mutations.lr: 0.0 is not a valid lr"),
])
def test_mutations_pbt_cannot_apply_are_refused(mutations, message):
    with pytest.raises(SpecError, match=message.replace(".", r"\.")):
        pbt(mutations, train={"optimizer": "sgd"})


def test_momentum_mutation_needs_sgd():
    with pytest.raises(SpecError, match="only sgd has a momentum, and the trials use adam"):
        pbt({"momentum": [0.8, 0.9]})


def test_default_lr_range_covers_every_grid_value():
    spec = SchedulerSpec(kind="pbt")
    assert spec.resolved_mutations({"lr": {"grid": [1e-3, 1e-2, 1e-1]}}) == {"lr": {"loguniform": [1e-4, 1.0]}}


def test_scheduler_max_epochs_excludes_randint_high():
    spec = SweepSpec(data="/data", archs=["unet"], train={"epochs": {"randint": [2, 6]}})
    assert spec.max_epochs(spec.sections()[1]) == 5
