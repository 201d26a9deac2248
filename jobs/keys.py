"""The whole Redis key schema of segq. Nothing else builds a key string.

segq:jobs                                  zset   job id -> created (unix time)
segq:job:{job}                             hash   the job record (jobs.records.JobRecord): id, kind,
                                                  status, spec (JSON), trials (JSON list of the
                                                  resolved TrialSpecs), Ray submission, times, error,
                                                  tensorboard_dir (where the driver writes TensorBoard runs)
segq:job:{job}:events                      stream metric and trial events (JSON in field `data`); read by
                                                  the consumer groups `aggregator` and `exports` (the
                                                  driver's TensorBoard, MLflow and Ray metrics exports)
segq:job:{job}:trials                      set    trial names seen in the events
segq:job:{job}:trial:{trial}               hash   trial facts: status, arch, params, num_params, ...;
                                                  fact_ids: fact -> stream id that set it; ranks: each
                                                  rank's node and pid; attempts: stream id -> start, ranks;
                                                  best_decisions: iteration -> epoch, value of rank 0's
                                                  latest decision (the leaderboard's input)
segq:job:{job}:trial:{trial}:metrics       hash   "{iteration}:{epoch}:{split}" -> JSON scores (split train,
                                                  val, test); "{iteration}:{epoch}:best" -> rank 0's best
                                                  decision after that epoch; "{iteration}:0:saliency" ->
                                                  the saliency iteration's kept fraction and checkpoint;
                                                  "{iteration}:{epoch}:perturbation" -> PBT's exploit: the
                                                  donor trial whose checkpoint of that epoch it took over
segq:job:{job}:leaderboard                 zset   trial -> best value of the job's target metric
segq:queue:waiting                         zset   job id -> priority and submission order (jobs.lifecycle.queue)
segq:queue:running                         zset   job id -> when it took a slot
segq:queue:alive                           zset   job id -> its driver's heartbeat deadline
"""
from __future__ import annotations

PREFIX = "segq"
AGGREGATOR_GROUP = "aggregator"
EXPORTS_GROUP = "exports"
BEST_SPLIT = "best"
SALIENCY_SPLIT = "saliency"
PERTURBATION_SPLIT = "perturbation"


def jobs_index() -> str:
    return f"{PREFIX}:jobs"


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def events(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:events"


def trials(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:trials"


def trial(job_id: str, trial_name: str) -> str:
    return f"{PREFIX}:job:{job_id}:trial:{trial_name}"


def trial_metrics(job_id: str, trial_name: str) -> str:
    return f"{PREFIX}:job:{job_id}:trial:{trial_name}:metrics"


def leaderboard(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:leaderboard"


def metrics_field(iteration: int, epoch: int, split: str) -> str:
    return f"{iteration}:{epoch}:{split}"


def parse_metrics_field(field: str) -> tuple[int, int, str]:
    iteration, epoch, split = field.split(":", 2)
    return int(iteration), int(epoch), split


def queue_waiting() -> str:
    """zset: job id -> queue_score(priority, submitted); the jobs waiting for a slot, next first."""
    return f"{PREFIX}:queue:waiting"


def queue_running() -> str:
    """zset: job id -> when it took its slot; the jobs that hold a slot."""
    return f"{PREFIX}:queue:running"


def queue_alive() -> str:
    """zset: job id -> deadline of its driver's heartbeat; a job past it holds no place and no slot."""
    return f"{PREFIX}:queue:alive"
