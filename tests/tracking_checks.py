"""Reading exported runs back the way their users do (tests/test_tracking.py, tests/test_sweep.py)."""
from __future__ import annotations

from pathlib import Path


def tensorboard_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one scalar of a TensorBoard run, through TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]
