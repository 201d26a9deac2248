"""Every error segq raises on purpose. Only the CLI turns these into a message and an exit code."""


class SegqError(Exception):
    """Base class: the message is shown to the user as one line."""


class SpecError(SegqError):
    """A job spec, a model option or a flag is invalid."""


class UnknownArchitecture(SpecError):
    def __init__(self, name: str, valid: list[str]):
        super().__init__(f"unknown architecture {name!r}; valid: {', '.join(valid)}")
        self.name = name


class InputShapeError(SegqError):
    """An input tensor does not fit the model."""


class DataError(SegqError):
    """A dataset file or shard is missing, corrupt or inconsistent with its manifest."""


class ClusterError(SegqError):
    """The local cluster, Redis or Ray cannot be reached or started."""


class NoSuchJob(SegqError):
    def __init__(self, job_id: str):
        super().__init__(f"no such job: {job_id}")
        self.job_id = job_id


class CheckpointError(SegqError):
    """A checkpoint file is missing or does not hold a segq model."""
