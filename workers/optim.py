"""Optimizers and learning-rate schedules selected by name in the trial's TrainParams."""
from __future__ import annotations

import math

import torch


def build_optimizer(params, name: str, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=momentum > 0)
    raise ValueError(f"unknown optimizer {name!r}; valid: adam, adamw, sgd")


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, epochs: int, warmup_epochs: int,
                    mode: str):
    """Stepped once per epoch; `plateau` is stepped with the trial's target value, in its `mode`."""
    if name == "none":
        return None
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=0.5, patience=2)

    def factor(epoch: int) -> float:
        if epoch < warmup_epochs:
            return (epoch + 1) / (warmup_epochs + 1)
        progress = (epoch - warmup_epochs) / max(1, epochs - warmup_epochs)
        if name == "poly":
            return (1 - progress) ** 0.9
        if name == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        raise ValueError(f"unknown scheduler {name!r}; valid: none, plateau, poly, cosine")

    factor(0)  # reject an unknown name now, not at the end of the first epoch
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def step_scheduler(scheduler, target_value: float) -> None:
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(target_value)
    else:
        scheduler.step()


def apply_hyperparameters(optimizer: torch.optim.Optimizer, scheduler, train, saved_lr: float) -> None:
    """After loading another trial's optimizer state (PBT), every group takes `train`'s
    hyperparameters: the lr rescaled by train.lr / saved_lr where the schedule stands (and where it
    would take it next), the weight decay, and SGD's momentum. `train` is the trial's TrainParams."""
    rescale_lr(optimizer, scheduler, train.lr / saved_lr)
    for group in optimizer.param_groups:
        group["weight_decay"] = train.weight_decay
        if "momentum" in group:
            group["momentum"] = train.momentum
            group["nesterov"] = train.momentum > 0


def rescale_lr(optimizer: torch.optim.Optimizer, scheduler, factor: float) -> None:
    """Multiply the learning rate, where the schedule would take it next included, by `factor`."""
    if factor == 1.0:
        return
    for group in optimizer.param_groups:
        group["lr"] *= factor
        if "initial_lr" in group:
            group["initial_lr"] *= factor
    if scheduler is not None and hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
