"""What ASHA saves: the same grid, run FIFO to the end and under ASHA, with the same seeds.

Starts an embedded default in a scratch SEGQ_HOME, prepares the demo's synthetic data (320 images at
64x64), and submits through the CLI one grid twice, one trial at a time (so that ASHA's decisions
do not depend on timing): 3 architectures (a small U-Net, FCN-8s on a half-width ResNet-18,
DeepLabV3+ on a half-width MobileNetV2) x 3 learning rates over two decades, `--epochs` each.

    trial-epochs ratio = ASHA's trial-epochs / FIFO's       (target <= 0.40)
    best val mIoU gap  = FIFO's best - ASHA's best           (target <= 0.02)

    .venv/bin/python bench/sweep_efficiency.py [--epochs 9]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from trial_overhead import demo_cluster, print_machine, segq  # noqa: E402 (bench/ is on the path)

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=9)
    args = parser.parse_args()
    print_machine()
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


if __name__ == "__main__":
    main()
