"""The report's PNG plots, drawn from trial rows (jobs.results.summary.trial_rows) with matplotlib."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jobs.results.tables import class_names_of, row_label, score  # noqa: E402
from workers.palette import colour_classes  # noqa: E402

PREDICTION_SAMPLES = 6


def plot_learning_curves(rows: list[dict], path: Path) -> Path:
    figure, (loss_axis, miou_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for row in rows:
        label = row_label(row)
        epochs = range(1, len(row["train_loss"]) + 1)
        loss_axis.plot(epochs, row["train_loss"], marker=".", label=label)
        curve = [value if value is not None else np.nan for value in row["val_miou_curve"]]
        miou_axis.plot(range(1, len(curve) + 1), curve, marker=".", label=label)
    loss_axis.set(title="training loss", xlabel="epoch", ylabel="loss")
    miou_axis.set(title="validation mIoU", xlabel="epoch", ylabel="mIoU")
    miou_axis.legend(fontsize=7, loc="best")
    return save(figure, path)


def plot_class_heatmap(rows: list[dict], path: Path) -> Path:
    names = class_names_of(rows)
    scored = [row for row in rows if row.get("val")]
    matrix = np.array([[nan_if_none(row["val"]["per_class_iou"].get(n)) for n in names] for row in scored],
                      dtype=float)
    figure, axis = plt.subplots(figsize=(max(6, 0.7 * len(names) + 3), max(2.5, 0.4 * len(scored) + 1.5)))
    image = axis.imshow(matrix, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axis.set_yticks(range(len(scored)), [row_label(row) for row in scored], fontsize=7)
    for (i, j), value in np.ndenumerate(matrix):
        if not np.isnan(value):
            axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                      color="white" if value < 0.5 else "black")
    figure.colorbar(image, ax=axis, label="val IoU")
    axis.set_title("per-class IoU (validation)")
    return save(figure, path)


def plot_miou_vs_time(rows: list[dict], path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(6, 4))
    for row in rows:
        if row.get("val") and row["train_time_s"]:
            axis.scatter(row["train_time_s"], row["val"]["miou"], s=30)
            axis.annotate(row_label(row), (row["train_time_s"], row["val"]["miou"]), fontsize=6)
    axis.set(title="val mIoU vs training time", xlabel="training time (s)", ylabel="val mIoU")
    return save(figure, path)


def plot_tuning(rows: list[dict], path: Path) -> Path:
    """Left: each trial's target metric against its epochs, x where a scheduler stopped it and ^
    where PBT made it take over another trial's checkpoint. Right: each job's best so far against
    the trial-epochs it had spent."""
    from jobs.results.summary import job_budget

    metric = next((row["target"]["metric"] for row in rows if row.get("target")), "val_miou")
    figure, (trials_axis, budget_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for row in rows:
        curve = [(point["epoch"], nan_if_none(point["value"])) for point in row.get("target_curve") or []]
        if not curve:
            continue
        epochs, values = zip(*curve)
        (line,) = trials_axis.plot(epochs, values, marker=".", label=row_label(row))
        if row["status"] == "stopped":
            trials_axis.scatter(epochs[-1], values[-1], marker="x", s=70, color=line.get_color(), zorder=3)
        for perturbation in row.get("perturbations") or []:
            at = dict(curve).get(perturbation["epoch"], np.nan)
            trials_axis.scatter(perturbation["epoch"], at, marker="^", s=50, color=line.get_color(), zorder=3)
    for job in dict.fromkeys(row["job"] for row in rows):
        spent = job_budget([row for row in rows if row["job"] == job])["best_vs_trial_epochs"]
        if spent:
            budget_axis.step(*zip(*[(x, nan_if_none(y)) for x, y in spent]), where="post", label=job)
    trials_axis.set(title=f"{metric} per trial (x: stopped, ^: pbt exploit)", xlabel="epoch of the trial",
                    ylabel=metric)
    budget_axis.set(title=f"best {metric} against the budget", xlabel="trial-epochs spent", ylabel=metric)
    trials_axis.legend(fontsize=6, loc="best")
    budget_axis.legend(fontsize=6, loc="best")
    return save(figure, path)


def plot_saliency_curve(rows: list[dict], path: Path) -> Path:
    """val and test mIoU per iteration, one line per trial; random-relevance controls dashed."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for trial in sorted({row["trial"] for row in rows}):
        mine = sorted((row for row in rows if row["trial"] == trial), key=lambda row: row["iteration"])
        control = (mine[0]["params"].get("saliency") or {}).get("relevance") == "random"
        for axis, split in zip(axes, ("val", "test")):
            values = [nan_if_none(score(row, split, "miou")) for row in mine]
            axis.plot([row["iteration"] for row in mine], values, linestyle="--" if control else "-", marker="o",
                      label=trial)
    for axis, split in zip(axes, ("val", "test")):
        axis.set(title=f"{split} mIoU per saliency iteration", xlabel="iteration (kept fraction shrinks)",
                 ylabel="mIoU")
        axis.xaxis.get_major_locator().set_params(integer=True)
    axes[1].legend(fontsize=7)
    return save(figure, path)


def plot_predictions(checkpoint: str, data_root: str, path: Path, count: int = PREDICTION_SAMPLES) -> Path:
    """image | truth | prediction for the first validation images, from the best trial's checkpoint."""
    # torch and the model zoo load only when a report has a checkpoint to draw from
    from jobs.checkpoints.inference import load_trained_model, predict_classes
    from workers.shards import ShardedSplit

    trained = load_trained_model(checkpoint)
    split = ShardedSplit(data_root, "val")
    count = min(count, len(split))
    images = [np.array(split.row(i)[1]) for i in range(count)]
    truths = [np.array(split.row(i)[2]) for i in range(count)]
    predictions = predict_classes(trained, images)
    figure, axes = plt.subplots(count, 3, figsize=(6, 2 * count), squeeze=False)
    for i in range(count):
        panels = ((images[i], "image"), (colour_classes(truths[i], trained.palette), "truth"),
                  (colour_classes(predictions[i], trained.palette), "prediction"))
        for j, (picture, title) in enumerate(panels):
            axes[i][j].imshow(picture)
            axes[i][j].axis("off")
            if i == 0:
                axes[i][j].set_title(title, fontsize=9)
    figure.suptitle(f"best trial: {trained.trial['name']}", fontsize=9)
    return save(figure, path)


def nan_if_none(value):
    return np.nan if value is None else value


def save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
