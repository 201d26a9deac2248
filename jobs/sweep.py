"""The Tune driver of sweep and saliency jobs: one Tune trial per TrialSpec, each a Ray Train DDP run
(a saliency trial runs all its iterations inside that one run).

Ray 2.60 (Train V2): Tune does not take a TorchTrainer, so each Tune trial is a function that
builds a TorchTrainer, calls fit(), and forwards the workers' reports to Tune with
TuneReportCallback.
"""
from __future__ import annotations

import time
from pathlib import Path

from jobs import keys
from jobs.deployment import Deployment
from jobs.spec import Resources
from workers.checkpointing import CHECKPOINT_FILE, RETENTION_SCORE
from workers.target import Target
from workers.trial_spec import TrialContext, TrialSpec
from workers.publisher import MetricsPublisher
from workers.saliency import iteration_dir

TRIAL_DRIVER_CPUS = 0.1  # the trial function only waits on its workers


def trainer_for(trial: TrialSpec, context: TrialContext, resources: Resources, callbacks: list):
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from workers.train_loop import train_loop_per_worker

    use_gpu = resources.gpus_per_worker > 0
    per_worker = {"CPU": resources.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = resources.gpus_per_worker
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"trial": trial.model_dump(), "context": context.model_dump()},
        scaling_config=ScalingConfig(num_workers=resources.workers_per_trial, use_gpu=use_gpu,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(
            name=f"{context.job_id}-{trial.name}",
            storage_path=str(Path(context.storage) / "train"),
            failure_config=FailureConfig(max_failures=resources.max_failures),
            checkpoint_config=checkpoint_config(),
            callbacks=callbacks,
        ),
    )


def checkpoint_config():
    """Keep the checkpoint of the published best epoch and the latest one, whatever the ties
    (workers.checkpointing.RETENTION_SCORE says how). A saliency trial resumes from the latest;
    each of its iterations stores its best epoch's model beside its keep-masks."""
    from ray.train import CheckpointConfig

    return CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=RETENTION_SCORE, checkpoint_score_order="max")


def run_trial(config: dict) -> None:
    """A Tune function trainable: one trial = one TorchTrainer.fit()."""
    from ray.tune.integration.ray_train import TuneReportCallback

    trial = TrialSpec.model_validate(config["trial"])
    context = TrialContext.model_validate(config["context"])
    resources = Resources.model_validate(config["resources"])
    publisher = MetricsPublisher(context.redis_url, context.events_stream, trial.name)
    params = {"model": trial.model, "train": trial.train.model_dump()}
    if trial.saliency:
        params["saliency"] = trial.saliency.model_dump()
    facts = {"arch": trial.arch, "params": params, "workers": resources.workers_per_trial,
             "gpus_per_worker": resources.gpus_per_worker}
    publisher.trial_event("running", **facts)
    started = time.time()
    trainer = trainer_for(trial, context, resources, [TuneReportCallback()])
    try:
        result = trainer.fit()
        if result.error:
            raise result.error
    except BaseException as error:
        publisher.trial_event("failed", error=f"{type(error).__name__}: {error}"[-1000:],
                              wall_time_s=time.time() - started, **facts)
        publisher.close()
        raise
    best = best_checkpoint_path(result, trial, context)
    publisher.trial_event("finished", wall_time_s=time.time() - started, best_checkpoint=best, **facts)
    publisher.close()


def best_checkpoint_path(result, trial: TrialSpec, context: TrialContext) -> str | None:
    """The checkpoint of the epoch the workers published as best: their last report names it, and
    retention always keeps it (None only if no epoch was reported). A saliency trial ends with its
    last iteration's stored model, the model of that iteration's best epoch."""
    if trial.saliency:
        return str(iteration_dir(context.data, context.job_id, trial.name, trial.iterations) / CHECKPOINT_FILE)
    last = result.metrics or {}
    named = [checkpoint for checkpoint, metrics in result.best_checkpoints or []
             if (metrics.get("iteration"), metrics.get("epoch")) == (last.get("iteration"), last.get("best_epoch"))]
    return named[-1].path if named else None


def run_trials(job_id: str, data: str, trials: list[TrialSpec], resources: Resources, target: Target,
               deployment: Deployment) -> list[str]:
    """Run the job's resolved trials under Tune, as they are; return the names of trials that failed."""
    from ray import tune

    context = TrialContext(job_id=job_id, data=data, storage=deployment.storage, redis_url=deployment.redis_url,
                           events_stream=keys.events(job_id), target=target)
    param_space = {
        "trial": tune.grid_search([trial.model_dump() for trial in trials]),
        "context": context.model_dump(),
        "resources": resources.model_dump(),
    }
    tuner = tune.Tuner(
        tune.with_resources(run_trial, {"CPU": TRIAL_DRIVER_CPUS}),
        param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=resources.max_concurrent_trials,
                                    trial_name_creator=lambda t: t.config["trial"]["name"],
                                    trial_dirname_creator=lambda t: t.config["trial"]["name"]),
        run_config=tune.RunConfig(name=job_id, storage_path=str(Path(deployment.storage) / "tune"), verbose=0),
    )
    results = tuner.fit()
    return [result.config["trial"]["name"] for result in results if result.error]
