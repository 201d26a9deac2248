"""The target metric of a job and the one rule that decides "best" everywhere.

Rank 0 of a trial decides its best epoch with it and publishes the decision; checkpoint
retention, the leaderboard, the summary and `submit --wait` rank with the same rule:

- a missing value (None) is never better than anything, and a score of 0.0 is a score;
- a tie keeps the incumbent, so among equal values the earliest epoch (or first trial) wins.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, field_validator

from seg_models.metrics import SCORE_NAMES

METRICS = tuple(f"val_{name}" for name in SCORE_NAMES) + ("train_loss",)

Key = TypeVar("Key")


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = "val_miou"
    mode: Literal["max", "min"] = "max"

    @field_validator("metric")
    @classmethod
    def known_metric(cls, metric: str) -> str:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
        return metric

    @property
    def split(self) -> str:
        return self.metric.split("_", 1)[0]

    @property
    def score(self) -> str:
        return self.metric.split("_", 1)[1]

    def value_of(self, scores_by_split: dict[str, dict | None]) -> float | None:
        """The target's value among one epoch's scores ({"val": {...}, "train": {...}})."""
        value = (scores_by_split.get(self.split) or {}).get(self.score)
        return None if value is None else float(value)

    def better(self, candidate: float | None, incumbent: float | None) -> bool:
        """True when `candidate` beats `incumbent` strictly (ties keep the incumbent)."""
        if candidate is None:
            return False
        if incumbent is None:
            return True
        return candidate > incumbent if self.mode == "max" else candidate < incumbent

    def best(self, items: Iterable[tuple[Key, float | None]]) -> tuple[Key, float | None] | None:
        """The first (key, value) whose value no later one beats; None when there are no items."""
        winner = None
        for key, value in items:
            if winner is None or self.better(value, winner[1]):
                winner = (key, value)
        return winner

    def ranked(self, items: Iterable[tuple[Key, float | None]]) -> list[Key]:
        """Keys best first; missing values last; ties in the given order."""
        listed = list(items)
        present = [(key, value) for key, value in listed if value is not None]
        present.sort(key=lambda pair: -pair[1] if self.mode == "max" else pair[1])  # stable: ties keep order
        return [key for key, _ in present] + [key for key, value in listed if value is None]
