"""The Tune driver of sweep and saliency jobs: one Tune trial per TrialSpec (a saliency trial runs
all its iterations inside it). A trial trains in one of two places (Resources.runner):

- in its own Tune trial (one worker): the trial function runs the train loop itself, in the Tune
  trial's process, which Tune reuses from trial to trial (Ray Tune's pattern for single-process
  trials; jobs.execution.tuning.InTrialChannel reports its epochs);
- through Ray Train (DDP): Tune does not take a TorchTrainer (Ray 2.60, Train V2), so the trial
  function builds one, calls fit(), and forwards the workers' reports to Tune (jobs.execution.forwarding).
"""
from __future__ import annotations

import gc
import os
import time
import uuid
from pathlib import Path

from jobs import keys
from jobs.deployment import Deployment
from jobs.execution import tuning
from jobs.spec import SPEC_KINDS, TRIAL_DRIVER_CPUS, JobSpec, Resources, trial_name
from workers.checkpointing import CHECKPOINT_FILE, RETENTION_SCORE
from workers.target import Target
from workers.trial_spec import StartFrom, TrialContext, TrialSpec
from workers.publisher import MetricsPublisher
from workers.redis_client import open_redis, public_url
from workers import storage
from workers.saliency import iteration_dir


def trainer_for(trial: TrialSpec, context: TrialContext, resources: Resources, callbacks: list,
                run_name: str | None = None, start_from: StartFrom | None = None, keep_all: bool = False,
                decisions=None):
    from ray.train import FailureConfig, RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from workers.train_loop import train_loop_per_worker

    run_name = run_name or f"{context.job_id}-{trial.name}"
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"trial": trial.model_dump(), "context": context.model_dump(),
                           "start_from": start_from.model_dump() if start_from else None, "decisions": decisions,
                           "run_dir": storage.join(context.storage, "train", run_name)},
        scaling_config=scaling_config(resources),
        # Survivors of a dead rank fail their collective after this long, and the group restarts.
        torch_config=TorchConfig(timeout_s=resources.collective_timeout_s),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage.join(context.storage, "train"),
            failure_config=FailureConfig(max_failures=resources.max_failures),
            checkpoint_config=checkpoint_config(keep_all),
            callbacks=callbacks,
        ),
    )


def scaling_config(resources: Resources):
    """A trial's workers: a fixed count, or an elastic (min, max) range whose size Ray Train looks
    at every `resize_interval_s` (a resize restarts the worker group from its last checkpoint)."""
    from ray.train import ScalingConfig

    use_gpu = resources.gpus_per_worker > 0
    per_worker = {"CPU": resources.cpus_per_worker} | ({"GPU": resources.gpus_per_worker} if use_gpu else {})
    workers = (resources.min_workers, resources.max_workers) if resources.elastic else resources.workers_per_trial
    return ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=per_worker,
                         placement_strategy=resources.placement.upper(),
                         elastic_resize_monitor_interval_s=resources.resize_interval_s)


def checkpoint_config(keep_all: bool = False):
    """Keep the checkpoint of the published best epoch and the latest one, whatever the ties
    (workers.checkpointing.RETENTION_SCORE says how). A saliency trial resumes from the latest;
    each of its iterations stores its best epoch's model beside its keep-masks. Under PBT every
    checkpoint stays: another trial may take over any of them a while after it was reported."""
    from ray.train import CheckpointConfig

    return CheckpointConfig(num_to_keep=None if keep_all else 1, checkpoint_score_attribute=RETENTION_SCORE,
                            checkpoint_score_order="max")


def run_trial(config: dict) -> None:
    """A Tune function trainable: one trial, trained in this Tune trial or through Ray Train, each
    epoch reported to Tune."""
    from ray import tune

    trial = trial_of(config, tune.get_context().get_trial_name())
    context = TrialContext.model_validate(config["context"])
    resources = Resources.model_validate(config["resources"])
    if finished_before(context, trial.name):  # a resumed job whose Tune state lagged behind this trial's end
        return
    publisher = MetricsPublisher(context.redis_url, context.events_stream, trial.name)
    params = {"model": trial.model, "train": trial.train.model_dump()}
    if trial.saliency:
        params["saliency"] = trial.saliency.model_dump()
    facts = {"arch": trial.arch, "params": params, "workers": resources.min_workers,
             "workers_max": resources.max_workers if resources.elastic else None,
             "gpus_per_worker": resources.gpus_per_worker, "cpus_per_worker": resources.cpus_per_worker,
             "cpus": resources.trial_cpus, "gpus": resources.trial_gpus,
             "runner": "trial" if resources.trains_in_trial else "train"}
    started = time.time()
    publisher.trial_event("running", **facts)
    start_from, run_name, checkpoints = tuning.start_point()
    if start_from and start_from.trial != trial.name:  # PBT: a fresh Train run from the donor's checkpoint
        run_name, checkpoints = f"{context.job_id}-{trial.name}-x{uuid.uuid4().hex[:6]}", {}
        publisher.perturbation_event(start_from.iteration, start_from.epoch, start_from.trial, trial.train.model_dump())
    reports = tuning.TuneReports(run_name or f"{context.job_id}-{trial.name}", trial.name, checkpoints,
                                 before_each=lambda: publisher.trial_event(run_segment=run_segment(started)))
    train = train_in_trial if resources.trains_in_trial else train_through_ray_train
    try:
        final_report = train(trial, context, resources, start_from, reports, keep_all=config.get("scheduler") == "pbt",
                             with_scheduler=config.get("scheduler") != "fifo")
    except SystemExit:  # Tune paused or ended the trial at a report (its run's time went out before it)
        publisher.close()
        raise
    except BaseException as error:
        publisher.trial_event("failed", error=f"{type(error).__name__}: {error}"[-1000:],
                              run_segment=run_segment(started), **facts)
        publisher.close()
        raise
    best = best_checkpoint_path(final_report, trial, context)
    publisher.trial_event("finished", run_segment=run_segment(started), best_checkpoint=best,
                          process_rss_mb=resident_memory_mb(), **facts)
    publisher.close()


def resident_memory_mb() -> float | None:
    """This process's resident memory now (Linux), None where /proc does not tell."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def run_segment(started: float) -> dict[str, float]:
    return {"started": started, "seconds": time.time() - started}


def train_in_trial(trial: TrialSpec, context: TrialContext, resources: Resources, start_from: StartFrom | None,
                   reports: tuning.TuneReports, keep_all: bool, with_scheduler: bool) -> dict:
    """The trial's train loop in this process (the Tune trial's); its final report. Tune's report
    returns once the scheduler let the trial go on, so no channel of decisions is needed."""
    from workers.train_loop import train_trial

    channel = tuning.InTrialChannel(storage.join(context.storage, "train", reports.run_name), reports, keep_all)
    try:
        train_trial(trial, context, channel, start_from)
    finally:
        gc.collect()  # the next trial runs in this process: what this one built goes now
    if channel.last_report is None:
        raise RuntimeError(f"trial {trial.name}: it ended without a report")
    return channel.last_report


def train_through_ray_train(trial: TrialSpec, context: TrialContext, resources: Resources,
                            start_from: StartFrom | None, reports: tuning.TuneReports, keep_all: bool,
                            with_scheduler: bool) -> dict:
    """One TorchTrainer.fit() for the trial, its workers' reports forwarded to Tune; the final report.
    Under a scheduler, rank 0 waits on `decisions` after each report until Tune decided on it."""
    from jobs.execution.forwarding import ForwardToTune

    queue = tuning.trial_queue("reports", maxsize=1)
    decisions = tuning.trial_queue("decisions") if with_scheduler else None
    trainer = trainer_for(trial, context, resources, [ForwardToTune(queue, context.storage)], reports.run_name,
                          start_from, keep_all=keep_all, decisions=decisions)
    return tuning.fit_reporting_to_tune(trainer, queue, decisions, reports)


def finished_before(context: TrialContext, trial_name: str) -> bool:
    """Whether an earlier attempt of the job finished this trial (its record in Redis says so)."""
    client = open_redis(context.redis_url, decode_responses=True)
    try:
        return client.hget(keys.trial(context.job_id, trial_name), "status") == '"finished"'
    finally:
        client.close()


def trial_of(config: dict, name: str) -> TrialSpec:
    """The trial Tune runs under `name`: a resolved TrialSpec (PBT may hand it another trial's,
    mutated), or the configuration Optuna suggested, built by the job's spec."""
    if "job" in config:
        spec = SPEC_KINDS[config["job"]["kind"]].model_validate(config["job"])
        arch = config["arch"]
        return spec.suggested_trial(name, arch, (config.get("model") or {}).get(arch, {}), config.get("train") or {})
    return TrialSpec.model_validate({**config["trial"], "name": name})


def best_checkpoint_path(final_report: dict, trial: TrialSpec, context: TrialContext) -> str | None:
    """The checkpoint of the epoch the workers published as best, as the final report names it
    (jobs.execution.tuning.report_epoch; retention always keeps it). A saliency trial ends with its last
    iteration's stored model, the model of that iteration's best epoch."""
    if trial.saliency:
        return str(iteration_dir(context.data, context.job_id, trial.name, trial.iterations) / CHECKPOINT_FILE)
    return final_report.get("best_checkpoint")


def trial_trainable():
    """What Tune runs per trial, with the resources of the trial function (the same on a restore)."""
    from ray import tune

    return tune.with_resources(run_trial, trial_resources)


def trial_resources(config: dict) -> dict:
    """What a Tune trial asks Ray for: its worker's CPUs and GPUs when it trains itself, else only
    the CPUs of a function that waits on its Ray Train workers (they ask for their own)."""
    resources = Resources.model_validate(config["resources"])
    if not resources.trains_in_trial:
        return {"CPU": TRIAL_DRIVER_CPUS}
    return {"CPU": resources.cpus_per_worker, "GPU": resources.gpus_per_worker}


def run_trials(job_id: str, data: str, trials: list[TrialSpec], resources: Resources, target: Target,
               deployment: Deployment, spec: JobSpec) -> list[str]:
    """Run the job's trials under Tune (its resolved ones, or Optuna's suggestions), with the
    spec's scheduler; return the names of trials that failed."""
    from ray import tune

    # Trial configs land in Tune's files under storage: the URL goes there without its password.
    context = TrialContext(job_id=job_id, data=data, storage=deployment.storage,
                           redis_url=public_url(deployment.redis_url),
                           events_stream=keys.events(job_id), target=target, min_workers=resources.min_workers)
    constants = {"context": context.model_dump(), "resources": resources.model_dump(), "scheduler": spec.scheduler.kind}
    scheduler = tuning.scheduler_for(spec.scheduler, target, max_trial_epochs(spec, trials), spec.train,
                                     spec.search_seed)
    if spec.search == "optuna":
        models, train = spec.sections()
        spaces = {arch: section.spaces for arch, section in models.items()} | {"train": train.spaces}
        search = {"search_alg": tuning.optuna_search(spaces, spec.archs, target, spec.search_seed,
                                                     constants | {"job": spec.model_dump(mode="json")}),
                  "num_samples": spec.samples}
        param_space = {}
    else:
        search = {}
        param_space = {"trial": tune.grid_search([trial.model_dump() for trial in trials]), **constants}
    tuner = tune.Tuner(
        trial_trainable(),
        param_space=param_space,
        # The next trial runs in the last one's process (no new process, no imports again): always
        # when trials train in their Tune trial; through Ray Train only under FIFO, as a trial a
        # scheduler stops or pauses has a Train run that ends only with its process.
        tune_config=tune.TuneConfig(max_concurrent_trials=resources.max_concurrent_trials, scheduler=scheduler,
                                    reuse_actors=resources.trains_in_trial or scheduler is None,
                                    trial_name_creator=TrialNames(), trial_dirname_creator=TrialNames(), **search),
        run_config=tune.RunConfig(
            name=job_id, storage_path=storage.join(deployment.storage, "tune"), verbose=0,
            # a trial whose own process died (its node was lost) starts again, its Train run from its last checkpoint
            failure_config=tune.FailureConfig(max_failures=resources.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None if spec.scheduler.kind == "pbt" else 2),
            callbacks=[tuning.TrialOutcomes(context.redis_url, context.events_stream, scheduler, spec.scheduler.kind)]),
    )
    results = tuner.fit()
    return [Path(result.path).name for result in results if result.error]


def max_trial_epochs(spec: JobSpec, trials: list[TrialSpec]) -> int:
    return max((trial.train.epochs for trial in trials), default=0) or spec.max_epochs(spec.sections()[1])


class TrialNames:
    """Tune's trial names: a resolved trial's own, or for an Optuna suggestion `007_unet_lr=0.0031`
    (numbered as Optuna numbers its trials)."""

    def __call__(self, trial) -> str:
        config = trial.config
        if "trial" in config:
            return config["trial"]["name"]
        arch = config["arch"]
        varying = {**(config.get("model") or {}).get(arch, {}), **(config.get("train") or {})}
        return trial_name(config["index"], arch, varying)
