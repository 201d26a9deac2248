"""Trial checkpoints: one file holding everything needed to resume or to predict.

Saved as plain tensors, numbers, strings, lists and dicts, so loading works with weights_only=True.
Both kinds a trial writes, the per-epoch checkpoint and a saliency iteration's model, are built
by `checkpoint_state`, so predict, eval and export read them the same way.
"""
from __future__ import annotations

from pathlib import Path

import torch

from workers.exceptions import CheckpointError
from workers.trial_spec import TrialContext, TrialSpec

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = "segq-checkpoint"


def checkpoint_state(model: torch.nn.Module, trial: TrialSpec, context: TrialContext, manifest: dict,
                     **entries) -> dict:
    """The model with what rebuilds and preprocesses for it, plus the caller's `entries`: what a
    resume needs (optimizer, scheduler, progress, epoch, metrics) or a saliency iteration's number."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "trial": trial.model_dump(),
        "job_id": context.job_id,
        "num_classes": manifest["num_classes"],
        "dataset": dataset_facts(manifest, context.data),
        **entries,
    }


def dataset_facts(manifest: dict, root: str) -> dict:
    """What predict/eval need to preprocess exactly as in training."""
    return {
        "root": root,
        "source": manifest["source"],
        "image_size": manifest["image_size"],
        "class_names": manifest["class_names"],
        "palette": manifest["palette"],
        "ignore_index": manifest["ignore_index"],
        "label_mode": manifest.get("label_mode"),
        "mean": manifest["mean"],
        "std": manifest["std"],
    }


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
