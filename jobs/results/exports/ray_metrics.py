"""segq's figures as Ray metrics (ray.util.metrics), exported by the driver's node beside Ray's own
on its Prometheus endpoint. Ray puts its namespace in front: `segq_trial_epoch` is scraped as
`ray_segq_trial_epoch`. Every series carries the job (`job_id`: Prometheus keeps `job` for its own
scrape job) and, per trial, the trial (`trial`).
"""
from __future__ import annotations

from workers.events import Event, MetricsEvent, TrialEvent

TRIAL_GAUGES = {
    "segq_trial_epoch": "The trial's latest epoch (in its current saliency iteration)",
    "segq_trial_train_loss": "Training loss of the trial's latest epoch",
    "segq_trial_val_miou": "Val mIoU of the trial's latest epoch",
    "segq_trial_best_val_miou": "Best val mIoU of the trial so far",
    "segq_trial_images_per_s": "Training images per second of the trial's latest epoch, all its workers",
}
JOB_GAUGE = "segq_job_trials"
JOB_STATUSES = ("queued", "running", "finished", "stopped", "failed")


class RayMetrics:
    """`trials`: how many trials the job runs (queued = those not started yet)."""

    name = "Ray metrics"

    def __init__(self, job_id: str, trials: int):
        from ray.util.metrics import Gauge

        self.job_id, self.trials = job_id, trials
        self.gauges = {name: Gauge(name, description=text, tag_keys=("job_id", "trial"))
                       for name, text in TRIAL_GAUGES.items()}
        self.job_gauge = Gauge(JOB_GAUGE, description="The job's trials in each status (queued: not started yet)",
                               tag_keys=("job_id", "status"))
        self.statuses: dict[str, str] = {}
        self.best_miou: dict[str, float] = {}
        self.count_statuses()

    def event(self, event: Event) -> None:
        if isinstance(event, TrialEvent) and event.status is not None:
            self.statuses[event.trial] = event.status.value
            self.count_statuses()
        elif isinstance(event, MetricsEvent):
            self.epoch_figures(event)

    def epoch_figures(self, event: MetricsEvent) -> None:
        tags = {"job_id": self.job_id, "trial": event.trial}
        values = event.metrics.model_dump()
        if event.split == "train":
            self.gauges["segq_trial_epoch"].set(event.epoch, tags)
            self.gauges["segq_trial_train_loss"].set(values["loss"], tags)
            self.gauges["segq_trial_images_per_s"].set(values["images_per_s"], tags)
        elif event.split == "val" and values.get("miou") is not None:
            self.gauges["segq_trial_val_miou"].set(values["miou"], tags)
            best = max(values["miou"], self.best_miou.get(event.trial, values["miou"]))
            self.best_miou[event.trial] = best
            self.gauges["segq_trial_best_val_miou"].set(best, tags)

    def count_statuses(self) -> None:
        counts = dict.fromkeys(JOB_STATUSES, 0)
        for status in self.statuses.values():
            counts[status] = counts.get(status, 0) + 1
        counts["queued"] = max(0, self.trials - len(self.statuses))
        for status, count in counts.items():
            self.job_gauge.set(count, {"job_id": self.job_id, "status": status})

    def flush(self) -> None:
        pass  # Ray exports the gauges' values on its own interval

    def close(self) -> None:
        pass  # the series end with the driver's process
