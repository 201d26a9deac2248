"""Comparison reports of one or more jobs: tables (Markdown, CSV, HTML) and PNG plots.

Everything here reads trial rows (jobs.summary.trial_rows); the only other input is the best
checkpoint and the dataset, for the image | truth | prediction grid.
"""
from __future__ import annotations

import base64
import csv
import html
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

SCORES = ("miou", "mdice", "pixel_acc", "mean_acc", "fwiou")
PREDICTION_SAMPLES = 6


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def score(row: dict, split: str, name: str):
    return (row.get(split) or {}).get(name)


def varying_params(rows: list[dict]) -> list[str]:
    """The hyperparameters that differ between trials: the ones worth a column."""
    flat = [flatten_params(row["params"]) for row in rows]
    names = sorted({name for params in flat for name in params})
    return [name for name in names if len({repr(params.get(name)) for params in flat}) > 1]


def flatten_params(params: dict) -> dict:
    flat = {}
    for section, values in (params or {}).items():
        for name, value in (values or {}).items():
            flat[name if section != "model" else f"model.{name}"] = value
    return flat


def miou_per_device_hour(row: dict):
    miou, hours = score(row, "val", "miou"), row["cost"]["device_hours"]
    return miou / hours if miou is not None and hours else None


def comparison_rows(rows: list[dict], compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the main table, best val mIoU first (saliency: per trial, iteration order).
    `compact` (the terminal) leaves out the parameter and cost columns: the trial name already
    says what varies, and the report and CSV have the rest."""
    params = [] if compact else varying_params(rows)
    multi_job = len({row["job"] for row in rows}) > 1
    saliency = any("iteration" in row for row in rows)
    header = (["job"] if multi_job else []) + ["trial", "arch"] + params
    header += ["iteration", "kept", "Δ val mIoU vs it. 1"] if saliency else []
    header += ["val mIoU", "val mDice", "val pixel acc", "val mean acc", "val FWIoU", "test mIoU", "best epoch",
               "epochs", "status", "train s", "images/s", "params"]
    header += [] if compact else ["device-h", "mIoU/device-h", "peak MB"]
    baseline = {row["trial"]: score(row, "val", "miou") for row in rows if row.get("iteration") == 1}
    ordered = (sorted(rows, key=lambda r: (r["job"], r["trial"], r["iteration"])) if saliency
               else sorted(rows, key=lambda r: -(score(r, "val", "miou") or -1)))
    body = []
    for row in ordered:
        flat = flatten_params(row["params"])
        line = ([row["job"]] if multi_job else []) + [row["trial"], row["arch"] or "-"]
        line += [fmt(flat.get(name), 6) for name in params]
        if saliency:
            base, current = baseline.get(row["trial"]), score(row, "val", "miou")
            delta = current - base if base is not None and current is not None else None
            line += [str(row.get("iteration", "-")), fmt(row.get("kept_fraction")),
                     "-" if delta is None else f"{delta:+.3f}"]
        line += [fmt(score(row, "val", s)) for s in SCORES] + [fmt(score(row, "test", "miou"))]
        status = row["status"] + (" (stopped early)" if row.get("stopped_early") else "")
        line += [fmt(row["best_epoch"]), str(row["epochs"]), status, fmt(row["train_time_s"], 1),
                 fmt(row["images_per_s"], 1), f"{row['num_params']:,}" if row["num_params"] else "-"]
        if not compact:
            line += [fmt(row["cost"]["device_hours"], 4), fmt(miou_per_device_hour(row), 1),
                     fmt(row["cost"]["peak_memory_mb"], 0)]
        body.append(line)
    return header, body


def control_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Saliency against its random-relevance control, iteration by iteration: same architecture,
    options, training and schedule; only the choice of removed pixels differs."""
    def configuration(row: dict) -> str:
        params = {k: v for k, v in (row["params"].get("saliency") or {}).items() if k != "relevance"}
        return repr((row["job"], row["arch"], row["params"].get("model"), row["params"].get("train"), params))

    by_config: dict[str, dict[str, dict[int, dict]]] = {}
    for row in rows:
        relevance = (row["params"].get("saliency") or {}).get("relevance")
        by_config.setdefault(configuration(row), {}).setdefault(relevance, {})[row["iteration"]] = row
    header = ["saliency trial", "control trial", "iteration", "kept", "val mIoU (saliency)", "val mIoU (random)",
              "saliency - random", "test mIoU (saliency)", "test mIoU (random)"]
    body = []
    for runs in by_config.values():
        if "random" not in runs or len(runs) < 2:
            continue
        control = runs["random"]
        for relevance, iterations in runs.items():
            if relevance == "random":
                continue
            for iteration in sorted(iterations):
                ours, theirs = iterations[iteration], control.get(iteration)
                if theirs is None:
                    continue
                a, b = score(ours, "val", "miou"), score(theirs, "val", "miou")
                body.append([ours["trial"], theirs["trial"], str(iteration), fmt(ours.get("kept_fraction")),
                             fmt(a), fmt(b), "-" if a is None or b is None else f"{a - b:+.3f}",
                             fmt(score(ours, "test", "miou")), fmt(score(theirs, "test", "miou"))])
    return header, body


def class_names_of(rows: list[dict]) -> list[str]:
    for row in rows:
        if row.get("val") and row["val"].get("per_class_iou"):
            return list(row["val"]["per_class_iou"])
    return []


def row_label(row: dict) -> str:
    return row["trial"] if "iteration" not in row else f"{row['trial']} it{row['iteration']}"


def per_class_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    names = class_names_of(rows)
    header = ["trial"] + names
    body = [[row_label(row)] + [fmt((row["val"] or {}).get("per_class_iou", {}).get(n)) for n in names]
            for row in rows if row.get("val")]
    return header, body


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in body]
    return "\n".join(lines)


def write_csv(rows: list[dict], stream) -> None:
    params = sorted({name for row in rows for name in flatten_params(row["params"])})
    classes = class_names_of(rows)
    columns = ["job", "trial", "arch", "iteration", "kept_fraction", "status", "epochs", "best_epoch"]
    columns += [f"{split}_{s}" for split in ("val", "test") for s in SCORES]
    columns += [f"val_iou_{name}" for name in classes]
    columns += ["train_time_s", "images_per_s", "num_params", "device_hours", "peak_memory_mb", "best_checkpoint"]
    columns += params
    writer = csv.writer(stream)
    writer.writerow(columns)
    for row in rows:
        flat = flatten_params(row["params"])
        values = [row["job"], row["trial"], row["arch"], row.get("iteration", ""), row.get("kept_fraction", ""),
                  row["status"], row["epochs"], row["best_epoch"]]
        values += [score(row, split, s) for split in ("val", "test") for s in SCORES]
        values += [(row["val"] or {}).get("per_class_iou", {}).get(name) for name in classes]
        values += [row["train_time_s"], row["images_per_s"], row["num_params"], row["cost"]["device_hours"],
                   row["cost"]["peak_memory_mb"], row["best_checkpoint"]]
        values += [flat.get(name) for name in params]
        writer.writerow(["" if value is None else value for value in values])


# --- plots ------------------------------------------------------------------------------------

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
    matrix = np.array([[(row["val"]["per_class_iou"].get(n) if row["val"]["per_class_iou"].get(n) is not None
                         else np.nan) for n in names] for row in scored], dtype=float)
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


def plot_saliency_curve(rows: list[dict], path: Path) -> Path:
    """val and test mIoU per iteration, one line per trial; random-relevance controls dashed."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for trial in sorted({row["trial"] for row in rows}):
        mine = sorted((row for row in rows if row["trial"] == trial), key=lambda row: row["iteration"])
        control = (mine[0]["params"].get("saliency") or {}).get("relevance") == "random"
        for axis, split in zip(axes, ("val", "test")):
            values = [score(row, split, "miou") for row in mine]
            axis.plot([row["iteration"] for row in mine], [np.nan if v is None else v for v in values],
                      linestyle="--" if control else "-", marker="o", label=trial)
    for axis, split in zip(axes, ("val", "test")):
        axis.set(title=f"{split} mIoU per saliency iteration", xlabel="iteration (kept fraction shrinks)",
                 ylabel="mIoU")
        axis.xaxis.get_major_locator().set_params(integer=True)
    axes[1].legend(fontsize=7)
    return save(figure, path)


def plot_predictions(checkpoint: str, data_root: str, path: Path, count: int = PREDICTION_SAMPLES) -> Path:
    """image | truth | prediction for the first validation images, from the best trial's checkpoint."""
    from workers.inference import colorize, load_trained_model, predict_classes
    from workers.shards import ShardedSplit

    trained = load_trained_model(checkpoint)
    split = ShardedSplit(data_root, "val")
    count = min(count, len(split))
    images = [np.array(split.row(i)[1]) for i in range(count)]
    truths = [np.array(split.row(i)[2]) for i in range(count)]
    predictions = predict_classes(trained, images)
    figure, axes = plt.subplots(count, 3, figsize=(6, 2 * count), squeeze=False)
    for i in range(count):
        for j, (picture, title) in enumerate(((images[i], "image"), (colorize(truths[i], trained.palette), "truth"),
                                              (colorize(predictions[i], trained.palette), "prediction"))):
            axes[i][j].imshow(picture)
            axes[i][j].axis("off")
            if i == 0:
                axes[i][j].set_title(title, fontsize=9)
    figure.suptitle(f"best trial: {trained.trial['name']}", fontsize=9)
    return save(figure, path)


def save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


# --- the report -------------------------------------------------------------------------------

def write_report(rows: list[dict], records: list, out: Path) -> dict[str, Path]:
    """report.md, report.html (images embedded) and the PNGs in OUT; returns what was written."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    scored = [row for row in rows if row.get("val")]
    if scored:
        files["learning_curves"] = plot_learning_curves(scored, out / "learning_curves.png")
        files["per_class_iou"] = plot_class_heatmap(scored, out / "per_class_iou.png")
        files["miou_vs_time"] = plot_miou_vs_time(scored, out / "miou_vs_time.png")
    saliency_rows = [row for row in rows if "iteration" in row]
    if saliency_rows:
        files["saliency_curve"] = plot_saliency_curve(saliency_rows, out / "saliency_curve.png")
        for row in saliency_rows:
            if row.get("samples") and Path(row["samples"]).exists():
                name = f"samples_{safe(row['trial'])}_it{row['iteration']}.png"
                (out / name).write_bytes(Path(row["samples"]).read_bytes())
                files[f"samples {row['trial']} iteration {row['iteration']}"] = out / name
    best = max(scored, key=lambda row: score(row, "val", "miou") or -1, default=None)
    data_root = next((r.spec.get("data") for r in records if best and r.id == best["job"]), None)
    if best and best.get("best_checkpoint") and data_root and Path(best["best_checkpoint"]).exists():
        files["predictions"] = plot_predictions(best["best_checkpoint"], data_root, out / "predictions.png")
    markdown = render_markdown(rows, records, files, out)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(render_html(markdown, out))
    files["report.md"], files["report.html"] = out / "report.md", out / "report.html"
    with open(out / "trials.csv", "w", newline="") as stream:
        write_csv(rows, stream)
    files["trials.csv"] = out / "trials.csv"
    return files


def safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def protocols(rows: list[dict]) -> list[str]:
    seen = {tuple(sorted((row.get("protocol") or {}).items())) for row in rows if row.get("protocol")}
    return [", ".join(f"{k}: {v}" for k, v in protocol) for protocol in sorted(seen)]


def render_markdown(rows: list[dict], records: list, files: dict[str, Path], out: Path) -> str:
    title = ", ".join(f"{r.id} ({r.kind}, {r.status.value})" for r in records)
    parts = [f"# segq report: {title}", ""]
    found = protocols(rows)
    parts.append("**Evaluation protocol:** " + ("; ".join(found) if found else "unknown"))
    if len(found) > 1:
        parts.append("\n> **Warning:** these trials were evaluated under different protocols; "
                     "their scores are not comparable.")
    parts += ["", "## Comparison", "", markdown_table(*comparison_rows(rows)), ""]
    if any("iteration" in row for row in rows):
        parts += ["Each saliency trial's iteration 1 trains on full images (the plain baseline); iteration i "
                  "trains on the images reduced i-1 times. `Δ` compares with iteration 1. Trials with "
                  "relevance `random` are the controls: the same schedule with random pixels removed.", ""]
    controls = control_rows([row for row in rows if "iteration" in row])
    if controls[1]:
        parts += ["## Saliency against its random control", "", markdown_table(*controls), ""]
    parts += ["## Per-class IoU (validation)", "", markdown_table(*per_class_rows(rows)), ""]
    for key, heading in (("learning_curves", "Learning curves"), ("per_class_iou", "Per-class IoU"),
                         ("miou_vs_time", "mIoU vs training time"), ("saliency_curve", "Saliency curve"),
                         ("predictions", "Predictions of the best trial (validation)")):
        if key in files:
            parts += [f"## {heading}", "", f"![{heading}]({files[key].relative_to(out)})", ""]
    samples = [(key, path) for key, path in files.items() if key.startswith("samples ")]
    if samples:
        parts += ["## Training images per saliency iteration", ""]
        parts += [f"![{key}]({path.relative_to(out)})" for key, path in samples] + [""]
    return "\n".join(parts)


def render_html(markdown: str, out: Path) -> str:
    """A self-contained page: the Markdown's tables and headings as HTML, images inlined."""
    body = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            table = []
            while i < len(lines) and lines[i].startswith("|"):
                table.append(lines[i])
                i += 1
            body.append(html_table(table))
            continue
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.startswith("!["):
            alt, target = re.match(r"!\[(.*)\]\((.*)\)", line).groups()
            data = base64.b64encode((out / target).read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(alt)}</figcaption></figure>")
        elif line.startswith(">"):
            body.append(f"<p class=warning>{inline(line.lstrip('> '))}</p>")
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
        i += 1
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
             "font-size:12px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%}.warning{color:#a00}")
    title = html.escape(lines[0].lstrip("# ")) if lines else "segq report"
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{title}</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")


def inline(text: str) -> str:
    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


def html_table(lines: list[str]) -> str:
    rows = [[cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            for line in lines if not set(line) <= set("|-")]
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
