"""Errors raised by the code that runs on the cluster's workers (shards, checkpoints)."""
from seg_models.exceptions import SegqError


class DataError(SegqError):
    """A dataset file or shard is missing, corrupt or inconsistent with its manifest."""


class CheckpointError(SegqError):
    """A checkpoint file is missing or does not hold a segq model."""


class RedisSettingsError(SegqError):
    """A Redis URL or its password file cannot be used."""


class StorageError(SegqError):
    """A storage location (a path, or an s3:// or gs:// URI) cannot be resolved, read or written."""
