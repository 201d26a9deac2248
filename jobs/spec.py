"""Job specs (pydantic, extra fields forbidden) and their expansion into trials.

Any model or train field may be a search space instead of a value (jobs.search_space: Ray Tune's
names and rules). `search` decides how they become trials (grid_configs, random_configs); every
draw comes from one `random.Random(search_seed)`, so the same spec gives the same trials. Each trial
is fully resolved: no search syntax is left in it, and a drawn value is validated like a written one.

A spec is validated (`parse_spec`) and expanded (`expand_trials`) once, at submission; the job
record keeps the resulting trials, so the driver runs exactly those and never draws again.
"""
from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any, Iterator, Literal, NamedTuple

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from jobs.search_space import (BOUNDED, LISTS, bounds, check_space, is_number, sample_space,
                               search_kind)
from seg_models.exceptions import SpecError
from seg_models.registry import ARCHITECTURES, validate_options
from workers.saliency import resolve_background_classes
from workers.target import Target
from workers.trial_spec import SaliencyParams, Strict, TrainParams, TrialSpec, check_background_classes

AXIS_SHORT = {"batch_size": "bs", "weight_decay": "wd", "epochs": "ep"}


# What a trial that trains through Ray Train holds itself: its Tune trial only waits on its workers.
TRIAL_DRIVER_CPUS = 0.1


class WorkerRange(Strict):
    """Elastic DDP workers: a trial starts once `min` workers fit, grows towards `max` as resources
    appear, and goes on smaller (from its last checkpoint) when a worker or its node is lost."""

    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def ordered(self) -> "WorkerRange":
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self


class Resources(Strict):
    workers_per_trial: int | WorkerRange = Field(1, description="DDP workers per trial: a number, or an elastic "
                                                 "range {min: 1, max: 4} (on the command line: 1-4)")
    cpus_per_worker: float = Field(0.5, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    max_concurrent_trials: int | None = Field(None, ge=1)
    max_failures: int = Field(2, ge=0, description="worker failures a trial survives (resumes from checkpoint)")
    placement: Literal["pack", "spread"] = Field("pack", description="pack: the trial's workers on as few nodes as "
                                                 "fit; spread: on as many different nodes as there are")
    collective_timeout_s: int = Field(60, ge=5, le=3600, description="seconds a DDP collective waits for a rank "
                                      "before it fails (Ray's TorchConfig.timeout_s, 1800 by default there)")
    resize_interval_s: float = Field(60.0, gt=0, description="elastic trials: seconds between two looks for "
                                     "resources to grow into (Ray Train's elastic_resize_monitor_interval_s)")
    start_timeout_s: float = Field(300.0, ge=5, description="seconds Ray Train waits for a worker group's "
                                   "resources before it gives up on that size: an elastic trial that lost a node "
                                   "goes on smaller after this (RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S)")
    runner: Literal["auto", "trial", "train"] = Field(
        "auto", description="where a trial trains: trial: in its own Tune trial, no process of its own (one "
                            "worker only); train: through Ray Train, a worker group per trial (DDP, and Ray "
                            "Train's worker restarts even for one worker); auto: trial for one worker, else train")

    @field_validator("workers_per_trial", mode="before")
    @classmethod
    def range_as_text(cls, value: Any) -> Any:
        """`1-4` (the command line's form) is the range {min: 1, max: 4}; `2-2` is 2 workers."""
        if isinstance(value, str):
            low, dash, high = value.partition("-")
            if not (low.strip().isdigit() and (not dash or high.strip().isdigit())):
                raise ValueError(f"{value!r} is neither a number of workers nor a range MIN-MAX such as 1-4")
            value = int(low) if not dash else {"min": int(low), "max": int(high)}
        if not isinstance(value, dict):
            return value
        try:
            workers = WorkerRange.model_validate(value)
        except ValidationError as error:  # its own message, not the int alternative's
            first = error.errors()[0]
            where = ".".join(map(str, first["loc"]))
            raise ValueError(f"{where + ': ' if where else ''}{first['msg'].removeprefix('Value error, ')}") from None
        return workers.min if workers.min == workers.max else workers

    @field_validator("workers_per_trial")
    @classmethod
    def at_least_one(cls, workers: int | WorkerRange) -> int | WorkerRange:
        if isinstance(workers, int) and workers < 1:
            raise ValueError(f"{workers} workers: a trial needs at least 1")
        return workers

    @field_validator("runner")
    @classmethod
    def one_worker_in_trial(cls, runner: str, info) -> str:
        workers = info.data.get("workers_per_trial", 1)
        if runner == "trial" and (isinstance(workers, WorkerRange) or workers > 1):
            raise ValueError(f"a trial trains in its Tune trial with one fixed worker, not {describe(workers)}; "
                             "use runner: train (or auto) for DDP and elastic trials")
        return runner

    @property
    def elastic(self) -> bool:
        return isinstance(self.workers_per_trial, WorkerRange)

    @property
    def min_workers(self) -> int:
        return self.workers_per_trial.min if self.elastic else self.workers_per_trial

    @property
    def max_workers(self) -> int:
        return self.workers_per_trial.max if self.elastic else self.workers_per_trial

    @property
    def trains_in_trial(self) -> bool:
        """Whether a trial trains in its own Tune trial (see `runner`); an elastic trial never does."""
        return self.runner == "trial" or (self.runner == "auto" and self.workers_per_trial == 1)

    def cpus_for(self, workers: int) -> float:
        """The CPUs one trial holds with `workers` workers: its worker's, in its Tune trial, or its
        workers' and the Tune trial's own."""
        cpus = workers * self.cpus_per_worker
        return cpus if self.trains_in_trial else round(cpus + TRIAL_DRIVER_CPUS, 6)

    @property
    def trial_cpus(self) -> float:
        """The CPUs a trial needs to start (an elastic trial: with its `min` workers)."""
        return self.cpus_for(self.min_workers)

    @property
    def trial_gpus(self) -> float:
        return self.min_workers * self.gpus_per_worker

    @property
    def path(self) -> str:
        """Where each trial trains, in words (`--dry-run`, `segq jobs show`)."""
        if self.trains_in_trial:
            return "each trial trains in its own Tune trial (one process, reused from trial to trial)"
        if self.elastic:
            return (f"each trial trains through Ray Train, elastic: it starts with {self.min_workers} worker(s) once "
                    f"they fit, grows to {self.max_workers} as resources appear (looking every "
                    f"{self.resize_interval_s:g} s) and goes on smaller when one is lost")
        return f"each trial trains through Ray Train ({self.workers_per_trial} worker(s) of their own)"


def describe(workers: int | WorkerRange) -> str:
    return f"{workers.min}-{workers.max} workers" if isinstance(workers, WorkerRange) else f"{workers} workers"


MLFLOW_SCHEMES = ("http", "https", "file", "databricks")


class Tracking(Strict):
    """Where a job's numbers go besides Redis (jobs.results.exports)."""

    tensorboard: bool = Field(True, description="TensorBoard event files per trial in the job's storage "
                                                "(`segq tensorboard JOB` names the folder)")
    mlflow: str | None = Field(None, description="MLflow tracking URI (http://host:5000): each trial an MLflow run "
                                                 "in an experiment named after the job")
    mlflow_checkpoints: bool = Field(False, description="also upload each trial's best checkpoint to MLflow, as "
                                                        "an artifact of its run")

    @field_validator("mlflow")
    @classmethod
    def tracking_uri(cls, uri: str | None) -> str | None:
        if uri is not None and uri.partition(":")[0] not in MLFLOW_SCHEMES:
            raise ValueError(f"{uri!r} is not an MLflow tracking URI; use http(s)://HOST:PORT, file:///PATH or "
                             "databricks")
        return uri


# What PBT may mutate: a trial that takes over another's checkpoint keeps that trial's model,
# optimizer state and schedule, and writes these into them (workers.optim.apply_hyperparameters)
# or into its next loader; any other train field would not fit the checkpoint it takes over.
PBT_MUTABLE = ("lr", "weight_decay", "momentum", "batch_size", "augment")


class SchedulerSpec(Strict):
    """A Tune trial scheduler on the job's target, deciding on epochs; `scheduler: asha` is
    `{kind: asha}`. Unset values scale with the trials' epochs E (the most any trial runs)."""

    kind: Literal["fifo", "asha", "hyperband", "pbt"] = "fifo"
    max_epochs: int | None = Field(None, ge=1, description="asha/hyperband max_t, the epoch the rungs reach up "
                                                           "to; a trial that passes them all runs to its own end "
                                                           "(default: E)")
    grace_period: int | None = Field(None, ge=1, description="asha: epochs before a first stop (default: max(1, E // 8))")
    reduction_factor: float = Field(3.0, gt=1, description="asha/hyperband: 1/reduction_factor go on at each rung")
    perturbation_interval: int | None = Field(None, ge=1, description="pbt: epochs between perturbations "
                                                                      "(default: max(1, E // 3))")
    mutations: dict[str, Any] | None = Field(None, description="pbt: train field -> list or search space "
                                                               "(default: lr, over its searched range x/10..x10)")
    quantile_fraction: float = Field(0.25, gt=0, le=0.5, description="pbt: the bottom fraction exploits the top")
    resample_probability: float = Field(0.25, ge=0, le=1, description="pbt: resample instead of perturbing")
    synch: bool = Field(True, description="pbt: perturb when every trial reached the interval (whatever the "
                                          "timing, so every interval perturbs); false: each trial on arrival")

    def resolved_grace_period(self, epochs: int) -> int:
        return self.grace_period or max(1, epochs // 8)

    def resolved_perturbation_interval(self, epochs: int) -> int:
        return self.perturbation_interval or max(1, epochs // 3)

    def resolved_mutations(self, train: dict[str, Any]) -> dict[str, Any]:
        """What PBT mutates: the given mutations, or lr over a decade each side of its values."""
        if self.mutations:
            return self.mutations
        lrs = lr_values(train.get("lr", TrainParams().lr))
        return {"lr": {"loguniform": [min(lrs) / 10, max(lrs) * 10]}}

    def check(self, train: dict[str, Any], epochs: int) -> None:
        if self.grace_period and self.grace_period > (self.max_epochs or epochs):
            raise SpecError(f"scheduler.grace_period: {self.grace_period} is beyond the trials' "
                            f"{self.max_epochs or epochs} epochs; lower it")
        for field, space in (self.mutations or {}).items():
            check_mutation(f"scheduler.mutations.{field}", field, space, train)


def check_mutation(name: str, field: str, space: Any, train: dict[str, Any]) -> None:
    """A PBT mutation: a field PBT can apply to a checkpoint it hands over, and a list or a space
    whose every value (a bounded space's reachable bounds) is valid for the field."""
    if field not in TrainParams.model_fields:
        raise SpecError(f"{name}: not a train field; valid: {', '.join(TrainParams.model_fields)}")
    if field not in PBT_MUTABLE:
        raise SpecError(f"{name}: PBT cannot mutate {field}: a trial that takes over another's checkpoint keeps its "
                        f"model, optimizer and schedule; mutate {', '.join(PBT_MUTABLE)}")
    kind = search_kind(name, space)
    if kind is None and not (isinstance(space, list) and space):
        raise SpecError(f"{name}: give a non-empty list or a search space")
    values = space if kind is None else check_space(name, kind, space[kind])
    if kind in BOUNDED:
        values = list(bounds(kind, values))
    for value in values:
        try:
            TrainParams(**{field: value})
        except ValidationError as error:
            raise SpecError(f"{name}: {value!r} is not a valid {field} "
                            f"({describe_validation_error(error).partition(': ')[2]})") from None
    optimizers = set(axis_options(train.get("optimizer", TrainParams().optimizer)))
    if field == "momentum" and optimizers != {"sgd"}:
        raise SpecError(f"{name}: only sgd has a momentum, and the trials use {', '.join(sorted(optimizers))}")


def axis_options(value: Any) -> list:
    """Every value a train field may take: its value, or its grid's or choice's list."""
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in LISTS:
        return list(next(iter(value.values())))
    return [value]


def lr_values(value: Any) -> list[float]:
    """Every lr a spec's `train.lr` may take: its value, its grid's or choice's values, or its
    space's bounds."""
    if isinstance(value, dict) and len(value) == 1:
        kind, args = next(iter(value.items()))
        if not isinstance(args, list):
            return [TrainParams().lr]
        numbers = [a for a in (args if kind in LISTS else args[:2]) if is_number(a, False)]
        return numbers or [TrainParams().lr]
    return [value] if is_number(value, False) else [TrainParams().lr]


def axis_values(name: str, value: Any) -> list:
    """A saliency setting: one value, or a grid axis of values (the only space it takes)."""
    kind = search_kind(name, value)
    if kind is None:
        return [value]
    if kind != "grid":
        raise SpecError(f"{name}: {kind} is not searched here; give one value or {{grid: [...]}}")
    return check_space(name, kind, value[kind])


class Section(NamedTuple):
    """The values of one section (train, or one architecture's model options), split by kind."""

    spaces: dict[str, tuple[str, list]]  # every searched field, grid axes included, in spec order
    fixed: dict[str, Any]

    def grid(self) -> dict[str, list]:
        return {key: args for key, (kind, args) in self.spaces.items() if kind == "grid"}

    def sampled(self) -> dict[str, tuple[str, list]]:
        return {key: space for key, space in self.spaces.items() if space[0] != "grid"}


def split_section(prefix: str, values: dict[str, Any]) -> Section:
    spaces, fixed = {}, {}
    for key, value in values.items():
        kind = search_kind(f"{prefix}.{key}", value)
        if kind is None:
            fixed[key] = value
        else:
            spaces[key] = (kind, check_space(f"{prefix}.{key}", kind, value[kind]))
    return Section(spaces, fixed)


def draw(spaces: dict[str, tuple[str, list]], rng: random.Random) -> dict[str, Any]:
    return {key: sample_space(kind, args, rng) for key, (kind, args) in spaces.items()}


def grid_configs(archs: list[str], models: dict[str, Section], train: Section, samples: int,
                 rng: random.Random) -> Iterator[tuple[str, dict, dict]]:
    """`search: grid`: per architecture, `samples` repeats of its full grid. Each repeat draws the
    sampled spaces (and `choice`) once, shared by that repeat's grid points, so that grid points are
    compared at the same draws; the next repeat draws afresh."""
    for arch in archs:
        for _ in range(samples):
            model_drawn, train_drawn = draw(models[arch].sampled(), rng), draw(train.sampled(), rng)
            for model_combo in product(models[arch].grid()):
                for train_combo in product(train.grid()):
                    yield arch, {**model_drawn, **model_combo}, {**train_drawn, **train_combo}


def random_configs(archs: list[str], models: dict[str, Section], train: Section, samples: int,
                   rng: random.Random) -> Iterator[tuple[str, dict, dict]]:
    """`search: random`: `samples` trials in all, each drawn independently of the others: the
    architecture uniformly from `archs`, then, in spec order, each of its model fields and each train
    field, a `grid` axis uniformly from its list like a `choice` and every other space from its
    distribution. Saliency settings (keep_percent, relevance, controls) still expand per draw."""
    for _ in range(samples):
        arch = rng.choice(archs)
        yield arch, draw(models[arch].spaces, rng), draw(train.spaces, rng)


SEARCHES = {"grid": grid_configs, "random": random_configs}


class JobSpec(Strict):
    """What sweeps and saliency jobs share: data, architectures x options x hyperparameters, resources."""

    name: str = ""
    data: str
    archs: list[str] = Field(min_length=1)
    models: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-architecture options")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainParams; values may be search spaces")
    resources: Resources = Field(default_factory=Resources)
    tracking: Tracking = Field(default_factory=Tracking)
    search: Literal["grid", "random", "optuna"] = Field(
        "grid", description="grid: the full grid, `samples` times; random: `samples` independent draws of "
                            "every field; optuna: `samples` trials suggested by Optuna's TPE as results come in")
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    samples: int = Field(1, ge=1, le=1000, description="grid: repeats of the grid, each drawing the sampled "
                                                       "spaces afresh; random: trials in all")
    search_seed: int = Field(0, description="seed of every draw: the same spec gives the same trials")
    metric: str = Field("val_miou", description="the target that decides 'best' everywhere")
    mode: Literal["max", "min"] = "max"
    load_from: str | None = Field(None, description="a segq checkpoint (checkpoint.pt, its folder or a storage URI) "
                                                    "whose model weights every trial starts from; the optimizer "
                                                    "and the schedule start afresh")

    @property
    def target(self) -> Target:
        return Target(metric=self.metric, mode=self.mode)

    @field_validator("scheduler", mode="before")
    @classmethod
    def scheduler_by_name(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    @field_validator("metric")
    @classmethod
    def known_metric(cls, metric: str) -> str:
        try:
            return Target(metric=metric).metric
        except ValidationError as error:  # Target's own message, reported on this field
            raise ValueError(error.errors()[0]["msg"].removeprefix("Value error, ")) from None

    @field_validator("archs")
    @classmethod
    def known_archs(cls, archs: list[str]) -> list[str]:
        for arch in archs:
            if arch not in ARCHITECTURES:
                raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(sorted(ARCHITECTURES))}")
        return archs

    @field_validator("data")
    @classmethod
    def absolute_data(cls, data: str) -> str:
        return data if "://" in data else str(Path(data).expanduser().resolve())

    def extra_axes(self) -> dict[str, list]:
        """Job-kind specific axes after the training ones (saliency: keep_percent, relevance)."""
        return {}

    def resolve_extra(self, combo: dict[str, Any]) -> dict[str, Any]:
        return {}

    def sections(self) -> tuple[dict[str, Section], Section]:
        """Each architecture's model section and the train section, their search spaces checked."""
        unknown = set(self.models) - set(self.archs)
        if unknown:
            raise SpecError(f"models.{sorted(unknown)[0]}: options given for an architecture not in archs")
        models = {arch: split_section(f"models.{arch}", self.models.get(arch, {})) for arch in self.archs}
        return models, split_section("train", self.train)

    def searched_fields(self) -> set[str]:
        """The model and train fields written as search spaces, in any architecture."""
        models, train = self.sections()
        return set(train.spaces).union(*(section.spaces for section in models.values()))

    def trials(self) -> list[TrialSpec]:
        """The trials of `search` (see grid_configs, random_configs), each under every extra axis;
        none for `search: optuna`, whose trials are suggested as the job runs (suggested_trial)."""
        models, train = self.sections()
        self.check_tuning(train)
        if self.search == "optuna":
            return []
        configs = SEARCHES[self.search](self.archs, models, train, self.samples, random.Random(self.search_seed))
        trials = []
        for arch, model_values, train_values in configs:
            trials += self.trials_of(len(trials), arch, model_values, train_values, models, train)
        return trials

    def trials_of(self, index: int, arch: str, model_values: dict, train_values: dict,
                  models: dict[str, Section], train: Section, name: str | None = None) -> list[TrialSpec]:
        """One drawn configuration as trials, one per combination of the extra axes."""
        model = {**models[arch].fixed, **model_values}
        validate_options(arch, model)
        params = build_train_params({**train.fixed, **train_values})
        extra_axes = self.extra_axes()
        trials = []
        for extra_combo in product(extra_axes):
            varying = {**model_values, **train_values,
                       **{k: v for k, v in extra_combo.items() if len(extra_axes[k]) > 1}}
            trials.append(TrialSpec(name=name or trial_name(index + len(trials), arch, varying), arch=arch,
                                    model=model, train=params, load_from=self.load_from,
                                    **self.resolve_extra(extra_combo)))
        return trials

    def suggested_trial(self, name: str, arch: str, model_values: dict, train_values: dict) -> TrialSpec:
        """The trial of one configuration Optuna suggested, named by the driver."""
        models, train = self.sections()
        return self.trials_of(0, arch, model_values, train_values, models, train, name=name)[0]

    def max_epochs(self, train: Section) -> int:
        """The most epochs any trial of the spec may run (schedulers scale their defaults with it)."""
        if "epochs" in train.spaces:
            kind, args = train.spaces["epochs"]
            return int(max(args)) if kind in LISTS else int(bounds(kind, args)[1])
        epochs = train.fixed.get("epochs", TrainParams().epochs)
        # A wrong type is left to the trials' validation, which names the field.
        return epochs if isinstance(epochs, int) else TrainParams().epochs

    def check_tuning(self, train: Section) -> None:
        """Schedulers and Optuna tune sweeps, and PBT takes no search algorithm (Ray Tune's rule)."""
        if self.search == "optuna" and self.scheduler.kind == "pbt":
            raise SpecError("search: optuna cannot drive a pbt scheduler (PBT mutates its own population); "
                            "use search: grid or random with pbt")
        self.scheduler.check(self.train, self.max_epochs(train))


class SweepSpec(JobSpec):
    kind: Literal["sweep"] = "sweep"


class SaliencySpec(JobSpec):
    """Iterative saliency-based reduction of the training images, one trial per configuration."""

    kind: Literal["saliency"] = "saliency"
    iterations: int = Field(7, ge=1, le=50)
    keep_percent: Any = Field(90.0, description="percent of the still-kept pixels kept per iteration, or {grid: [...]}")
    relevance: Any = Field("softmax_foreground", description="softmax_foreground | random, or {grid: [...]}")
    fill: Literal["zero", "blur", "mean"] = "zero"
    background_classes: list[int] | None = Field(None, description="default: the dataset manifest's")
    reinit: bool = False
    controls: bool = Field(False, description="add a relevance: random trial beside each configuration")

    @field_validator("background_classes")
    @classmethod
    def some_background(cls, classes: list[int] | None) -> list[int] | None:
        return check_background_classes(classes)

    def resolve_background(self, manifest: dict) -> list[int]:
        """The background classes the trials use: the spec's, else the dataset's; checked against
        the dataset's classes, so that a dataset without a background class is refused here."""
        return resolve_background_classes(self.background_classes, manifest, self.data)

    def check_tuning(self, train: Section) -> None:
        if self.scheduler.kind != "fifo":
            raise SpecError(f"scheduler: {self.scheduler.kind} tunes sweeps; a saliency job runs every iteration "
                            "to its end (use scheduler: fifo)")
        if self.search == "optuna":
            raise SpecError("search: optuna tunes sweeps; a saliency job takes search: grid or random")

    def extra_axes(self) -> dict[str, list]:
        relevance = axis_values("relevance", self.relevance)
        if self.controls and "random" not in relevance:
            relevance = relevance + ["random"]
        return {"keep": axis_values("keep_percent", self.keep_percent), "relevance": relevance}

    def resolve_extra(self, combo: dict[str, Any]) -> dict[str, Any]:
        try:
            params = SaliencyParams(iterations=self.iterations, keep_percent=combo["keep"],
                                    relevance=combo["relevance"], fill=self.fill,
                                    background_classes=self.background_classes, reinit=self.reinit)
        except ValidationError as error:
            raise SpecError(describe_validation_error(error)) from None
        return {"saliency": params}


SPEC_KINDS: dict[str, type[JobSpec]] = {"sweep": SweepSpec, "saliency": SaliencySpec}


def product(axes: dict[str, list]) -> list[dict[str, Any]]:
    names = list(axes)
    return [dict(zip(names, combo)) for combo in itertools.product(*(axes[n] for n in names))]


def build_train_params(values: dict[str, Any]) -> TrainParams:
    try:
        return TrainParams(**values)
    except ValidationError as error:
        raise SpecError(describe_validation_error(error, prefix="train")) from None


def name_value(value: Any) -> str:
    """Floats with 3 significant digits, so that a sampled 0.0012345678 names a trial as 0.00123."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def trial_name(index: int, arch: str, varying: dict) -> str:
    """`003_unet_lr=0.003`: the index, the architecture and whatever varies across trials."""
    parts = [f"{index:03d}", arch] + [f"{AXIS_SHORT.get(k, k)}={name_value(v)}" for k, v in varying.items()]
    return "_".join(parts).replace("/", "-")


def describe_validation_error(error: ValidationError, prefix: str = "") -> str:
    """One line naming the field: 'train.lr: Input should be greater than 0 (got -1)'."""
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    field = ".".join(part for part in (prefix, location) if part) or "spec"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"].startswith("value_error"):
        message = message.removeprefix("Value error, ")
    got = first.get("input")
    suffix = f" (got {got!r})" if first["type"] not in ("extra_forbidden", "missing") and not isinstance(got, dict) else ""
    return f"{field}: {message}{suffix}"


def parse_spec(model: type[BaseModel], data: dict, source: str | None = None) -> BaseModel:
    """Validate a spec; errors name the field, prefixed by the spec file when there is one."""
    prefix = f"{source}: " if source else ""
    try:
        return model(**data)
    except ValidationError as error:
        raise SpecError(prefix + describe_validation_error(error)) from None
    except SpecError as error:
        raise SpecError(prefix + str(error)) from None


def expand_trials(spec: JobSpec, source: str | None = None) -> list[TrialSpec]:
    """The spec's trials; errors name the field, prefixed by the spec file when there is one."""
    try:
        return spec.trials()
    except SpecError as error:
        raise SpecError((f"{source}: " if source else "") + str(error)) from None


def load_yaml(path: Path) -> dict:
    if not path.exists():
        raise SpecError(f"{path}: no such spec file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level")
    return data
