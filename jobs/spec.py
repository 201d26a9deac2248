"""Job specs (pydantic, extra fields forbidden) and their expansion into trials.

A value written as `{grid: [a, b]}` is a grid axis; a sweep runs the cartesian product of all
axes, one trial per combination. A value written as `{choice: [a, b]}` is drawn at random (seeded),
once for each of `samples` repetitions of the grid. Each trial is fully resolved: no search
syntax is left in it.

A spec is validated (`parse_spec`) and expanded (`expand_trials`) once, at submission; the job
record keeps the resulting trials, so the driver runs exactly those and never draws again.
"""
from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from seg_models.exceptions import SpecError
from seg_models.registry import ARCHITECTURES, validate_options
from workers.target import Target
from workers.trial_spec import SaliencyParams, Strict, TrainParams, TrialSpec, check_background_classes

AXIS_SHORT = {"batch_size": "bs", "weight_decay": "wd", "epochs": "ep"}


class Resources(Strict):
    workers_per_trial: int = Field(1, ge=1)
    cpus_per_worker: float = Field(0.5, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    max_concurrent_trials: int | None = Field(None, ge=1)
    max_failures: int = Field(2, ge=0, description="worker failures a trial survives (resumes from checkpoint)")


def search_kind(value: Any) -> str | None:
    """`grid` or `choice` for `{grid: [...]}` / `{choice: [...]}`, None for a plain value."""
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("grid", "choice"):
        return next(iter(value))
    return None


def axis_values(name: str, value: Any) -> list:
    kind = search_kind(value)
    if kind is None:
        return [value]
    values = value[kind]
    if not isinstance(values, list) or not values:
        raise SpecError(f"{name}: {kind} must be a non-empty list")
    return values


def split_axes(prefix: str, values: dict[str, Any]) -> tuple[dict[str, list], dict[str, list], dict[str, Any]]:
    """(grid axes, choice axes, fixed values) of a section."""
    grid = {k: axis_values(f"{prefix}.{k}", v) for k, v in values.items() if search_kind(v) == "grid"}
    choice = {k: axis_values(f"{prefix}.{k}", v) for k, v in values.items() if search_kind(v) == "choice"}
    fixed = {k: v for k, v in values.items() if search_kind(v) is None}
    return grid, choice, fixed


def draw(choices: dict[str, list], rng: random.Random) -> dict[str, Any]:
    return {name: rng.choice(values) for name, values in choices.items()}


class JobSpec(Strict):
    """What sweeps and saliency jobs share: data, architectures x options x hyperparameters, resources."""

    name: str = ""
    data: str
    archs: list[str] = Field(min_length=1)
    models: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-architecture options")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainParams; values may be {grid: [...]}")
    resources: Resources = Field(default_factory=Resources)
    samples: int = Field(1, ge=1, le=1000, description="draws of the {choice: [...]} values per grid point")
    search_seed: int = Field(0, description="seed of the choice draws")
    metric: str = Field("val_miou", description="the target that decides 'best' everywhere")
    mode: Literal["max", "min"] = "max"

    @property
    def target(self) -> Target:
        return Target(metric=self.metric, mode=self.mode)

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

    def trials(self) -> list[TrialSpec]:
        """Every grid combination, `samples` times with fresh draws of the choice values (seeded)."""
        unknown = set(self.models) - set(self.archs)
        if unknown:
            raise SpecError(f"models.{sorted(unknown)[0]}: options given for an architecture not in archs")
        train_grid, train_choice, train_fixed = split_axes("train", self.train)
        extra_axes = self.extra_axes()
        rng = random.Random(self.search_seed)
        trials = []
        for arch in self.archs:
            model_grid, model_choice, model_fixed = split_axes(f"models.{arch}", self.models.get(arch, {}))
            for _ in range(self.samples):
                model_drawn, train_drawn = draw(model_choice, rng), draw(train_choice, rng)
                for model_combo in product(model_grid):
                    model = {**model_fixed, **model_drawn, **model_combo}
                    validate_options(arch, model)
                    for train_combo in product(train_grid):
                        train = build_train_params({**train_fixed, **train_drawn, **train_combo})
                        for extra_combo in product(extra_axes):
                            varying = {**model_drawn, **model_combo, **train_drawn, **train_combo,
                                       **{k: v for k, v in extra_combo.items() if len(extra_axes[k]) > 1}}
                            name = trial_name(len(trials), arch, varying)
                            trials.append(TrialSpec(name=name, arch=arch, model=model, train=train,
                                                    **self.resolve_extra(extra_combo)))
        return trials


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
        classes = self.background_classes
        if classes is None:
            classes = manifest.get("background_classes") or []
            if not classes:
                raise SpecError(f"background_classes: {self.data} has no background class "
                                f"({manifest.get('source')} {manifest.get('label_mode') or ''}".rstrip()
                                + "); set background_classes in the spec to the class ids that are not "
                                  "foreground, e.g. background_classes: [0]")
        outside = [c for c in classes if not 0 <= c < manifest["num_classes"]]
        if outside:
            raise SpecError(f"background_classes: class {outside[0]} is not one of the dataset's "
                            f"{manifest['num_classes']} classes (0..{manifest['num_classes'] - 1})")
        return classes

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


def trial_name(index: int, arch: str, varying: dict) -> str:
    """`003_unet_lr=0.003`: the index, the architecture and whatever varies across trials."""
    parts = [f"{index:03d}", arch] + [f"{AXIS_SHORT.get(k, k)}={v}" for k, v in varying.items()]
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
