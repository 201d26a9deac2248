"""Where a worker's random numbers come from.

Every draw is a pure function of the trial seed and of where it happens, so one spec gives the
same numbers on every run:

- the initial weights: the trial seed alone, the same on every rank;
- a row's augmentation: (seed, iteration, epoch, row), whatever rank, batch or loader worker reads it;
- each rank's global generators (Python `random`, numpy, torch: dropout) and its loader's
  generator: (seed, rank, iteration, epoch), so an epoch resumed from a checkpoint draws what the
  interrupted one would have drawn;
- the order of the rows: shards.rank_indices, from (seed, iteration, epoch), the same on every rank.

`deterministic: true` in the spec also asks torch for deterministic kernels (see configure_determinism).
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

# A distinct first word per stream keeps the streams apart: SeedSequence pads short entropy with
# zeros, so [seed, iteration, row] and [seed, iteration, row, 0] would give the same seed.
AUGMENT_STREAM = 1
WORKER_STREAM = 2
LOADER_STREAM = 3
REINIT_STREAM = 4

# cuBLAS is only reproducible with a fixed workspace; it reads this when its first handle is created.
CUBLAS_WORKSPACE = ":4096:8"


def derive_seed(*parts: int) -> int:
    """A 32-bit seed from non-negative integers: any change in any part gives an unrelated seed."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def augment_seed(seed: int, iteration: int, epoch: int, row: int) -> int:
    return derive_seed(AUGMENT_STREAM, seed, iteration, epoch, row)


def worker_seed(seed: int, rank: int, iteration: int, epoch: int) -> int:
    return derive_seed(WORKER_STREAM, seed, rank, iteration, epoch)


def loader_seed(seed: int, rank: int, iteration: int, epoch: int) -> int:
    return derive_seed(LOADER_STREAM, seed, rank, iteration, epoch)


def reinit_seed(seed: int, iteration: int) -> int:
    """The fresh weights of a saliency iteration with `reinit` (seed 1 / iteration 2 and seed 2 /
    iteration 1 start apart)."""
    return derive_seed(REINIT_STREAM, seed, iteration)


def seed_globals(seed: int) -> None:
    """Python's, numpy's and torch's global generators, for whatever draws from them (dropout)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_loader_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`. Torch seeds loader worker i from base_seed + i, base_seed drawn
    from the loader's seeded generator, and (since 1.9) seeds numpy and Python `random` with it too;
    this passes torch's seed on to them explicitly, so the guarantee does not rest on that default."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def configure_determinism(enabled: bool) -> None:
    """With `enabled`, torch uses its deterministic kernels wherever it has one and warns once for an
    op that has none (in torch 2.13: SegNet's max-unpooling; on CUDA also the mean-reduced
    cross-entropy and the backward of bilinear upsampling and adaptive average pooling), and cuDNN
    neither benchmarks (its choice of algorithm varies from run to run) nor picks nondeterministic
    algorithms. A warning rather than an error keeps every architecture and loss usable with the
    flag. Call it before any CUDA work. Set both ways, so a process that ran a deterministic trial
    does not carry the setting into the next one."""
    if enabled:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
        torch.backends.cudnn.benchmark = False
    # Only when it changes: the call imports torch's compiler configuration (about 1 s in a new process).
    if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) != (
            enabled, enabled):
        torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
