"""Errors raised by the code that runs on the cluster's workers (shards, checkpoints)."""
from seg_models.exceptions import SegqError


class DataError(SegqError):
    """A dataset file or shard is missing, corrupt or inconsistent with its manifest."""


class CheckpointError(SegqError):
    """A checkpoint file is missing or does not hold a segq model."""
