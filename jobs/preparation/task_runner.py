"""Running a preparation's shard tasks as Ray tasks."""
from __future__ import annotations

from typing import Callable


def run_ray_tasks(tasks: list[Callable[[], dict]], progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Run each callable as a Ray task (one per shard); results come back in list order.
    The first failure cancels the rest and is raised as itself (a DataError stays a DataError)."""
    import ray

    @ray.remote(num_cpus=1, max_retries=0)
    def run(task):
        return task()

    refs = [run.remote(task) for task in tasks]
    pending = list(refs)
    try:
        while pending:
            finished, pending = ray.wait(pending, num_returns=1)
            ray.get(finished)
            if progress:
                progress(len(refs) - len(pending), len(refs))
    except ray.exceptions.RayTaskError as error:
        for ref in pending:
            ray.cancel(ref, force=True)
        ray.wait(pending, num_returns=len(pending), timeout=60)
        cause = error.cause if isinstance(error.cause, Exception) else error
        raise cause from None
    return ray.get(refs)
