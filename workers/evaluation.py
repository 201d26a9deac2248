"""Scores of a model over whole splits, shared by the train loop and `segq eval`.

One confusion matrix per split: each rank counts its own rows, and the matrices are summed as
integers across ranks (seg_models.metrics). Nothing here needs Ray.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from seg_models.metrics import ConfusionMatrix
from workers.data import SplitDataset, make_loader, to_model_input, to_model_target
from workers.shards import rank_indices

EVAL_SPLITS = ("val", "test")


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: SplitDataset, rank: int, world_size: int, batch_size: int,
             device: torch.device, manifest: dict, memory_format=torch.contiguous_format, workers: int = 0,
             pin_memory: bool = False) -> dict:
    """Scores over the whole split, identical on every rank, whatever the number of loader `workers`.

    Runs the unwrapped model: ranks may see a different number of batches, and DDP's forward
    would try to synchronise buffers on each of them. Evaluation images are never masked.
    """
    matrix = count_rank_rows(model, dataset, rank, world_size, batch_size, device, manifest, memory_format,
                             workers, pin_memory)
    matrix.all_reduce()
    return matrix.compute(manifest["class_names"])


@torch.no_grad()
def count_rank_rows(model: torch.nn.Module, dataset: SplitDataset, rank: int, world_size: int, batch_size: int,
                    device: torch.device, manifest: dict, memory_format=torch.contiguous_format, workers: int = 0,
                    pin_memory: bool = False) -> ConfusionMatrix:
    """The confusion matrix of one rank's rows of the split, in that rank's batches."""
    model.eval()
    matrix = ConfusionMatrix(manifest["num_classes"], manifest["ignore_index"], device=device)
    rows = rank_indices(len(dataset), rank, world_size, epoch=0, seed=0, shuffle=False, pad=False)
    for images, masks in make_loader(dataset, rows, batch_size, training=False, workers=workers,
                                     pin_memory=pin_memory):
        logits = model(to_model_input(images, dataset.normalize, device, memory_format))
        matrix.update(to_model_target(masks, device), logits.argmax(dim=1))
    return matrix


def evaluation_protocol(manifest: dict) -> dict:
    """How the scores were obtained, so results are never compared across protocols by accident."""
    height, width = manifest["image_size"]
    return {
        "source": manifest["source"],
        "label_mode": manifest.get("label_mode") or "dataset",
        "ignore_index": manifest["ignore_index"],
        "resolution": f"{height}x{width}",
        "inference": "whole-image",
    }


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics) before evaluating. Each
    rank's last training forward updated them with its own batch; without this, ranks would
    evaluate slightly different models, and none of them exactly the one rank 0 checkpoints."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
