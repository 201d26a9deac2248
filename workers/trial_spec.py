"""One fully resolved trial, as its workers receive it.

The job spec (jobs.spec) expands into these once, at submission; the job record stores them and
each worker rebuilds its `TrialSpec` once from the dict Ray Train hands it.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from workers.target import Target


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainParams(Strict):
    """Hyperparameters of one trial."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    lr_scaling: Literal["none", "linear"] = Field("none", description="linear: the lr is multiplied by world size / "
                                                  "the job's minimum workers (elastic trials)")
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = Field(0.9, ge=0, lt=1)
    loss: Literal["ce", "weighted_ce", "dice", "ce_dice"] = "ce"
    class_weights: list[float] | None = None
    scheduler: Literal["none", "plateau", "poly", "cosine"] = "none"
    warmup_epochs: int = Field(0, ge=0)
    augment: Literal["none", "basic", "strong"] = "basic"
    early_stop_patience: int | None = Field(None, ge=1)
    sync_batchnorm: bool = False
    amp: Literal["off", "bf16", "fp16"] = "off"
    channels_last: bool = False
    loader_workers: int = Field(0, ge=0, description="DataLoader processes per DDP worker (0: load in the worker)")
    seed: int = Field(0, ge=0)
    deterministic: bool = Field(False, description="deterministic kernels where torch has them (for GPUs)")


class SaliencyParams(Strict):
    """How a saliency trial reduces its training images between iterations  (see workers.saliency)."""

    iterations: int = Field(7, ge=1, le=50)
    keep_percent: float = Field(90.0, gt=0, lt=100)
    relevance: Literal["softmax_foreground", "random"] = "softmax_foreground"
    fill: Literal["zero", "blur", "mean"] = "zero"
    background_classes: list[int] | None = Field(None, description="default: the manifest's background classes")
    reinit: bool = False

    @field_validator("background_classes")
    @classmethod
    def some_background(cls, classes: list[int] | None) -> list[int] | None:
        return check_background_classes(classes)


def check_background_classes(classes: list[int] | None) -> list[int] | None:
    """An explicit empty list is an error, never a silent fallback to class 0."""
    if classes is not None and not classes:
        raise ValueError("an empty list makes every class relevant; name the background class ids, e.g. [0], "
                         "or leave the field out to use the dataset's")
    return classes


class TrialSpec(Strict):
    """One fully resolved trial: no search syntax is left in it."""

    name: str
    arch: str
    model: dict[str, Any]
    train: TrainParams
    saliency: SaliencyParams | None = None
    load_from: str | None = None  # a segq checkpoint whose model weights the trial starts from

    @property
    def iterations(self) -> int:
        return self.saliency.iterations if self.saliency else 1


class StartFrom(Strict):
    """A checkpoint Tune hands a trial at its start: its own (resumed after a pause) or, when PBT
    exploits another trial, that trial's, under this trial's (mutated) parameters."""

    checkpoint: str  # a Ray Train checkpoint directory
    trial: str  # the trial that wrote it
    iteration: int = Field(1, ge=1)
    epoch: int = Field(ge=1)


class TrialContext(Strict):
    """Where a trial's workers find the job: its data, storage, event stream and target metric."""

    job_id: str
    data: str
    storage: str
    redis_url: str
    events_stream: str  # the Redis stream key rank 0 publishes to (the key schema lives in jobs.keys)
    target: Target = Field(default_factory=Target)
    min_workers: int = Field(1, ge=1)  # the world size `lr_scaling` scales from (an elastic trial's minimum)
