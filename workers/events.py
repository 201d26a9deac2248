"""The event contract between a trial's rank 0 (workers.publisher), the aggregator (jobs.results.aggregator)
and the summary (jobs.results.summary).

Events travel as JSON in the `data` field of a job's Redis stream, tagged by `type`. Each event
that carries numbers is keyed by (trial, iteration, epoch, split), so a replay after a restart
replaces what it published before instead of adding to it:

    trial     facts about a trial (architecture, parameters, ...) and its status
    metrics   one epoch's training figures or one split's scores
    best      rank 0's decision after an epoch: the iteration's best epoch by the job's target
    saliency  what a saliency iteration stored: kept fraction, checkpoint, sample grid
    perturbation  PBT's exploit: which trial's checkpoint a trial took over, at which epoch
"""
from __future__ import annotations

import time
from enum import Enum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError

from workers.target import Target


class TrialStatus(str, Enum):
    PENDING = "pending"  # no status event yet
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"  # stopped by a scheduler: a result of its own, not a failure

    @property
    def is_final(self) -> bool:
        return self in (TrialStatus.FINISHED, TrialStatus.FAILED, TrialStatus.STOPPED)


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainMetrics(Contract):
    """One epoch of training on one trial (summed over its ranks)."""

    loss: float
    lr: float
    weight_decay: float | None = None  # the optimizer's, in effect during the epoch
    momentum: float | None = None  # SGD's, in effect during the epoch (None for Adam and AdamW)
    epoch_time_s: float
    eval_time_s: float | None = None  # scoring the epoch's evaluated splits (val; test only if it is the target)
    images: int
    images_per_s: float
    peak_memory_mb: float | None = None
    world_size: int | None = None  # the workers the epoch ran on (an elastic trial's change with resizes)


class SplitScores(Contract):
    """Scores of one evaluated split (seg_models.metrics.scores_from_matrix); None where undefined."""

    pixel_acc: float | None
    mean_acc: float | None
    miou: float | None
    mdice: float | None
    fwiou: float | None
    per_class_iou: dict[str, float | None] = Field(default_factory=dict)
    per_class_dice: dict[str, float | None] = Field(default_factory=dict)
    per_class_precision: dict[str, float | None] = Field(default_factory=dict)
    per_class_acc: dict[str, float | None] = Field(default_factory=dict)
    pixels: int = 0


class TrialEvent(Contract):
    type: Literal["trial"] = "trial"
    trial: str
    ts: float = Field(default_factory=time.time)
    status: TrialStatus | None = None
    arch: str | None = None
    params: dict[str, Any] | None = None
    workers: int | None = None  # an elastic trial's minimum
    workers_max: int | None = None  # an elastic trial's maximum
    gpus_per_worker: float | None = None
    cpus_per_worker: float | None = None
    cpus: float | None = None  # the CPUs the trial holds from Ray: its workers' and its Tune trial's own
    gpus: float | None = None  # the GPUs it holds (workers x gpus_per_worker)
    runner: Literal["trial", "train"] | None = None  # where it trains: in its Tune trial, or through Ray Train
    num_params: int | None = None
    protocol: dict[str, Any] | None = None
    error: str | None = None
    # One run of the trial's Tune function (its whole run; a pause or an exploit ends one and a
    # resume starts the next): {started, seconds}, start-up, epochs and evaluation included
    run_segment: dict[str, float] | None = None
    best_checkpoint: str | None = None
    reason: str | None = None  # why a scheduler stopped the trial
    rung: int | None = None  # the epoch of the rung (or bracket step) it was stopped at
    stopped_at_epoch: int | None = None
    ranks: list[dict[str, Any]] | None = None  # rank, node, node_id, pid, host of each rank of the latest attempt
    # a worker group started: one attempt of the trial (see jobs.results.aggregator)
    attempt_started: float | None = None
    dropped_events: int | None = None  # metric events the publisher's full buffer dropped
    process_rss_mb: float | None = None  # the trial process's resident memory as the trial ended

    def facts(self) -> dict[str, Any]:
        """The facts this event sets (what was given), without the envelope."""
        return self.model_dump(mode="json", exclude={"type", "trial", "ts"}, exclude_none=True)


class EpochEvent(Contract):
    """What every event about one epoch of a trial's iteration carries, keyed so a replay replaces it."""

    trial: str
    ts: float = Field(default_factory=time.time)
    iteration: int = Field(1, ge=1)
    epoch: int = Field(ge=1)


def metrics_kind(metrics: Any) -> str:
    """Which model a metrics event's figures are, told by a field only training figures have (so a
    val event is never first tried, and failed, as training figures)."""
    if isinstance(metrics, dict):
        return "train" if "loss" in metrics else "scores"
    return "train" if isinstance(metrics, TrainMetrics) else "scores"


class MetricsEvent(EpochEvent):
    type: Literal["metrics"] = "metrics"
    split: Literal["train", "val", "test"]
    metrics: Annotated[Union[Annotated[TrainMetrics, Tag("train")], Annotated[SplitScores, Tag("scores")]],
                       Discriminator(metrics_kind)]


class BestEvent(EpochEvent):
    """After `epoch`, the iteration's best epoch is `best_epoch`, with `value` of `metric`."""

    type: Literal["best"] = "best"
    best_epoch: int = Field(ge=1)
    value: float | None
    metric: str
    mode: Literal["max", "min"]

    @property
    def target(self) -> Target:
        return Target(metric=self.metric, mode=self.mode)


class SaliencyEvent(Contract):
    type: Literal["saliency"] = "saliency"
    trial: str
    ts: float = Field(default_factory=time.time)
    iteration: int = Field(ge=1)
    kept_fraction: float
    next_kept_fraction: float | None
    checkpoint: str
    samples: str


class PerturbationEvent(EpochEvent):
    """PBT made `trial` take over `donor`'s checkpoint of `epoch`, under the trial's mutated `train`."""

    type: Literal["perturbation"] = "perturbation"
    donor: str
    train: dict[str, Any]


Event = Annotated[Union[TrialEvent, MetricsEvent, BestEvent, SaliencyEvent, PerturbationEvent],
                  Field(discriminator="type")]
EVENT_ADAPTER: TypeAdapter = TypeAdapter(Event)


def encode_event(event: BaseModel) -> str:
    return event.model_dump_json()


def decode_event(data: str | bytes | None) -> Event | None:
    """The event in a stream entry's `data`, or None when it is missing or breaks the contract."""
    if data is None:
        return None
    try:
        return EVENT_ADAPTER.validate_json(data)
    except ValidationError:
        return None
