"""Tune's schedulers and search algorithms for a job, and the bridge from a trial's Train run to Tune.

Schedulers decide on the epoch (`time_attr="epoch"`): Tune's `training_iteration` counts reports,
and a saliency trial would restart it every iteration. Every report carries a Tune checkpoint that
only points to the Train checkpoint it came with (`pointer.json`, a few hundred bytes, nothing
copied): PBT hands a donor's pointer to the trial that exploits it, and a paused or restored trial
gets its own back (jobs.execution.sweep reads it). A trial that a scheduler ends is torn down with its Tune
actor, so its outcome is published from the driver (`TrialOutcomes`), where the decision was made.
"""
from __future__ import annotations

import atexit
import json
import logging
import math
import random
import tempfile
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ray import tune
from ray.train import Checkpoint
from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler, PopulationBasedTraining, TrialScheduler
from ray.util.queue import Empty, Queue

from jobs.search_space import LISTS, optuna_suggest, tune_domain, within_space
from jobs.spec import SchedulerSpec
from seg_models.exceptions import SpecError
from workers import storage
from workers.checkpointing import RETENTION_SCORE, load_checkpoint
from workers.exceptions import CheckpointError
from workers.publisher import MetricsPublisher
from workers.reporting import FINAL_REPORT, TRIAL_DONE
from workers.target import Target
from workers.trial_spec import StartFrom

POINTER_FILE = "pointer.json"
TIME_ATTR = "epoch"
LAST_EPOCH = "last_epoch"  # the epoch of a trial's last report, under a name no scheduler reads


# --- schedulers ---------------------------------------------------------------------------------

class RecordingASHA(ASHAScheduler):
    """ASHA that keeps, for each trial it stops, the rung and the cutoff its value fell below:
    `stops`, trial id -> {reason, rung} (TrialOutcomes publishes them). The rung and the values
    compared against are read before Ray's bracket records this result, the way the bracket
    finds them (deciding_rung), so the record is what ASHA compared against."""

    def __init__(self, **kwargs):
        super().__init__(stop_last_trials=False, **kwargs)
        self.stops: dict[str, dict] = {}

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        bracket = self._trial_info.get(trial.trial_id)
        epoch = result.get(TIME_ATTR)
        rung = deciding_rung(bracket, trial.trial_id, epoch) if bracket and self._metric in result else None
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and rung is not None:
            milestone, recorded = rung
            cutoff = bracket.cutoff(recorded)
            value = result[self._metric]
            self.stops[trial.trial_id] = {
                "rung": epoch,
                "reason": f"asha: {self._metric} {value:.4g} at epoch {epoch} (rung {milestone:g}) is below the "
                          f"top 1/{bracket.rf:g} of {len(recorded)} trials (cutoff {self._metric_op * cutoff:.4g})"}
        return decision


def deciding_rung(bracket, trial_id: str, epoch: int | None) -> tuple[float, dict] | None:
    """The rung (milestone, a copy of the values recorded there) that Ray's ASHA bracket compares a
    result of `epoch` against, or None when it compares it with none (ray.tune.schedulers.
    async_hyperband._Bracket.on_result: the highest milestone reached that holds no value of the
    trial yet; a trial with a value at a higher milestone already goes on undecided)."""
    if epoch is None:
        return None
    for milestone, recorded in bracket._rungs:  # highest milestone first
        if epoch >= milestone and trial_id in recorded:
            return None
        if epoch >= milestone:
            return milestone, dict(recorded)
    return None


class EpochHyperBand(HyperBandScheduler):
    """HyperBand whose bracket survivors run to their own end (stop_last_trials=False), and which
    never decides on a trial's final report: a trial that ends at a rung ends there, and its
    bracket goes on without it."""

    def __init__(self, **kwargs):
        super().__init__(stop_last_trials=False, **kwargs)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(FINAL_REPORT):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


def check_hyperband(spec: SchedulerSpec, target: Target, max_epochs: int, trials: int,
                    max_concurrent: int | None) -> None:
    """Refuse, at submission, a HyperBand job that would halve nothing: Ray's HyperBand fills its
    brackets in the order trials are added, the first (s=0) running its trials for all max_epochs;
    a later bracket halves only when it holds more trials than it keeps at its first rung. A
    concurrency limit below the trial count is refused too: Tune then adds trials only as others
    end, so a bracket would halve among the few it holds at the time."""
    if max_concurrent is not None and max_concurrent < trials:
        raise SpecError(f"resources.max_concurrent_trials: {max_concurrent} is below the job's {trials} trials, and "
                        "HyperBand's brackets halve only among the trials they hold at once; leave it unset with "
                        "scheduler: hyperband (or use asha, which decides each trial on arrival)")
    scheduler = scheduler_for(spec, target, max_epochs, {})
    for index in range(trials):
        scheduler.on_trial_add(None, f"trial-{index}")
    brackets = [bracket for band in scheduler._hyperbands for bracket in band if bracket is not None]
    if not any(bracket._halves > 0 and len(bracket._live_trials) > math.ceil(bracket._n / bracket._eta)
               for bracket in brackets):
        sizes = ", ".join(f"{len(b._live_trials)} of {b._n} for {b._r} epochs" for b in brackets)
        raise SpecError(f"scheduler: hyperband over {trials} trials of {spec.max_epochs or max_epochs} epochs "
                        f"(reduction_factor {spec.reduction_factor:g}) halves nothing: its brackets hold {sizes}, "
                        "and none holds more trials than it keeps; add trials, or use asha")


def scheduler_for(spec: SchedulerSpec, target: Target, max_epochs: int, train_fields: dict[str, Any],
                  seed: int = 0):
    """The Tune scheduler of a job (None: FIFO), its defaults scaled to the trials' epochs; PBT
    draws from generators seeded with `seed` (the job's search_seed)."""
    if spec.kind == "fifo":
        return None
    common = {"time_attr": TIME_ATTR, "metric": target.metric, "mode": target.mode}
    epochs = spec.max_epochs or max_epochs
    if spec.kind == "asha":
        return RecordingASHA(max_t=epochs, grace_period=spec.resolved_grace_period(epochs),
                             reduction_factor=spec.reduction_factor, brackets=1, **common)
    if spec.kind == "hyperband":
        return EpochHyperBand(max_t=epochs, reduction_factor=spec.reduction_factor, **common)
    logging.getLogger("ray.tune.schedulers.pbt").setLevel(logging.INFO)  # its exploits, in the job's log
    spaces = spec.resolved_mutations(train_fields)
    return SeededPBT(
        seed, perturbation_interval=spec.resolved_perturbation_interval(epochs), synch=spec.synch,
        require_attrs=False,  # a trial's last report carries no epoch (see report_epoch)
        hyperparam_mutations={"trial": {"train": mutations(spaces)}}, custom_explore_fn=WithinSpaces(spaces),
        quantile_fraction=spec.quantile_fraction, resample_probability=spec.resample_probability, **common)


class SeededPBT(PopulationBasedTraining):
    """PBT whose draws (the donor, resample or perturb, the factor, a resampled value) come from its
    own generators, seeded from the job's search_seed, so the same job gives the same perturbations.
    Ray's PBT draws from the global `random` and numpy generators: they are swapped for the
    scheduler's own around each of its calls, and put back."""

    def __init__(self, seed: int, **kwargs):
        super().__init__(**kwargs)
        self._python_state = random.Random(seed).getstate()
        self._numpy_state = np.random.RandomState(seed).get_state()

    @contextmanager
    def own_generators(self):
        python_state, numpy_state = random.getstate(), np.random.get_state()
        random.setstate(self._python_state)
        np.random.set_state(self._numpy_state)
        try:
            yield
        finally:
            self._python_state, self._numpy_state = random.getstate(), np.random.get_state()
            random.setstate(python_state)
            np.random.set_state(numpy_state)

    def on_trial_add(self, tune_controller, trial) -> None:
        with self.own_generators():
            super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        with self.own_generators():
            return super().on_trial_result(tune_controller, trial, result)


def mutations(spaces: dict[str, Any]) -> dict[str, Any]:
    """PBT's mutations: a list, `grid` or `choice` as a list (Ray's PBT picks from a list, or moves
    to a neighbour in it), any other space as its Tune domain (resampled, or multiplied by 0.8 or
    1.2 and then brought back within the space by WithinSpaces)."""
    return {field: list(space) if isinstance(space, list) else tune_domain(*next(iter(space.items())))
            for field, space in spaces.items()}


class WithinSpaces:
    """PBT's custom_explore_fn: a perturbed value goes back within its space's bounds (a randint's
    high is exclusive, a quniform's value a multiple of q), and an integer field stays an integer.
    The bounds were checked at submission to be valid values of the field."""

    def __init__(self, spaces: dict[str, Any]):
        self.bounded = {field: next(iter(space.items())) for field, space in spaces.items()
                        if isinstance(space, dict) and next(iter(space)) not in LISTS}

    def __call__(self, config: dict) -> dict:
        train = config["trial"]["train"]
        for field, (kind, args) in self.bounded.items():
            train[field] = within_space(train[field], kind, args)
        return config


# --- search algorithms ----------------------------------------------------------------------------

def optuna_search(spaces: dict[str, dict[str, tuple[str, list]]], archs: list[str], target: Target, seed: int,
                  constants: dict[str, Any]):
    """Ray Tune's OptunaSearch (TPE, seeded) over the architectures and each one's searched fields."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(space=OptunaSpace(spaces, archs, constants), metric=target.metric, mode=target.mode,
                        sampler=optuna.samplers.TPESampler(seed=seed))


class OptunaSpace:
    """Define-by-run (and picklable, for Tune's experiment state): the architecture, then its own
    searched model fields and the train ones; the config is `{arch, model: {arch: {...}}, train: {...}}`
    beside the job's `constants` and the suggestion's number (`index`, which names the trial)."""

    def __init__(self, spaces: dict[str, dict[str, tuple[str, list]]], archs: list[str], constants: dict[str, Any]):
        self.spaces, self.archs, self.constants = spaces, archs, constants

    def __call__(self, trial) -> dict:
        arch = trial.suggest_categorical("arch", self.archs)
        for key, (kind, args) in self.spaces[arch].items():
            optuna_suggest(trial, f"model/{arch}/{key}", kind, args)
        for key, (kind, args) in self.spaces["train"].items():
            optuna_suggest(trial, f"train/{key}", kind, args)
        return self.constants | {"index": trial.number}  # Optuna numbers its trials 0, 1, 2, ...


# --- a trial's epochs to Tune ---------------------------------------------------------------------

@dataclass
class TuneReports:
    """Where a trial's epochs go to Tune, on either path: its run's name, the trial's name, its
    stored checkpoints by (iteration, epoch) (those of its earlier runs included, see start_point),
    and `before_each`, called before each report (the trial function publishes its run's time so
    far: a scheduler may end the trial at any report, and a paused or stopped trial's process may
    sit idle or be gone by the time it is told)."""

    run_name: str
    trial_name: str
    checkpoints: dict[tuple[int, int], str]
    before_each: Callable[[], None]

    def report(self, item: dict) -> dict:
        """One epoch's report (`metrics`, and where its `checkpoint` was stored) to Tune; the
        metrics as reported."""
        self.before_each()
        return report_epoch(item, self.checkpoints, self.run_name, self.trial_name)


# --- from a Train run to Tune ---------------------------------------------------------------------

def fit_reporting_to_tune(trainer, queue: Queue, decisions: Queue | None, reports: TuneReports) -> dict:
    """trainer.fit() on a thread, while this one reports each forwarded epoch to Tune; the metrics
    of the run's last report, as reported. Tune's report returns once the scheduler let the trial go
    on: `decisions` tells rank 0 so.

    The trial ends when its workers say it is done (workers.reporting.TRIAL_DONE, after their last
    report, events and files): the Train run then shuts its worker group down on its own thread
    (about 2 s), while Tune starts the next trial, in this process under FIFO (see SHUTTING_DOWN)."""
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as error:  # raised again in the trial function's own thread
            outcome["error"] = error

    thread = threading.Thread(target=fit, name=f"fit-{reports.trial_name}", daemon=True)
    thread.start()
    last_report = None
    while thread.is_alive() or not queue.empty():
        try:
            item = queue.get(timeout=0.5)
        except Empty:
            continue
        if item["metrics"].get(TRIAL_DONE):
            SHUTTING_DOWN[:] = [*(other for other in SHUTTING_DOWN if other.is_alive()), thread]
            break
        last_report = reports.report(item)
        if decisions is not None and not last_report.get(FINAL_REPORT):
            decisions.put(True)
    else:  # the run ended without its workers saying they were done: it failed, or they never reported
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
    if last_report is None:
        raise RuntimeError(f"trial {reports.trial_name}: its Train run ended without a report")
    return last_report


# The queues of this trial process (name -> ray.util.queue.Queue), each an actor: made by the first
# trial that needs it and reused by the trials Tune runs after it in this process (trial_queue).
QUEUES: dict[str, Queue] = {}


def trial_queue(name: str, maxsize: int = 0) -> Queue:
    """This process's queue `name`, empty: a trial starts no actor of its own for it."""
    queue = QUEUES.get(name)
    if queue is None:
        queue = QUEUES[name] = Queue(maxsize=maxsize, actor_options={"num_cpus": 0})
    while not queue.empty():  # what an earlier trial left (a report after it was stopped)
        queue.get_nowait()
    return queue


# Train runs whose trials have ended, still shutting their worker groups down; the trial process
# waits for them before it exits, so that each run ends as finished rather than cut off.
SHUTTING_DOWN: list[threading.Thread] = []


@atexit.register
def wait_for_shutdowns(timeout_s: float = 60.0) -> None:
    for thread in SHUTTING_DOWN:
        thread.join(timeout_s)


def report_epoch(item: dict, checkpoints: dict[tuple[int, int], str], run_name: str, trial_name: str) -> dict:
    """Reports a forwarded epoch to Tune; the metrics as reported."""
    metrics, path = with_best_checkpoint(item, checkpoints), item["checkpoint"]
    iteration, epoch = metrics.get("iteration", 1), metrics["epoch"]
    if metrics.get(FINAL_REPORT):  # the trial ends here: no scheduler decides on it (nor perturbs it)
        metrics[LAST_EPOCH] = metrics.pop(TIME_ATTR)
    if not path:
        tune.report(metrics)
        return metrics
    with tempfile.TemporaryDirectory() as directory:
        best = {"iteration": iteration, "epoch": metrics.get("best_epoch"), "checkpoint": metrics["best_checkpoint"]}
        pointer = {"checkpoint": path, "trial": trial_name, "iteration": iteration, "epoch": epoch, "run": run_name,
                   "best": best}
        (Path(directory) / POINTER_FILE).write_text(json.dumps(pointer))
        tune.report(metrics, checkpoint=Checkpoint.from_directory(directory))
    return metrics


def with_best_checkpoint(item: dict, checkpoints: dict[tuple[int, int], str]) -> dict:
    """A forwarded epoch's metrics, with `best_checkpoint`: where the checkpoint of the epoch the
    workers published as best was stored (Ray Train's retention keeps it, see
    jobs.execution.sweep.checkpoint_config). `checkpoints` collects each (iteration, epoch)'s."""
    metrics = item["metrics"]
    if item["checkpoint"]:
        checkpoints[(metrics.get("iteration", 1), metrics["epoch"])] = item["checkpoint"]
    metrics["best_checkpoint"] = checkpoints.get((metrics.get("iteration", 1), metrics.get("best_epoch")))
    return metrics


def start_point() -> tuple[StartFrom | None, str | None, dict[tuple[int, int], str]]:
    """The checkpoint Tune hands this trial, if any, the Train run that wrote it, and the stored
    checkpoint of the best epoch as of it, by (iteration, epoch): a trial that resumes after a pause
    still names its best epoch's checkpoint if that epoch came before the pause."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None, None, {}
    with checkpoint.as_directory() as directory:
        pointer = json.loads((Path(directory) / POINTER_FILE).read_text())
    run, best = pointer.pop("run"), pointer.pop("best", None)
    known = {(best["iteration"], best["epoch"]): best["checkpoint"]} if best and best["checkpoint"] else {}
    return StartFrom(**pointer), run, known


# --- a trial that trains in its own Tune trial ---------------------------------------------------

CHECKPOINT_PREFIX = "checkpoint_"  # then iteration_epoch: the folder of one epoch's checkpoint, in a run's folder


class InTrialChannel:
    """workers.trial_channel's seam for a one-worker trial that trains in its Tune trial: rank 0 of
    1, on the GPU Ray gave the trial (else the CPU). Each epoch's checkpoint is stored in the job's
    storage under `run_dir` (local or a URI; one folder per (iteration, epoch)), kept by Ray Train's
    rule (CheckpointRetention), and reported to Tune with a pointer checkpoint, as a Train run's are
    (report_epoch): restarts, PBT exploits, HyperBand resumes and `jobs resume` hand it back the
    same way. Tune's report returns once the scheduler let the trial go on."""

    rank, world_size = 0, 1

    def __init__(self, run_dir: str, reports: TuneReports, keep_all: bool):
        import ray
        import torch

        self.device = torch.device("cuda", 0) if ray.get_gpu_ids() else torch.device("cpu")
        self.run_dir, self.reports = run_dir, reports
        self.retention = CheckpointRetention(keep_all)
        self.last_report: dict | None = None

    def prepare_model(self, model):
        return model.to(self.device)

    def restored(self) -> dict | None:
        """The newest checkpoint this run stored, as a Train run resumes from its own storage: a
        trial restarted (its process killed, the job resumed) may have stored a newer one than the
        last Tune registered. One cut off mid-upload does not load, and the one before it is taken."""
        stored = [location for location in storage.list_dirs(self.run_dir)
                  if location.rstrip("/").rpartition("/")[2].startswith(CHECKPOINT_PREFIX)]
        for location in sorted(stored, reverse=True):  # named by (iteration, epoch), zero-padded
            try:
                return load_checkpoint(location, map_location=self.device)
            except CheckpointError:
                continue
        return None

    def report(self, metrics: dict, directory: Path | None, publish: Callable[[], None] = lambda: None) -> None:
        location = None
        if directory is not None:
            location = storage.join(self.run_dir, f"{CHECKPOINT_PREFIX}{metrics['iteration']:03d}_{metrics['epoch']:04d}")
            storage.upload_dir(directory, location)
            for unkept in self.retention.add(location, metrics[RETENTION_SCORE]):
                storage.delete_dir(unkept)
        publish()  # the checkpoint is stored: a restart resumes from it, and never trains this epoch again
        self.last_report = self.reports.report({"metrics": dict(metrics), "checkpoint": location})

    def done(self) -> None:
        pass


class CheckpointRetention:
    """Ray Train's rule with num_to_keep=1 on the retention score (jobs.execution.sweep.checkpoint_config): the
    highest-scored checkpoint (the later of equal scores) and the latest stay; `keep_all` (PBT)
    keeps every one. `add` returns the locations that are no longer kept."""

    def __init__(self, keep_all: bool):
        self.keep_all, self.kept, self.reported = keep_all, [], 0  # kept: (score, order, location)

    def add(self, location: str, score: float) -> list[str]:
        self.kept = [entry for entry in self.kept if entry[2] != location]  # a replayed epoch replaces its own
        self.reported += 1
        self.kept.append((score, self.reported, location))
        if self.keep_all:
            return []
        keep = {max(self.kept)[2], self.kept[-1][2]}
        dropped = [entry[2] for entry in self.kept if entry[2] not in keep]
        self.kept = [entry for entry in self.kept if entry[2] in keep]
        return dropped


# --- outcomes the driver decides ------------------------------------------------------------------

class TrialOutcomes(tune.Callback):
    """Publishes the status of trials a scheduler ended: `stopped` with the reason, the epochs run
    and the rung, or `finished` when the scheduler's stop came with the trial's last report."""

    def __init__(self, redis_url: str, stream: str, scheduler, scheduler_kind: str):
        self.redis_url, self.stream = redis_url, stream
        self.scheduler, self.kind = scheduler, scheduler_kind

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        result = trial.last_result or {}
        if TIME_ATTR not in result and LAST_EPOCH not in result:
            return
        publisher = MetricsPublisher(self.redis_url, self.stream, trial.custom_trial_name or str(trial))
        if result.get(FINAL_REPORT):
            publisher.trial_event("finished", best_checkpoint=result.get("best_checkpoint"))
        else:
            stop = getattr(self.scheduler, "stops", {}).get(trial.trial_id) or {
                "reason": f"{self.kind}: stopped after epoch {result[TIME_ATTR]}", "rung": result[TIME_ATTR]}
            publisher.trial_event("stopped", stopped_at_epoch=result[TIME_ATTR], **stop)
        publisher.close()
