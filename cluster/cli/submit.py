"""`segq submit`: validate a spec, submit it, optionally follow it to the end."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Optional

import typer

from cluster import local
from cluster.cli.context import endpoints_of, err, exit_unless_finished, settings_of
from cluster.connect import Endpoints, connect_redis, jobs_client
from cluster.settings import Settings
from jobs.lifecycle.queue import PRIORITY_LIMIT
from seg_models.exceptions import SpecError

submit_app = typer.Typer(help="Submit jobs to the cluster.", no_args_is_help=True)


def split_list(text: Optional[str], cast=str) -> list | None:
    if text is None:
        return None
    try:
        return [cast(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SpecError(f"cannot read {text!r} as a comma-separated list of {cast.__name__}") from None


def as_value(values: list | None):
    """One value stays a value; several become a grid axis."""
    if values is None:
        return None
    return values[0] if len(values) == 1 else {"grid": values}


def floats_axis(text: str):
    return as_value(split_list(text, float))


def ints_axis(text: str):
    return as_value(split_list(text, int))


def texts_axis(text: str):
    return as_value(split_list(text))


# Every flag of `segq submit sweep` and `segq submit saliency` that sets a spec field: the section
# it goes to (None: the spec's top level), the field, and how its text becomes the value.
FLAG_FIELDS: dict[str, tuple[str | None, str, Callable | None]] = {
    "data": (None, "data", None), "arch": (None, "archs", split_list), "name": (None, "name", None),
    "load_from": (None, "load_from", None), "search": (None, "search", None), "samples": (None, "samples", None),
    "iterations": (None, "iterations", None), "keep_percent": (None, "keep_percent", floats_axis),
    "relevance": (None, "relevance", texts_axis), "fill": (None, "fill", None), "reinit": (None, "reinit", None),
    "controls": (None, "controls", None),
    "lr": ("train", "lr", floats_axis), "batch_size": ("train", "batch_size", ints_axis),
    "epochs": ("train", "epochs", None),
    "workers_per_trial": ("resources", "workers_per_trial", None),
    "cpus_per_worker": ("resources", "cpus_per_worker", None),
    "gpus_per_worker": ("resources", "gpus_per_worker", None),
    "max_concurrent": ("resources", "max_concurrent_trials", None),
    "mlflow": ("tracking", "mlflow", None),
}


def merge_flags(spec_file: Optional[Path], flags: dict) -> tuple[dict, str | None]:
    """The spec file's fields, overridden by the flags that were given (FLAG_FIELDS)."""
    from jobs.spec import load_yaml

    data = load_yaml(spec_file) if spec_file else {}
    sections = {name: dict(data.get(name) or {}) for name in ("train", "resources", "tracking")}
    for flag, value in flags.items():
        if flag in FLAG_FIELDS and value is not None:
            section, field, parse = FLAG_FIELDS[flag]
            (data if section is None else sections[section])[field] = parse(value) if parse else value
    data.update(sections)
    if "data" not in data:
        raise SpecError("data: missing (pass --data DIR or set data: in the spec file)")
    if "archs" not in data:
        raise SpecError("archs: missing (pass --arch NAME[,NAME] or set archs: in the spec file)")
    return data, str(spec_file) if spec_file else None


SPEC_FILE = typer.Argument(None, help="YAML spec; flags override its fields")
DATA = typer.Option(None, "--data", help="prepared dataset folder")
ARCH = typer.Option(None, "--arch", help="architectures, comma-separated (one trial each)")
LR = typer.Option(None, "--lr", help="learning rates, comma-separated (grid)")
BATCH_SIZE = typer.Option(None, "--batch-size", help="batch sizes per worker, comma-separated (grid)")
EPOCHS = typer.Option(None, "--epochs", help="epochs (per iteration for saliency jobs)")
WORKERS = typer.Option(None, "--workers-per-trial", help="DDP workers per trial: N, or an elastic range MIN-MAX "
                                                          "(e.g. 1-4: starts once 1 fits, grows to 4)")
CPUS = typer.Option(None, "--cpus-per-worker")
GPUS = typer.Option(None, "--gpus-per-worker")
NAME = typer.Option(None, "--name")
PRIORITY = typer.Option(0, "--priority", min=-PRIORITY_LIMIT, max=PRIORITY_LIMIT,
                        help="queue priority: higher runs first; equal priorities run in submission order")
WAIT = typer.Option(False, "--wait", help="follow the job until it ends; exit 1 if it failed")
SEARCH = typer.Option(None, "--search", help="grid (every grid point, --samples times), random "
                                             "(--samples trials, every field drawn) or optuna (TPE)")
SAMPLES = typer.Option(None, "--samples", help="grid: repeats of the grid; random and optuna: trials in all")
SCHEDULER = typer.Option(None, "--scheduler", help="fifo, asha, hyperband or pbt, on the job's target metric "
                                                   "(settings: the spec's scheduler section)")
MAX_CONCURRENT = typer.Option(None, "--max-concurrent", help="trials that run at once (default: as many as fit)")
LOAD_FROM = typer.Option(None, "--load-from", help="a segq checkpoint (file, folder or URI) whose weights every "
                                                   "trial starts from")
MLFLOW = typer.Option(None, "--mlflow", help="MLflow tracking URI: each trial an MLflow run in an experiment named "
                                             "after the job (env SEGQ_MLFLOW_URI)")
DRY_RUN = typer.Option(False, "--dry-run", help="validate, print the trials and the resources; submit nothing")


@submit_app.command("sweep")
def submit_sweep(
    ctx: typer.Context,
    spec_file: Optional[Path] = SPEC_FILE,
    data: Optional[str] = DATA,
    arch: Optional[str] = ARCH,
    lr: Optional[str] = LR,
    batch_size: Optional[str] = BATCH_SIZE,
    epochs: Optional[int] = EPOCHS,
    workers_per_trial: Optional[str] = WORKERS,
    cpus_per_worker: Optional[float] = CPUS,
    gpus_per_worker: Optional[float] = GPUS,
    search: Optional[str] = SEARCH,
    samples: Optional[int] = SAMPLES,
    scheduler: Optional[str] = SCHEDULER,
    max_concurrent: Optional[int] = MAX_CONCURRENT,
    load_from: Optional[str] = LOAD_FROM,
    mlflow: Optional[str] = MLFLOW,
    name: Optional[str] = NAME,
    priority: int = PRIORITY,
    wait: bool = WAIT,
    dry_run: bool = DRY_RUN,
) -> None:
    """Submit an architecture x hyperparameter sweep. Prints the job id as the last line."""
    from jobs.spec import SweepSpec

    spec_data, source = merge_flags(spec_file, ctx.params)
    if scheduler is not None:  # the kind; the spec file's scheduler settings stay
        given = spec_data.get("scheduler")
        spec_data["scheduler"] = {**given, "kind": scheduler} if isinstance(given, dict) else scheduler
    submit_and_follow(ctx, SweepSpec, spec_data, source, wait, dry_run, priority)


@submit_app.command("saliency")
def submit_saliency(
    ctx: typer.Context,
    spec_file: Optional[Path] = SPEC_FILE,
    data: Optional[str] = DATA,
    arch: Optional[str] = ARCH,
    iterations: Optional[int] = typer.Option(None, "--iterations", help="training rounds (default 7)"),
    keep_percent: Optional[str] = typer.Option(None, "--keep-percent",
                                               help="percent of kept pixels kept per round, comma-separated (grid)"),
    relevance: Optional[str] = typer.Option(None, "--relevance", help="softmax_foreground or random (grid)"),
    fill: Optional[str] = typer.Option(None, "--fill", help="what removed pixels become: zero, blur or mean"),
    reinit: Optional[bool] = typer.Option(None, "--reinit/--carry-weights",
                                          help="start each iteration from scratch (default: carry the weights on)"),
    controls: Optional[bool] = typer.Option(None, "--controls", help="add a random-relevance run beside each configuration"),
    lr: Optional[str] = LR,
    batch_size: Optional[str] = BATCH_SIZE,
    epochs: Optional[int] = EPOCHS,
    workers_per_trial: Optional[str] = WORKERS,
    cpus_per_worker: Optional[float] = CPUS,
    gpus_per_worker: Optional[float] = GPUS,
    load_from: Optional[str] = LOAD_FROM,
    mlflow: Optional[str] = MLFLOW,
    name: Optional[str] = NAME,
    priority: int = PRIORITY,
    wait: bool = WAIT,
    dry_run: bool = DRY_RUN,
) -> None:
    """Submit a saliency-iteration job: retrain on progressively reduced images. Prints the job id last."""
    from jobs.spec import SaliencySpec

    spec_data, source = merge_flags(spec_file, ctx.params)
    submit_and_follow(ctx, SaliencySpec, spec_data, source, wait, dry_run, priority)


def deployment_of(settings: Settings, endpoints: Endpoints):
    from cluster.secrets import password_file_url
    from jobs.deployment import Deployment

    embedded = settings.embedded()
    # A real cluster keeps its own SEGQ_STORAGE (shared storage) unless one is given here.
    storage = settings.resolved_storage() if embedded or settings.storage else None
    redis_url = settings.cluster_redis_url or endpoints.redis_url
    if embedded:  # the driver runs here: a password in the URL moves into a 0600 file it reads
        redis_url = password_file_url(settings.resolved_home(), redis_url)
    state = local.running_state(settings.resolved_home()) if embedded else None
    return Deployment(redis_url=redis_url, storage=storage, embedded=embedded,
                      ray_address=state["ray"]["address"] if state else None)


def submit_and_follow(ctx: typer.Context, model, spec_data: dict, source: str | None, wait: bool,
                      dry_run: bool = False, priority: int = 0) -> None:
    from jobs.lifecycle.submit import submit

    from jobs.lifecycle.plan import fits_now_line, plan, validate

    mlflow_uri = settings_of(ctx).mlflow_uri
    if mlflow_uri and not spec_data["tracking"].get("mlflow"):  # the flag and the spec file come first
        spec_data["tracking"]["mlflow"] = mlflow_uri
    spec, trials = validate(model, spec_data, source, manifest_required=settings_of(ctx).embedded())
    if dry_run:
        lines, verdict = plan(spec, trials)
        if spec.resources.elastic:
            lines.append(fits_now_line(spec.resources, *cluster_size(settings_of(ctx))))
        print("\n".join(lines))
        err.print(verdict)
        return
    endpoints = endpoints_of(ctx, start_if_missing=True)
    client = connect_redis(endpoints.redis_url)
    jobs = jobs_client(endpoints.dashboard_url)
    settings = settings_of(ctx)
    record = submit(client, jobs, spec, trials, deployment_of(settings, endpoints), endpoints.dashboard_url,
                    priority=priority, max_running_jobs=settings.max_running_jobs)
    err.print(f"submitted {spec.kind} {record.id} ({len(trials)} trials); dashboard: {record.dashboard_url}")
    if wait:
        final = follow_with_progress(client, jobs, record)
        if final.status.value != "finished":
            print(record.id)
            exit_unless_finished(final)
    print(record.id)


def cluster_size(settings: Settings) -> tuple[float | None, float | None, int]:
    """The running cluster's CPUs, GPUs and nodes (None, None, 0 when none is running or it does not
    answer); nothing is started."""
    from cluster.connect import find_dashboard_url
    from cluster.local_nodes import alive_nodes

    url = find_dashboard_url(settings)
    try:
        nodes = alive_nodes(url) if url else []
    except Exception:  # the dry run stays a dry run when Ray does not answer
        nodes = []
    if not nodes:
        return None, None, 0
    return (sum(node["resources"].get("CPU", 0) for node in nodes),
            sum(node["resources"].get("GPU", 0) for node in nodes), len(nodes))


def follow_with_progress(client, jobs, record):
    """Progress over trials x epochs until the job ends (or its driver dies); the final record."""
    from jobs.lifecycle.follow import follow
    from jobs.results.displays import ProgressBar

    return follow(client, record.id, ProgressBar(err, record), jobs).record
