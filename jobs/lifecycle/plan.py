"""What a submission will run, decided before anything connects: the spec validated and expanded
into its trials (HyperBand brackets, starting weights and saliency background classes checked
against the dataset), and the plan `--dry-run` prints."""
from __future__ import annotations

from pathlib import Path

from jobs.spec import TRIAL_DRIVER_CPUS, SaliencySpec, expand_trials, parse_spec
from seg_models.exceptions import SpecError
from workers.shards import read_manifest
from workers.trial_spec import TrainParams, TrialSpec


def local_manifest(root: str, required: bool) -> dict | None:
    """The dataset's manifest when this machine sees it (required on the embedded default: a remote
    cluster may see paths this machine does not)."""
    if "://" in root or not (required or Path(root).exists()):
        return None
    return read_manifest(root)


def validate(model, spec_data: dict, source: str | None, manifest_required: bool):
    """The spec and its trials, validated and expanded once, before any connection is made.
    `manifest_required`: the dataset must be readable here (the embedded default)."""
    spec = parse_spec(model, spec_data, source)
    trials = expand_trials(spec, source)
    if spec.scheduler.kind == "hyperband":
        check_brackets(spec, trials, source)
    manifest = local_manifest(spec.data, required=manifest_required)
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
    """A HyperBand job whose brackets would halve nothing is refused here (jobs.execution.tuning.check_hyperband)."""
    from jobs.execution.sweep import max_trial_epochs
    from jobs.execution.tuning import check_hyperband

    try:
        check_hyperband(spec.scheduler, spec.target, max_trial_epochs(spec, trials),
                        len(trials) if spec.search != "optuna" else spec.samples, spec.resources.max_concurrent_trials)
    except SpecError as error:
        raise SpecError((f"{source}: " if source else "") + str(error)) from None


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
    """What the trials ask for, one trial and all of them together (an elastic trial: from its
    `min` workers to its `max`)."""
    workers = resources.workers_per_trial
    cpus, gpus = resources.min_workers * resources.cpus_per_worker, resources.min_workers * resources.gpus_per_worker
    total = f"{count * cpus:g} CPU, {count * gpus:g} GPU"
    if resources.elastic:
        workers = f"{resources.min_workers}-{resources.max_workers} (elastic)"
        most = resources.max_workers * count
        total = (f"{total} to {most * resources.cpus_per_worker:g} CPU, {most * resources.gpus_per_worker:g} GPU")
    line = (f"resources: {count} trials x {workers} worker(s) x ({resources.cpus_per_worker:g} CPU, "
            f"{resources.gpus_per_worker:g} GPU) = {total} in all")
    if resources.max_concurrent_trials:
        line += f"; at most {resources.max_concurrent_trials} trials at once"
    return f"{line}; {resources.path}"


def fits_now_line(resources, cluster_cpus: float | None, cluster_gpus: float | None, nodes: int) -> str:
    """How many workers of one trial the cluster as it is now holds (its total CPUs and GPUs)."""
    if cluster_cpus is None:
        return "fits now: no cluster running to compare with (start one with `segq up` or pass --address)"
    spare = cluster_cpus - (0 if resources.trains_in_trial else TRIAL_DRIVER_CPUS)
    fits = int(spare / resources.cpus_per_worker + 1e-9)
    if resources.gpus_per_worker:
        fits = min(fits, int((cluster_gpus or 0) / resources.gpus_per_worker + 1e-9))
    verdict = ("a trial starts" if fits >= resources.min_workers else
               f"a trial waits until {resources.min_workers} fit (add nodes: `segq up --nodes N`)")
    grows = (f", and grows to {min(fits, resources.max_workers)}"
             if resources.elastic and fits > resources.min_workers else "")
    return (f"fits now: {fits} worker(s) on the cluster's {cluster_cpus:g} CPU, {cluster_gpus or 0:g} GPU in {nodes} "
            f"node(s): {verdict}{grows}")


def plan(spec, trials: list) -> tuple[list[str], str]:
    """`--dry-run`: (the plan, one line per trial: name, architecture, the varying values in full
    precision, or for Optuna, which suggests trials as results come in, the space it searches; then
    the resources), and the one-line verdict."""
    if spec.search == "optuna":
        models, train = spec.sections()
        lines = [f"{section}.{key}: {kind} {args}"
                 for section, spaces in [*((f"models.{a}", m.spaces) for a, m in models.items()),
                                         ("train", train.spaces)]
                 for key, (kind, args) in spaces.items()]
        lines += [f"archs: choice {spec.archs}", resources_line(spec.resources, spec.samples)]
        return lines, (f"dry run: {spec.kind} of {spec.samples} trials suggested by optuna (TPE, seed "
                       f"{spec.search_seed}), scheduler {spec.scheduler.kind}; nothing submitted")
    fields = varying_fields(spec, trials)
    lines = []
    for trial in trials:
        values = trial_values(trial)
        shown = " ".join(f"{key}={values[key]}" for key in fields if key in values)
        lines.append(f"{trial.name}  {trial.arch}  {shown}".rstrip())
    lines.append(resources_line(spec.resources, len(trials)))
    return lines, (f"dry run: {spec.kind} of {len(trials)} trials validated, scheduler {spec.scheduler.kind}; "
                   "nothing submitted")
