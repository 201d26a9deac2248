"""Search spaces and search algorithms: draws stay in bounds with the right type, bad spaces name the
field and say the fix, and the same seed gives the same trials to the last digit."""
import math
import random

import pytest

from jobs.search_space import check_space, sample_space
from jobs.spec import SweepSpec, expand_trials, parse_spec
from seg_models.exceptions import SpecError


def trials_of(**fields):
    return expand_trials(parse_spec(SweepSpec, {"data": "/data", "archs": ["unet"], **fields}))


def draws(kind, args, count=500):
    rng = random.Random(0)
    return [sample_space(kind, check_space("train.x", kind, args), rng) for _ in range(count)]


def test_uniform_and_loguniform_stay_in_bounds():
    assert all(isinstance(v, float) and -1.0 <= v <= 2.5 for v in draws("uniform", [-1, 2.5]))
    values = draws("loguniform", [1e-4, 1e-2])
    assert all(isinstance(v, float) and 1e-4 <= v <= 1e-2 for v in values)
    # log-uniform: about half the draws fall below the geometric mean 1e-3
    assert 0.4 < sum(v < 1e-3 for v in values) / len(values) < 0.6


def test_randint_gives_ints_with_high_exclusive():
    values = draws("randint", [2, 5])
    assert all(type(v) is int for v in values) and set(values) == {2, 3, 4}


@pytest.mark.parametrize("args, kind", [([8, 64, 8], int), ([0.0, 1.0, 0.25], float), ([0.1, 0.5, 0.1], float)])
def test_quniform_gives_multiples_of_q_within_bounds(args, kind):
    low, high, q = args
    values = draws("quniform", args)
    assert all(type(v) is kind and low - 1e-9 <= v <= high + 1e-9 for v in values)
    assert all(math.isclose(v / q, round(v / q), abs_tol=1e-9) for v in values)
    assert len(set(values)) == round((high - low) / q) + 1


def test_grid_and_choice_pick_from_their_lists():
    assert set(draws("choice", ["adam", "sgd"])) == {"adam", "sgd"}
    assert set(draws("grid", [1, 2, 3])) == {1, 2, 3}


@pytest.mark.parametrize("train, message", [
    ({"lr": {"loguniform": [0, 0.1]}}, "train.lr: loguniform needs 0 < low < high (got [0, 0.1])"),
    ({"lr": {"loguniform": [0.1, 0.01]}}, "train.lr: loguniform needs 0 < low < high (got [0.1, 0.01])"),
    ({"lr": {"choice": []}}, "train.lr: choice must be a non-empty list"),
    ({"lr": {"choice": 0.1}}, "train.lr: choice must be a non-empty list"),
    ({"lr": {"gird": [0.1]}}, "train.lr: unknown search space 'gird'; valid: grid, choice, uniform, loguniform, "
                              "randint, quniform"),
    ({"momentum": {"uniform": [0.9]}}, "train.momentum: uniform needs [low, high] with low < high (got [0.9])"),
    ({"momentum": {"uniform": [0.9, "x"]}}, "train.momentum: uniform needs [low, high] with low < high"),
    ({"epochs": {"randint": [1.5, 4]}}, "train.epochs: randint needs integers [low, high] with low < high "
                                        "(high is exclusive) (got [1.5, 4])"),
    ({"epochs": {"randint": [4, 4]}}, "train.epochs: randint needs integers [low, high]"),
    ({"batch_size": {"quniform": [8, 60, 8]}}, "train.batch_size: quniform needs [low, high, q] with low < high, "
                                               "q > 0 and low, high multiples of q (got [8, 60, 8])"),
    ({"batch_size": {"quniform": [8, 64, 0]}}, "train.batch_size: quniform needs [low, high, q]"),
    # a drawn value is validated like a written one
    ({"momentum": {"uniform": [1.0, 2.0]}}, "train.momentum: Input should be less than 1"),
    ({"lr": {"uniform": [-2.0, -1.0]}}, "train.lr: Input should be greater than 0"),
])
def test_bad_spaces_name_the_field(train, message):
    with pytest.raises(SpecError) as raised:
        trials_of(train=train)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_bad_model_space_names_the_architecture_field():
    with pytest.raises(SpecError, match=r"^models\.unet\.base_width: randint needs integers"):
        trials_of(models={"unet": {"base_width": {"randint": [8]}}})


RANDOM = {"search": "random", "samples": 6, "archs": ["unet", "fcn"],
          "models": {"unet": {"base_width": {"grid": [8, 16]}}},
          "train": {"lr": {"loguniform": [1e-4, 1e-2]}, "epochs": {"grid": [1, 2, 3]},
                    "batch_size": {"randint": [2, 9]}, "momentum": {"uniform": [0.5, 0.99]}}}


def fingerprint(trials):
    return [(t.name, t.arch, t.model, t.train.model_dump()) for t in trials]


def test_random_search_is_reproducible_with_its_seed():
    trials = trials_of(search_seed=3, **RANDOM)
    assert len(trials) == 6  # samples trials in all, whatever the grid
    assert fingerprint(trials) == fingerprint(trials_of(search_seed=3, **RANDOM))
    assert [t.train.lr for t in trials] != [t.train.lr for t in trials_of(search_seed=4, **RANDOM)]


def test_random_search_samples_grid_axes_and_architectures():
    trials = trials_of(search_seed=0, **{**RANDOM, "samples": 60})
    assert {t.arch for t in trials} == {"unet", "fcn"}
    assert {t.train.epochs for t in trials} == {1, 2, 3}
    assert {t.model["base_width"] for t in trials if t.arch == "unet"} == {8, 16}
    assert all("base_width" not in t.model for t in trials if t.arch == "fcn")
    assert all(type(t.train.batch_size) is int and 2 <= t.train.batch_size < 9 for t in trials)
    assert len({t.train.lr for t in trials}) == 60  # full precision kept, every draw distinct


def test_grid_search_repeats_the_grid_and_redraws_each_repeat():
    trials = trials_of(samples=3, train={"lr": {"loguniform": [1e-4, 1e-2]}, "epochs": {"grid": [1, 2]}})
    assert [t.train.epochs for t in trials] == [1, 2] * 3
    lrs = [t.train.lr for t in trials]
    assert lrs[0::2] == lrs[1::2] and len(set(lrs)) == 3


def test_trial_names_round_floats_but_the_trial_keeps_full_precision():
    trial = trials_of(train={"lr": {"loguniform": [1e-4, 1e-2]}})[0]
    assert trial.name == f"000_unet_lr={trial.train.lr:.3g}"
    assert len(repr(trial.train.lr)) > len(f"{trial.train.lr:.3g}")


def test_saliency_settings_take_only_a_grid():
    from jobs.spec import SaliencySpec

    spec = parse_spec(SaliencySpec, {"data": "/data", "archs": ["unet"], "keep_percent": {"choice": [50, 90]}})
    with pytest.raises(SpecError, match=r"^keep_percent: choice is not searched here; give one value or \{grid"):
        expand_trials(spec)


@pytest.mark.parametrize("fields, message", [
    ({"scheduler": {"kind": "asha", "grace_period": 9}, "train": {"epochs": 4}},
     "scheduler.grace_period: 9 is beyond the trials' 4 epochs"),
    ({"scheduler": {"kind": "pbt", "mutations": {"learning_rate": [0.1]}}}, "scheduler.mutations.learning_rate: not a train field"),
    ({"scheduler": {"kind": "pbt", "mutations": {"lr": []}}}, "scheduler.mutations.lr: give a non-empty list"),
    ({"scheduler": {"kind": "pbt", "mutations": {"lr": {"loguniform": [0, 1]}}}},
     "scheduler.mutations.lr: loguniform needs 0 < low < high"),
    ({"scheduler": "pbt", "search": "optuna"}, "search: optuna cannot drive a pbt scheduler"),
])
def test_bad_tuning_settings_name_the_field(fields, message):
    with pytest.raises(SpecError, match=message):
        trials_of(**fields)


def test_schedulers_and_optuna_tune_sweeps_only():
    from jobs.spec import SaliencySpec

    for fields in ({"scheduler": "asha"}, {"search": "optuna"}):
        with pytest.raises(SpecError, match="saliency job"):
            expand_trials(parse_spec(SaliencySpec, {"data": "/data", "archs": ["unet"], **fields}))


def test_scheduler_defaults_scale_with_the_trials_epochs():
    spec = parse_spec(SweepSpec, {"data": "/data", "archs": ["unet"], "scheduler": "pbt",
                                  "train": {"epochs": {"grid": [4, 12]}, "lr": {"loguniform": [1e-4, 1e-2]}}})
    epochs = spec.max_epochs(spec.sections()[1])
    assert epochs == 12
    assert spec.scheduler.resolved_perturbation_interval(epochs) == 4
    assert spec.scheduler.resolved_grace_period(epochs) == 1
    assert spec.scheduler.resolved_mutations(spec.train) == {"lr": {"loguniform": [1e-5, 1e-1]}}
    assert expand_trials(parse_spec(SweepSpec, {"data": "/data", "archs": ["unet"], "search": "optuna"})) == []
