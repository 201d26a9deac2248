import re

import pytest

from seg_models.exceptions import SpecError
from jobs.spec import SweepSpec, expand_trials, load_yaml, parse_spec


def sweep(**fields):
    return parse_spec(SweepSpec, {"data": "/data", "archs": ["unet"], **fields})


def trials_of(**fields):
    return expand_trials(sweep(**fields))


def test_grid_expands_to_readable_fully_resolved_trials():
    spec = sweep(models={"unet": {"base_width": {"grid": [8, 16]}, "depth": 3}},
                 train={"lr": {"grid": [1e-3, 3e-3]}, "epochs": 2})
    trials = expand_trials(spec)
    assert [t.name for t in trials] == [
        "000_unet_base_width=8_lr=0.001", "001_unet_base_width=8_lr=0.003",
        "002_unet_base_width=16_lr=0.001", "003_unet_base_width=16_lr=0.003",
    ]
    assert trials[3].model == {"depth": 3, "base_width": 16}
    assert trials[3].train.lr == 3e-3 and trials[3].train.epochs == 2


@pytest.mark.parametrize("fields, message", [
    ({"archs": ["unett"]}, "archs: unknown architecture 'unett'; valid: "),
    ({"archs": []}, "archs: List should have at least 1 item"),
    ({"train": {"lr": -1}}, "train.lr: Input should be greater than 0"),
    ({"train": {"lr": {"grid": [1e-3, -2]}}}, "train.lr: Input should be greater than 0"),
    ({"colour": "red"}, "colour: unknown field"),
    ({"train": {"epochz": 3}}, "train.epochz: unknown field"),
    ({"models": {"unet": {"depth": "deep"}}}, "models.unet.depth: Input should be a valid integer"),
    ({"models": {"unet": {"widht": 3}}}, "models.unet.widht: unknown field"),
    ({"resources": {"workers_per_trial": 0}}, "resources.workers_per_trial: 0 workers: a trial needs at least 1"),
    ({"train": {"lr": {"grid": []}}}, "train.lr: grid must be a non-empty list"),
])
def test_invalid_specs_name_the_field(fields, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(".", r"\.")):
        trials_of(**fields)


def test_validation_does_not_expand(monkeypatch):
    """One-way flow: parsing checks the fields; the trials are expanded once, on request."""
    calls = []
    original = SweepSpec.trials
    monkeypatch.setattr(SweepSpec, "trials", lambda self: calls.append(1) or original(self))
    spec = sweep(train={"lr": {"grid": [1e-3, 3e-3]}})
    assert calls == []
    assert len(expand_trials(spec)) == 2 and calls == [1]


def test_expansion_errors_name_the_spec_file():
    spec = sweep(train={"lr": {"grid": [1e-3, -2]}})
    with pytest.raises(SpecError, match=r"^sweep\.yaml: train\.lr: Input should be greater than 0"):
        expand_trials(spec, "sweep.yaml")


def test_unknown_metric_is_refused():
    with pytest.raises(SpecError, match="^metric: unknown metric 'val_accuracy'; valid: val_miou"):
        sweep(metric="val_accuracy")
    assert sweep(metric="train_loss", mode="min").target.mode == "min"


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(SpecError, match="bad.yaml: not valid YAML"):
        load_yaml(path)
    with pytest.raises(SpecError, match="missing.yaml: no such spec file"):
        load_yaml(tmp_path / "missing.yaml")


def test_choice_values_are_drawn_per_sample_reproducibly():
    fields = {"samples": 4, "models": {"unet": {"base_width": {"choice": [8, 16, 32]}}},
              "train": {"lr": {"choice": [1e-3, 3e-3]}, "epochs": {"grid": [1, 2]}}}
    trials = trials_of(**fields)
    assert len(trials) == 4 * 2  # samples x grid points
    assert all(t.model["base_width"] in (8, 16, 32) and t.train.lr in (1e-3, 3e-3) for t in trials)
    assert [t.name for t in trials] == [t.name for t in trials_of(**fields)]  # seeded
    assert [t.name for t in trials] != [t.name for t in trials_of(search_seed=1, **fields)]
    for first, second in zip(trials[::2], trials[1::2]):  # one draw shared by the grid points of a sample
        assert (first.model, first.train.lr) == (second.model, second.train.lr)
        assert (first.train.epochs, second.train.epochs) == (1, 2)


@pytest.mark.parametrize("given, elastic, low, high", [
    (2, False, 2, 2), ("3", False, 3, 3), ("1-4", True, 1, 4), ({"min": 2, "max": 5}, True, 2, 5),
    ({"min": 2, "max": 2}, False, 2, 2), ("2-2", False, 2, 2)])
def test_workers_per_trial_takes_a_number_or_a_range(given, elastic, low, high):
    from jobs.spec import Resources

    resources = Resources(workers_per_trial=given)
    assert (resources.elastic, resources.min_workers, resources.max_workers) == (elastic, low, high)
    # an elastic trial always trains through Ray Train, and is admitted when its minimum fits
    assert resources.trains_in_trial == (not elastic and low == 1)
    if elastic:
        assert resources.trial_cpus == pytest.approx(low * resources.cpus_per_worker + 0.1)


@pytest.mark.parametrize("given, message", [
    ("4-1", "max (1) is below min (4)"), ("0-2", "min: Input should be greater than or equal to 1"),
    ("two", "neither a number of workers nor a range"), ({"min": 1}, "max: Field required"),
    ({"min": 1, "max": 2, "step": 1}, "step: Extra inputs"), (0, "a trial needs at least 1")])
def test_a_bad_worker_range_is_refused_with_its_reason(given, message):
    with pytest.raises(SpecError, match=f"resources.workers_per_trial: .*{re.escape(message)}"):
        parse_spec(SweepSpec, {"data": "/d", "archs": ["unet"], "resources": {"workers_per_trial": given}})
    with pytest.raises(SpecError, match="one fixed worker, not 1-2 workers"):
        parse_spec(SweepSpec, {"data": "/d", "archs": ["unet"],
                               "resources": {"workers_per_trial": "1-2", "runner": "trial"}})


def test_the_dry_run_shows_the_range_and_what_fits_now():
    from jobs.lifecycle.plan import fits_now_line, resources_line
    from jobs.spec import Resources

    resources = Resources(workers_per_trial="1-4", cpus_per_worker=0.8)
    assert "2 trials x 1-4 (elastic) worker(s)" in resources_line(resources, 2)
    assert "1.6 CPU, 0 GPU to 6.4 CPU, 0 GPU in all" in resources_line(resources, 2)
    assert fits_now_line(resources, 2.0, 0.0, 1).endswith("2 worker(s) on the cluster's 2 CPU, 0 GPU in 1 node(s): "
                                                           "a trial starts, and grows to 2")
    assert "waits until 2 fit" in fits_now_line(Resources(workers_per_trial="2-3"), 0.5, 0.0, 1)
    assert fits_now_line(resources, None, None, 0).startswith("fits now: no cluster running")
