"""`segq submit`: validate a spec, submit it, optionally follow it to the end."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cluster import local
from cluster.cli_context import endpoints_of, err, exit_unless_finished, settings_of
from cluster.connect import Endpoints, connect_redis, jobs_client
from cluster.settings import Settings
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


def merge_flags(spec_file: Optional[Path], top: dict, train: dict, resources: dict) -> tuple[dict, str | None]:
    """The spec file's fields, overridden by the flags that were given."""
    from jobs.spec import load_yaml

    data = load_yaml(spec_file) if spec_file else {}
    sections = {"train": dict(data.get("train") or {}), "resources": dict(data.get("resources") or {})}
    for target, values in ((data, top), (sections["train"], train), (sections["resources"], resources)):
        target.update({key: value for key, value in values.items() if value is not None})
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
WORKERS = typer.Option(None, "--workers-per-trial", help="DDP workers per trial")
CPUS = typer.Option(None, "--cpus-per-worker")
GPUS = typer.Option(None, "--gpus-per-worker")
NAME = typer.Option(None, "--name")
PRIORITY = typer.Option(0, "--priority", min=-100, max=100,
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
    workers_per_trial: Optional[int] = WORKERS,
    cpus_per_worker: Optional[float] = CPUS,
    gpus_per_worker: Optional[float] = GPUS,
    search: Optional[str] = SEARCH,
    samples: Optional[int] = SAMPLES,
    scheduler: Optional[str] = SCHEDULER,
    max_concurrent: Optional[int] = MAX_CONCURRENT,
    load_from: Optional[str] = LOAD_FROM,
    name: Optional[str] = NAME,
    priority: int = PRIORITY,
    wait: bool = WAIT,
    dry_run: bool = DRY_RUN,
) -> None:
    """Submit an architecture x hyperparameter sweep. Prints the job id as the last line."""
    from jobs.spec import SweepSpec

    spec_data, source = merge_flags(
        spec_file, {"data": data, "archs": split_list(arch), "name": name, "search": search, "samples": samples,
                    "load_from": load_from},
        {"lr": as_value(split_list(lr, float)), "batch_size": as_value(split_list(batch_size, int)), "epochs": epochs},
        {"workers_per_trial": workers_per_trial, "cpus_per_worker": cpus_per_worker, "gpus_per_worker": gpus_per_worker,
         "max_concurrent_trials": max_concurrent},
    )
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
    workers_per_trial: Optional[int] = WORKERS,
    cpus_per_worker: Optional[float] = CPUS,
    gpus_per_worker: Optional[float] = GPUS,
    load_from: Optional[str] = LOAD_FROM,
    name: Optional[str] = NAME,
    priority: int = PRIORITY,
    wait: bool = WAIT,
    dry_run: bool = DRY_RUN,
) -> None:
    """Submit a saliency-iteration job: retrain on progressively reduced images. Prints the job id last."""
    from jobs.spec import SaliencySpec

    spec_data, source = merge_flags(
        spec_file,
        {"data": data, "archs": split_list(arch), "name": name, "iterations": iterations,
         "keep_percent": as_value(split_list(keep_percent, float)), "relevance": as_value(split_list(relevance)),
         "fill": fill, "reinit": reinit, "controls": controls, "load_from": load_from},
        {"lr": as_value(split_list(lr, float)), "batch_size": as_value(split_list(batch_size, int)), "epochs": epochs},
        {"workers_per_trial": workers_per_trial, "cpus_per_worker": cpus_per_worker, "gpus_per_worker": gpus_per_worker},
    )
    submit_and_follow(ctx, SaliencySpec, spec_data, source, wait, dry_run, priority)


def local_manifest(root: str, required: bool) -> dict | None:
    """The dataset's manifest when this machine sees it (required on the embedded default: a remote
    cluster may see paths this machine does not)."""
    from workers.shards import read_manifest

    if "://" in root or not (required or Path(root).exists()):
        return None
    return read_manifest(root)


def validate(ctx: typer.Context, model, spec_data: dict, source: str | None):
    """The spec and its trials, validated and expanded once, before any connection is made."""
    from jobs.spec import SaliencySpec, expand_trials, parse_spec
    from workers.trial_spec import TrainParams, TrialSpec

    spec = parse_spec(model, spec_data, source)
    trials = expand_trials(spec, source)
    if spec.scheduler.kind == "hyperband":
        check_brackets(spec, trials, source)
    manifest = local_manifest(spec.data, required=settings_of(ctx).embedded())
    if spec.load_from:
        from workers.checkpointing import check_starting_weights

        # Optuna suggests its trials as the job runs: each architecture with its fixed options stands in
        models = spec.sections()[0]
        check_starting_weights(spec.load_from, trials or [
            TrialSpec(name=arch, arch=arch, model=models[arch].fixed, train=TrainParams()) for arch in spec.archs],
            manifest["num_classes"] if manifest else None)
    if isinstance(spec, SaliencySpec) and manifest is not None:
        background = spec.resolve_background(manifest)
        trials = [trial.model_copy(update={"saliency": trial.saliency.model_copy(
            update={"background_classes": background})}) for trial in trials]
    return spec, trials


def check_brackets(spec, trials: list, source: str | None) -> None:
    """A HyperBand job whose brackets would halve nothing is refused here (jobs.tuning.check_hyperband)."""
    from jobs.sweep import max_trial_epochs
    from jobs.tuning import check_hyperband
    from seg_models.exceptions import SpecError

    try:
        check_hyperband(spec.scheduler, spec.target, max_trial_epochs(spec, trials),
                        len(trials) if spec.search != "optuna" else spec.samples, spec.resources.max_concurrent_trials)
    except SpecError as error:
        raise SpecError((f"{source}: " if source else "") + str(error)) from None


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


def trial_values(trial) -> dict:
    """A trial's model options, hyperparameters and saliency settings, as one flat mapping."""
    saliency = trial.saliency.model_dump(include={"keep_percent", "relevance"}) if trial.saliency else {}
    return {**trial.model, **trial.train.model_dump(), **saliency}


def varying_fields(spec, trials: list) -> list[str]:
    """The fields the spec searches, and any other that differs between trials, in a stable order."""
    values = [trial_values(trial) for trial in trials]
    keys = list(dict.fromkeys(key for row in values for key in row))
    shown = spec.searched_fields() | {key for key in keys if len({repr(row.get(key)) for row in values}) > 1}
    return [key for key in keys if key in shown]


def resources_line(resources, count: int) -> str:
    """What the trials ask for, one trial and all of them together."""
    workers = resources.workers_per_trial
    cpus, gpus = workers * resources.cpus_per_worker, workers * resources.gpus_per_worker
    line = (f"resources: {count} trials x {workers} worker(s) x ({resources.cpus_per_worker:g} CPU, "
            f"{resources.gpus_per_worker:g} GPU) = {count * cpus:g} CPU, {count * gpus:g} GPU in all")
    if resources.max_concurrent_trials:
        line += f"; at most {resources.max_concurrent_trials} trials at once"
    return f"{line}; {resources.path}"


def print_plan(spec, trials: list) -> None:
    """`--dry-run`: one line per trial (name, architecture, the varying values in full precision),
    or for Optuna, which suggests trials as results come in, the space it searches."""
    if spec.search == "optuna":
        models, train = spec.sections()
        for section, spaces in [*((f"models.{a}", m.spaces) for a, m in models.items()), ("train", train.spaces)]:
            for key, (kind, args) in spaces.items():
                print(f"{section}.{key}: {kind} {args}")
        print(f"archs: choice {spec.archs}")
        print(resources_line(spec.resources, spec.samples))
        err.print(f"dry run: {spec.kind} of {spec.samples} trials suggested by optuna (TPE, seed "
                  f"{spec.search_seed}), scheduler {spec.scheduler.kind}; nothing submitted")
        return
    fields = varying_fields(spec, trials)
    for trial in trials:
        values = trial_values(trial)
        shown = " ".join(f"{key}={values[key]}" for key in fields if key in values)
        print(f"{trial.name}  {trial.arch}  {shown}".rstrip())
    print(resources_line(spec.resources, len(trials)))
    err.print(f"dry run: {spec.kind} of {len(trials)} trials validated, scheduler {spec.scheduler.kind}; "
              "nothing submitted")


def submit_and_follow(ctx: typer.Context, model, spec_data: dict, source: str | None, wait: bool,
                      dry_run: bool = False, priority: int = 0) -> None:
    from jobs.submit import submit

    spec, trials = validate(ctx, model, spec_data, source)
    if dry_run:
        print_plan(spec, trials)
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


def follow_with_progress(client, jobs, record):
    """Progress over trials x epochs until the job ends (or its driver dies); the final record."""
    from jobs.follow import follow
    from jobs.watch import ProgressBar

    return follow(client, record.id, ProgressBar(err, record), jobs).record
