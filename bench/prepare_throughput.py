"""Preparation throughput (images/s) of `segq data prepare cityscapes`, 1 vs 2 Ray workers.

Generates a Cityscapes-sized tree (official layout, 1024x2048 PNG images and labelIds masks), then
prepares it to 256x512 with the project's prepare() + run_ray_tasks(), once per worker count, each in
its own subprocess with a private local Ray (`ray.init(num_cpus=N)`), so the worker count is the
only difference. Each subprocess does one untimed warm-up preparation (Ray starts its worker
processes and imports the loaders), then times `--repeats` preparations. Worker counts alternate
over `--rounds` subprocesses and the best run of each is reported (the machine may be shared, so
the load average is printed too).

    .venv/bin/python bench/prepare_throughput.py [--images 24] [--size 256x512] [--workers 1,2] [--no-results]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from results_file import Run, add_arguments, publish, section, table  # noqa: E402 (bench/ is on the path)

REPO = Path(__file__).resolve().parents[1]
SOURCE_HEIGHT, SOURCE_WIDTH = 1024, 2048
CITIES = ("aachen", "bochum", "bremen")


def write_tree(root: Path, count: int, seed: int = 0) -> None:
    """Scenes of flat label regions with textured colours, so PNGs compress like photos, not noise."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        city = CITIES[index % len(CITIES)]
        base = f"{city}_{index:06d}_000019"
        labels = np.kron(rng.integers(0, 34, (16, 32), dtype=np.uint8), np.ones((64, 64), np.uint8))
        colours = rng.integers(0, 256, (34, 3), dtype=np.uint8)
        grain = rng.integers(-12, 13, (SOURCE_HEIGHT, SOURCE_WIDTH, 3), dtype=np.int16)
        image = np.clip(colours[labels].astype(np.int16) + grain, 0, 255).astype(np.uint8)
        for folder, name, array in (("leftImg8bit", f"{base}_leftImg8bit.png", image),
                                    ("gtFine", f"{base}_gtFine_labelIds.png", labels)):
            path = root / folder / "train" / city / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path, compress_level=6)


def time_preparation(root: Path, workers: int, size: str, shard_size: int, repeats: int) -> dict:
    """Runs inside the per-worker-count subprocess."""
    import ray

    from jobs.preparation.prepare import parse_size, prepare
    from jobs.preparation.task_runner import run_ray_tasks
    from jobs.preparation.sources.cityscapes import cityscapes_dataset, load_cityscapes

    ray.init(address="local", num_cpus=workers, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    dataset = cityscapes_dataset(root)
    images = sum(len(samples) for samples in dataset.splits.values())
    times = []
    with tempfile.TemporaryDirectory() as scratch:
        for attempt in range(repeats + 1):
            start = time.perf_counter()
            prepare(dataset, load_cityscapes, Path(scratch) / f"run{attempt}", parse_size(size), shard_size,
                    "none", False, run_ray_tasks)
            times.append(time.perf_counter() - start)
    ray.shutdown()
    best = min(times[1:])
    return {"workers": workers, "images": images, "tasks": -(-images // shard_size),
            "times_s": [round(t, 3) for t in times[1:]], "images_per_s": round(images / best, 2)}


def run_child(root: Path, workers: int, size: str, shard_size: int, repeats: int) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RAY_", "SEGQ_"))}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    command = [sys.executable, __file__, "--child", str(root), "--workers", str(workers), "--size", size,
               "--shard-size", str(shard_size), "--repeats", str(repeats)]
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"benchmark child with {workers} worker(s) failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


SECTION_TITLE = "# Preparation throughput: 1 vs 2 Ray workers"

DESCRIPTION = """`bench/prepare_throughput.py` generates a Cityscapes-sized tree in the official layout (24 images,
1024x2048 RGB PNG, about 4 MiB each, plus `gtFine_labelIds` masks), then prepares it to 256x512
(train ids, 2 images per shard = 12 Ray tasks) with the project's `prepare()` + `run_ray_tasks()`,
once with a private local `ray.init(num_cpus=1)` and once with `ray.init(num_cpus=2)`, each in its own
subprocess. Each subprocess does one untimed warm-up preparation, then two timed ones; the worker
counts alternate over 3 rounds and the best run of each count is reported. It takes about
2 minutes; `make bench` rewrites this section."""

READING = """Reading: one worker decodes, checks, resizes and writes each 1024x2048 PNG frame with its mask; a
second worker uses the second core. Ray's own processes (raylet, GCS) and the driver also need some
CPU, so 2.0x is out of reach on 2 cores, and whatever else runs on the machine (see the load
average) takes from the two-worker figure first."""


def results_section(run: Run, runs: list[dict], best: dict[int, dict], counts: list[int]) -> str:
    rows = []
    for n, result in best.items():
        times = [t for r in runs if r["workers"] == n for t in r["times_s"]]
        rows.append([n, f"{result['images_per_s']:.2f}", f"{min(times):.2f}-{max(times):.2f} s"])
    body = table(["Ray workers", "images/s (best run)", "timed preparations of the images"], rows)
    if len(counts) > 1:
        ratio = best[counts[-1]]["images_per_s"] / best[counts[0]]["images_per_s"]
        body += ["", f"Ratio {counts[-1]} workers / {counts[0]}: {ratio:.2f}x."]
    return section(SECTION_TITLE, DESCRIPTION, run, body, READING)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", default="256x512")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--shard-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed preparations per subprocess")
    parser.add_argument("--rounds", type=int, default=3,
                        help="subprocesses per worker count, interleaved, so a burst of load elsewhere hits both")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    add_arguments(parser)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(time_preparation(args.child, int(args.workers), args.size, args.shard_size, args.repeats)))
        return
    counts = [int(n) for n in args.workers.split(",")]
    run = Run({"Pillow": Image.__version__, "numpy": np.__version__})
    print(f"machine: {run.describe()}")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "cityscapes"
        start = time.perf_counter()
        write_tree(root, args.images)
        megabytes = sum(p.stat().st_size for p in root.rglob("*_leftImg8bit.png")) / args.images / 2**20
        print(f"generated {args.images} images {SOURCE_HEIGHT}x{SOURCE_WIDTH} PNG (mean {megabytes:.1f} MiB) "
              f"in {time.perf_counter() - start:.1f}s; preparing to {args.size}, shard size {args.shard_size}")
        runs = [run_child(root, n, args.size, args.shard_size, args.repeats)
                for _ in range(args.rounds) for n in counts]
    best = {n: max((r for r in runs if r["workers"] == n), key=lambda r: r["images_per_s"]) for n in counts}
    for n, result in best.items():
        all_times = [t for r in runs if r["workers"] == n for t in r["times_s"]]
        print(f"{n} worker(s): {result['images_per_s']:6.2f} images/s  (best of {all_times} s for "
              f"{result['images']} images in {result['tasks']} tasks)")
    if len(counts) > 1:
        print(f"ratio {counts[-1]} vs {counts[0]} worker(s): "
              f"{best[counts[-1]]['images_per_s'] / best[counts[0]]['images_per_s']:.2f}x")
    run.finish()
    publish(args, SECTION_TITLE, results_section(run, runs, best, counts))


if __name__ == "__main__":
    main()
