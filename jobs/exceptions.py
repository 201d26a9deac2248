"""Errors raised by job submission, records and drivers."""
from seg_models.exceptions import SegqError


class ClusterError(SegqError):
    """The local cluster, Redis or Ray cannot be reached or started."""


class NoSuchJob(SegqError):
    def __init__(self, job_id: str):
        super().__init__(f"no such job: {job_id}")
        self.job_id = job_id


class JobAlreadyEnded(SegqError):
    """`segq jobs cancel` on a job that ended before the cancel was written."""


class JobNotResumable(SegqError):
    """`segq jobs resume` on a job that finished, was cancelled or still runs."""
