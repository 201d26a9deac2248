"""The lifecycle of a saliency trial's iterations around the saliency step (workers.saliency).

Before iteration i > 1: load the keep-masks iteration i-1 derived, and with `reinit` start from
a fresh model. After iteration i: go back to the model of its best epoch (by the job's target),
the one whose scores the iteration's row reports; derive the next keep-masks from it (every rank
scores its share of the training rows), store it, draw the sample grid, publish a SaliencyEvent
and write meta.json, which marks the iteration as finished. Without `reinit`, the next iteration
starts from that same model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from seg_models.registry import build_model
from workers.checkpointing import BestWeights, checkpoint_state, save_checkpoint, scoring_setup
from workers.data import copy_rows, to_model_input
from workers.saliency import (KeepMasks, foreground_log_odds, iteration_dir, random_relevance, read_meta,
                              resolve_background_classes, select_keep, tie_keys, write_meta, write_rank_masks)
from workers.samples import write_sample_grid
from workers.seeding import reinit_seed
from workers.shards import rank_indices
from workers.trial_run import IterationState, TrialRun


def masks_dir(run: TrialRun, iteration: int) -> Path:
    return iteration_dir(run.context.data, run.context.job_id, run.trial.name, iteration)


def last_finished_iteration(run: TrialRun) -> int:
    """The highest saliency iteration whose model, masks and meta.json are all stored (0: none)."""
    if run.trial.saliency is None:
        return 0
    finished = 0
    for iteration in range(1, run.trial.iterations + 1):
        if read_meta(masks_dir(run, iteration)) is None:
            break
        finished = iteration
    return finished


def prepare_iteration(run: TrialRun, iteration: int, resuming: bool) -> KeepMasks | None:
    """The keep-masks this iteration trains on (None: unmasked). With `reinit`, the model starts
    afresh, unless the iteration is resumed from a checkpoint that already holds its weights."""
    saliency = run.trial.saliency
    if saliency is None or iteration == 1:
        return None
    height, width = run.manifest["image_size"]
    keep_masks = KeepMasks(masks_dir(run, iteration - 1), height, width)
    if saliency.reinit and not resuming:
        torch.manual_seed(reinit_seed(run.trial.train.seed, iteration))
        fresh = build_model(run.trial.arch, run.manifest["num_classes"], run.trial.model)
        run.core.load_state_dict(fresh.state_dict())
    return keep_masks


def finish_iteration(run: TrialRun, state: IterationState, best: BestWeights, last: bool) -> None:
    """On every rank, load the best epoch's weights and derive the next keep-masks with them (the
    ranks share the rows), then rank 0 stores that model and records the iteration."""
    run.core.load_state_dict(best.weights)
    directory = masks_dir(run, state.iteration)
    directory.mkdir(parents=True, exist_ok=True)
    if not last:
        compute_keep_masks(run, state, directory)
    if dist.is_initialized():
        dist.barrier()
    if run.is_main:
        record_iteration(run, state, best.epoch, directory, last)


def record_iteration(run: TrialRun, state: IterationState, best_epoch: int, directory: Path, last: bool) -> None:
    model_path = save_checkpoint(directory, checkpoint_state(
        run.core, run.trial, run.context, run.manifest, iteration=state.iteration, epoch=best_epoch,
        scoring=scoring_setup(run.world_size, run.trial.train.batch_size)))
    height, width = run.manifest["image_size"]
    trained_fraction = state.keep_masks.kept_fraction() if state.keep_masks is not None else 1.0
    next_fraction = None if last else KeepMasks(directory, height, width).kept_fraction()
    grid = write_sample_grid(state.train_data, directory / "samples.png", state.keep_masks,
                             title=f"{run.trial.name} iteration {state.iteration}: kept {trained_fraction:.1%}")
    # Published before meta.json marks the iteration finished: a restart in between redoes the
    # finish and publishes the same event again, which replaces the first.
    run.publisher.saliency_event(state.iteration, trained_fraction, next_fraction, str(model_path), str(grid))
    write_meta(directory, {
        "iteration": state.iteration,
        "kept_fraction": trained_fraction,
        "next_kept_fraction": next_fraction,
        "saliency": run.trial.saliency.model_dump(),
        "checkpoint": str(model_path),
        "samples": str(grid),
        "trial": run.trial.model_dump(),
        "rows": len(run.splits["train"]),
    })


@torch.no_grad()
def compute_keep_masks(run: TrialRun, state: IterationState, directory: Path) -> None:
    """This rank's share of the training rows: relevance of each still-kept pixel, keep the top P%."""
    height, width = run.manifest["image_size"]
    batch_size = run.trial.train.batch_size
    plain = state.train_data.without_augmentation()  # the images as this iteration trained on them
    rows = rank_indices(len(plain), run.rank, run.world_size, epoch=0, seed=0, shuffle=False, pad=False)
    run.core.eval()
    keeps = [np.zeros((0, height, width), bool)]
    for start in range(0, len(rows), batch_size):
        batch_rows = rows[start:start + batch_size].tolist()
        images = copy_rows([plain[row][0] for row in batch_rows], run.pin_memory)
        images = to_model_input(images, plain.normalize, run.device, run.memory_format)
        relevance = pixel_relevance(run, state.iteration, batch_rows, images)
        kept = kept_pixels(state.keep_masks, batch_rows, height * width, run.device)
        ties = tie_keys(batch_rows, height * width, run.trial.train.seed, state.iteration, run.device)
        selected = select_keep(relevance, kept, run.trial.saliency.keep_percent, ties)
        keeps.append(selected.reshape(-1, height, width).cpu().numpy())
    write_rank_masks(directory, run.rank, rows, np.concatenate(keeps))


def pixel_relevance(run: TrialRun, iteration: int, rows: list[int], images: torch.Tensor) -> torch.Tensor:
    """(B, H*W) relevance: the model's foreground log-odds, or the random control's noise."""
    saliency = run.trial.saliency
    if saliency.relevance == "random":
        height, width = run.manifest["image_size"]
        return random_relevance(rows, height * width, run.trial.train.seed, iteration, run.device)
    return foreground_log_odds(run.core(images), background_classes(run)).reshape(len(rows), -1)


def background_classes(run: TrialRun) -> list[int]:
    """The trial's (resolved at submission), else the dataset's (workers.saliency's one rule)."""
    return resolve_background_classes(run.trial.saliency.background_classes, run.manifest, run.context.data)


def kept_pixels(keep_masks: KeepMasks | None, rows: list[int], pixels: int, device: torch.device) -> torch.Tensor:
    """(B, H*W) bool: the pixels still kept before this iteration (all of them in the first)."""
    if keep_masks is None:
        return torch.ones(len(rows), pixels, dtype=torch.bool, device=device)
    kept = torch.from_numpy(np.stack([keep_masks.get(row) for row in rows])).to(device)
    return kept.reshape(len(rows), -1).bool()
