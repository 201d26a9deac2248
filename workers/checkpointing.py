"""Trial checkpoints: one file holding everything needed to resume or to predict.

Saved as plain tensors, numbers, strings, lists and dicts, so loading works with weights_only=True.
"""
from __future__ import annotations

from pathlib import Path

import torch

from cluster.exceptions import CheckpointError

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(directory: Path, state: dict) -> Path:
    path = Path(directory) / CHECKPOINT_FILE
    torch.save(state, path)
    return path


def checkpoint_file(path: str | Path) -> Path:
    """Accept the checkpoint file itself or the directory Ray Train stored it in."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    file = checkpoint_file(path)
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for a bad file
        raise CheckpointError(f"{file}: not a loadable checkpoint ({str(error).splitlines()[0]})") from None
    if not isinstance(state, dict) or "model" not in state or "trial" not in state:
        raise CheckpointError(f"{file}: not a segq checkpoint (no model/trial entries)")
    return state
