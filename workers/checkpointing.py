"""Trial checkpoints: one file holding everything needed to resume or to predict.

Saved as plain tensors, numbers, strings, lists and dicts, so loading works with weights_only=True.
Both kinds a trial writes, the per-epoch checkpoint and a saliency iteration's model (the model of
the iteration's best epoch), are built by `checkpoint_state`, so predict, eval and export read them
the same way.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from workers import storage
from workers.exceptions import CheckpointError
from workers.files import atomic_path
from workers.trial_spec import TrialContext, TrialSpec

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = "segq-checkpoint"

# Ray Train keeps the top `num_to_keep` checkpoints by a reported score, plus the latest, and ranks
# the later of two equal scores higher, while the one rule (workers.target) keeps the earlier
# epoch: ranked by the target itself, a tie could cost the best epoch its checkpoint. So each
# report carries this score instead, 1.0 when its epoch became the iteration's best and 0.0
# otherwise. The current best is then the latest report scored 1.0, which Ray ranks above every
# other whatever the ties (and whichever metric decides, training loss included), so
# num_to_keep=1 keeps exactly the best epoch's checkpoint and the latest one.
RETENTION_SCORE = "became_best"


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


def scoring_setup(world_size: int, batch_size: int) -> dict:
    """How a trial scores its model: each of `world_size` ranks its own rows, in batches of
    `batch_size`, on `threads` CPU threads. Float sums, and so near-tied argmaxes, depend on the
    threads and on a batch's size, so `segq eval` replays the same setup to give the same scores."""
    return {"world_size": world_size, "batch_size": batch_size, "threads": torch.get_num_threads()}


def save_checkpoint(directory: Path, state: dict) -> Path:
    """Written under a temporary name, then renamed: a reader never sees half a checkpoint."""
    path = Path(directory) / CHECKPOINT_FILE
    with atomic_path(path) as temporary:
        torch.save(state, temporary)
    return path


def checkpoint_file(path: str | Path) -> Path:
    """Accept the checkpoint file itself or the directory Ray Train stored it in."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    return path


def stored_checkpoint_file(location: str) -> str:
    """`checkpoint_file` for a checkpoint on URI storage (workers.storage): the file or its folder."""
    if storage.is_dir(location):
        location = storage.join(location, CHECKPOINT_FILE)
    if not storage.exists(location):
        raise CheckpointError(f"{location}: no such checkpoint")
    return location


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint from a path, or from a storage URI (`s3://...`, `gs://...`), read into memory."""
    if storage.is_uri(path):
        file = stored_checkpoint_file(str(path))
        source = io.BytesIO(storage.read_bytes(file))
    else:
        file = source = checkpoint_file(path)
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning: the error below says it all
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(source, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for a bad file
        raise CheckpointError(f"{file}: {why_unloadable(error)}; use a checkpoint.pt that a segq trial wrote") from None
    if not isinstance(state, dict) or "model" not in state or "trial" not in state:
        raise CheckpointError(f"{file}: not a segq checkpoint (no model/trial entries)")
    return state


def check_starting_weights(location: str, trials: list[TrialSpec], num_classes: int | None) -> None:
    """`load_from`: a segq checkpoint whose weights fit every trial's model, tensor for tensor (the
    same architecture and model options, and the dataset's number of classes when it is known)."""
    from seg_models.registry import build_model

    try:
        state = load_checkpoint(location)
    except CheckpointError as error:
        raise CheckpointError(f"load_from: {error}") from None
    saved = {key: tuple(value.shape) for key, value in state["model"].items()}
    checked: set[str] = set()
    for trial in trials:
        model = repr((trial.arch, sorted(trial.model.items())))
        if model in checked:
            continue
        shapes = {key: tuple(value.shape) for key, value in
                  build_model(trial.arch, num_classes or state["num_classes"], trial.model).state_dict().items()}
        checked.add(model)
        if shapes != saved:
            source = state["trial"]
            raise CheckpointError(
                f"load_from: {location} holds a {source['arch']} model {source['model']} of {state['num_classes']} "
                f"classes, whose weights do not fit trial {trial.name} ({trial.arch} {trial.model}"
                f"{f' of {num_classes} classes' if num_classes else ''}); give a checkpoint of the same "
                "architecture, model options and classes")


def why_unloadable(error: Exception) -> str:
    """torch's reason in one line, without its advice to load with weights_only=False (that would
    run whatever code the file holds)."""
    if "GLOBAL" in str(error):
        return "refused: it holds objects other than tensors and plain values, and none of its code was run"
    lines = [line for line in str(error).splitlines() if line.strip() and "weights_only" not in line]
    return f"not a loadable checkpoint ({lines[-1].strip() if lines else type(error).__name__})"


@dataclass
class BestWeights:
    """A copy, on the CPU, of the model at the iteration's best epoch so far (0: none yet).

    A saliency iteration ends with these weights: they are its stored model, they derive the next
    keep-masks and the next iteration starts from them. Every rank holds the same copy (DDP keeps
    the parameters equal, and the buffers are rank 0's when an epoch is scored).
    """

    epoch: int = 0
    weights: dict | None = None

    def take(self, model: torch.nn.Module, epoch: int) -> None:
        self.epoch = epoch
        self.weights = {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}

    def checkpoint_entry(self, epoch: int) -> dict | None:
        """What a checkpoint of `epoch` stores of them: nothing when its own model is the best."""
        return None if self.epoch == epoch else self.weights

    @classmethod
    def from_checkpoint(cls, saved: dict) -> "BestWeights":
        best_epoch = saved["progress"]["best_epoch"]
        weights = saved["model"] if best_epoch == saved.get("epoch") else saved.get("best_model")
        return cls(epoch=best_epoch, weights=weights)
