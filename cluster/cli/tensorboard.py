"""`segq tensorboard`: where a job's TensorBoard runs are, and TensorBoard on them."""
from __future__ import annotations

import importlib.util
import os
import shlex
import sys

import typer

from cluster.cli.context import console, redis_url_of, say
from cluster.connect import connect_redis
from seg_models.exceptions import SpecError

tensorboard_app = typer.Typer()


@tensorboard_app.command()
def tensorboard(
    ctx: typer.Context,
    job: str = typer.Argument(..., help="job id (or a unique prefix)"),
    port: int = typer.Option(6006, "--port", help="TensorBoard's port"),
    start: bool = typer.Option(True, "--start/--no-start", help="start TensorBoard on the runs when it is installed"),
) -> None:
    """Print the job's TensorBoard folder (one run per trial) and the command to view it; start
    TensorBoard there (until Ctrl-C) when it is installed."""
    from jobs.records import JobRecord, resolve_job_id

    client = connect_redis(redis_url_of(ctx))
    record = JobRecord.load(client, resolve_job_id(client, job))
    if not record.tensorboard_dir:
        off = record.spec.get("tracking", {}).get("tensorboard") is False
        raise SpecError(f"{record.id}: no TensorBoard runs " + ("(its spec has tracking.tensorboard: false)" if off
                        else f"yet: the job is {record.status.value} and its driver has not started"))
    command = ["tensorboard", "--logdir", record.tensorboard_dir, "--host", "127.0.0.1", "--port", str(port)]
    console.print(record.tensorboard_dir, markup=False, highlight=False, soft_wrap=True)
    say(f"view them: {shlex.join(command)}")
    if not start:
        return
    if importlib.util.find_spec("tensorboard") is None:
        say("TensorBoard is not installed here: pip install tensorboard, then run the command above")
        return
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "tensorboard.main", *command[1:]])
