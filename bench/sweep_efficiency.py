"""What ASHA saves: the same grid, run FIFO to the end and under ASHA, with the same seeds.

Starts an embedded default in a scratch SEGQ_HOME, prepares the demo's synthetic data (320 images at
64x64), and submits through the CLI one grid twice, one trial at a time (so that ASHA's decisions
do not depend on timing): 3 architectures (a small U-Net, FCN-8s on a half-width ResNet-18,
DeepLabV3+ on a half-width MobileNetV2) x 3 learning rates over two decades, `--epochs` each.

    trial-epochs ratio = ASHA's trial-epochs / FIFO's       (target <= 0.40)
    best val mIoU gap  = FIFO's best - ASHA's best           (target <= 0.02)

    .venv/bin/python bench/sweep_efficiency.py [--epochs 9] [--no-results]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from results_file import Run, add_arguments, publish, section, table, verdict  # noqa: E402 (bench/ is on the path)
from trial_overhead import demo_cluster, segq  # noqa: E402

GRID = {
    "archs": ["unet", "fcn", "deeplabv3plus"],
    "models": {"unet": {"base_width": 16, "depth": 3},
               "fcn": {"backbone": "resnet18", "width": 0.5, "variant": "8s"},
               "deeplabv3plus": {"backbone": "mobilenet_v2", "width": 0.5, "output_stride": 16}},
}
LRS = [1e-4, 1e-3, 1e-2]


def run(env: dict, data: Path, epochs: int, scheduler: str) -> tuple[list[dict], float]:
    spec = Path(env["SEGQ_HOME"]) / f"{scheduler}.yaml"
    spec.write_text(json.dumps({
        "data": str(data), **GRID, "scheduler": {"kind": scheduler, "grace_period": 1, "reduction_factor": 3},
        "train": {"epochs": epochs, "batch_size": 8, "optimizer": "adamw", "augment": "basic",
                  "lr": {"grid": LRS}},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1}}))
    started = time.perf_counter()
    job = segq(env, "submit", "sweep", str(spec), "--wait").strip().splitlines()[-1]
    wall = time.perf_counter() - started
    return json.loads(segq(env, "summary", job, "--format", "json")), wall


def best_miou(rows: list[dict]) -> float:
    return max(row["val"]["miou"] for row in rows if row.get("val") and row["val"]["miou"] is not None)


def best_trial(rows: list[dict]) -> str:
    best = best_miou(rows)
    return next(row["trial"] for row in sorted(rows, key=lambda r: r["trial"])
                if row.get("val") and row["val"]["miou"] == best)


SECTION_TITLE = "# Sweep efficiency: ASHA against FIFO on the same grid"

DESCRIPTION = """`bench/sweep_efficiency.py` starts an embedded default in a scratch SEGQ_HOME, prepares the demo's
synthetic data (320 images at 64x64) and submits one grid twice through the CLI, one trial at a
time (so that ASHA's decisions do not depend on timing): U-Net (base_width 16, depth 3), FCN-8s on a
half-width ResNet-18 and DeepLabV3+ on a half-width MobileNetV2, x lr 1e-4, 1e-3, 1e-2, 9 epochs
each, batch 8, AdamW, `basic` augmentation, one worker of one CPU. Once FIFO (every trial to its
end), once under ASHA (grace period 1, reduction factor 3, max 9 epochs). It takes about 14 minutes;
`make bench` rewrites this section."""

READING = """Reading: ASHA stops trials at its rungs (epochs 1 and 3 here) once their validation mIoU falls below
the top third of the trials that reached the rung. The wall time falls less than the trial-epochs
because every trial, stopped early or not, still pays the fixed cost of its worker group's start
(see the trial overhead above)."""


def results_section(run: Run, fifo: list[dict], asha: list[dict], walls: dict[str, float], ratio: float,
                    gap: float) -> str:
    budgets = {"FIFO": fifo[0]["job_budget"], "ASHA": asha[0]["job_budget"]}
    body = table(["figure", "FIFO", "ASHA", "target"], [
        ["trial-epochs", budgets["FIFO"]["trial_epochs"], budgets["ASHA"]["trial_epochs"], ""],
        ["trials stopped early", budgets["FIFO"]["stopped_trials"],
         f"{budgets['ASHA']['stopped_trials']} of {len(asha)}", ""],
        ["best val mIoU", f"{best_miou(fifo):.4f}", f"{best_miou(asha):.4f}", ""],
        ["best trial", best_trial(fifo), best_trial(asha), ""],
        ["wall time", f"{walls['fifo']:.0f} s", f"{walls['asha']:.0f} s", ""],
        ["trial-epochs ratio ASHA/FIFO", "", f"{ratio:.2f}", f"<= 0.40: {verdict(ratio <= 0.40)}"],
        ["best val mIoU gap FIFO-ASHA", "", f"{gap:.4f}", f"<= 0.02: {verdict(gap <= 0.02)}"],
        ["wall time ratio ASHA/FIFO", "", f"{walls['asha'] / walls['fifo']:.2f}", ""]])
    body += ["", "The ASHA job's trials:", ""] + table(["trial", "status", "epochs", "val mIoU"], [
        [row["trial"], row["status"], row["epochs"], f"{row['val']['miou']:.4f}" if row.get("val") and row["val"]["miou"] is not None else ""]
        for row in sorted(asha, key=lambda r: r["trial"])])
    return section(SECTION_TITLE, DESCRIPTION, run, body, READING)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=9)
    add_arguments(parser)
    args = parser.parse_args()
    run_facts = Run()
    print(f"machine: {run_facts.describe()}")
    with tempfile.TemporaryDirectory(prefix="segq-bench-") as scratch:
        with demo_cluster(Path(scratch)) as (env, data):
            fifo, fifo_wall = run(env, data, args.epochs, "fifo")
            asha, asha_wall = run(env, data, args.epochs, "asha")
    for name, rows, wall in (("fifo", fifo, fifo_wall), ("asha", asha, asha_wall)):
        budget = rows[0]["job_budget"]
        print(f"{name}: {budget['trial_epochs']} trial-epochs, {budget['stopped_trials']} trials stopped, "
              f"best val mIoU {best_miou(rows):.4f}, {wall:.0f} s wall")
        for row in sorted(rows, key=lambda r: r["trial"]):
            print(f"  {row['trial']:32} {row['status']:8} {row['epochs']:2} epochs  val mIoU "
                  f"{row['val']['miou'] if row.get('val') else float('nan'):.4f}")
    ratio = asha[0]["job_budget"]["trial_epochs"] / fifo[0]["job_budget"]["trial_epochs"]
    gap = best_miou(fifo) - best_miou(asha)
    print(f"trial-epochs ratio asha/fifo {ratio:.2f}  (target <= 0.40: {'met' if ratio <= 0.40 else 'NOT met'})")
    print(f"best val mIoU gap fifo-asha  {gap:.4f}  (target <= 0.02: {'met' if gap <= 0.02 else 'NOT met'})")
    print(f"wall time ratio asha/fifo    {asha_wall / fifo_wall:.2f}")
    run_facts.finish()
    publish(args, SECTION_TITLE, results_section(run_facts, fifo, asha, {"fifo": fifo_wall, "asha": asha_wall},
                                                 ratio, gap))


if __name__ == "__main__":
    main()
