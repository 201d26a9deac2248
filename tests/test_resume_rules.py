"""Which jobs `segq jobs resume` takes, and the one line it refuses the others with."""
import pytest

from jobs.exceptions import JobNotResumable
from jobs.records import JobRecord, JobStatus
from jobs.lifecycle.resume import check_resumable, next_submission_id


def job(status: JobStatus, submission: str = "sweep-1") -> JobRecord:
    return JobRecord(id="sweep-1", kind="sweep", spec={}, status=status, ray_submission_id=submission)


@pytest.mark.parametrize("status, words", [
    (JobStatus.FINISHED, "finished; there is nothing to resume"),
    (JobStatus.CANCELLED, "was cancelled; a cancelled job is not resumed, submit it again"),
    (JobStatus.RUNNING, "is running and its driver still runs"),
    (JobStatus.QUEUED, "is queued and its driver still runs"),
])
def test_refused_with_one_line(status, words):
    with pytest.raises(JobNotResumable) as refused:
        check_resumable(job(status))
    assert words in str(refused.value) and "sweep-1" in str(refused.value) and "\n" not in str(refused.value)


def test_a_failed_job_is_resumed_under_a_new_submission_id():
    check_resumable(job(JobStatus.FAILED))
    assert next_submission_id(job(JobStatus.FAILED)) == "sweep-1-r1"
    assert next_submission_id(job(JobStatus.FAILED, "sweep-1-r1")) == "sweep-1-r2"
