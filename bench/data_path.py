"""Data path throughput (images/s) at 256x512: the seed's loop, a PNG DataLoader, and the segq reader.

Renders `--frames` synthetic scenes (jobs.preparation.sources.synthetic.render_sample) at 256x512, stores them
as full-size 1024x2048 PNGs (Cityscapes' frame size: image upscaled bilinear, mask nearest; PNG level 1,
which decodes like any level and keeps generation short) with
8-bit masks in the `folder` layout, and prepares those to 256x512 shards with segq's own prepare().
Then, in this one process, on the same frames:

  (a) the seed notebook's loop: cv2.imread + cv2.resize + /255 per sample, image and mask;
  (b) a torch DataLoader over the PNGs, 2 workers, the same per-sample work, batches of `--batch`;
  (c) the segq reader (workers.data.SplitDataset + make_loader), no augmentation, 0 loader workers;
  (d) the segq reader with `basic` augmentation, 0 and 2 loader workers (one live loader over `EpochRows`),
      and with 2 workers and torch's default collation instead of segq's BatchRing (d2t);

The segq reader yields uint8 batches: their normalisation runs on the training device
(workers.data.to_model_input), so it is not part of the host's data path measured here.
The cases take turns, in blocks of about `--block-seconds` of timed passes, until each has had
`--seconds`: the speed of this machine's cores drifts, and taking turns lets every case see the same
drift. Each case's first pass is an untimed warm-up; a block of (d) with workers starts with an
untimed pass too (it takes what the workers prefetched while they waited), and after every block
the loader workers finish their prefetch before the next case starts, so no case runs beside
another's workers. (d) draws a new epoch's augmentation each pass. Anonymous memory (RssAnon, of
this process and the loader workers of (d) with 2 workers) is read after its first and fourth timed pass.

    .venv/bin/python bench/data_path.py [--frames 64] [--batch 8] [--seconds 6] [--block-seconds 1]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from jobs.preparation.prepare import prepare
from jobs.preparation.sources.folder import folder_dataset, load_folder
from jobs.preparation.sources.synthetic import CLASS_NAMES, render_sample
from workers.augment import Normalize, limit_augmentation_threads, train_transform
from workers.data import PREFETCH_BATCHES, EpochRows, SplitDataset, loader_context, make_loader
from workers.shards import ShardedSplit

from results_file import Run, add_arguments, publish, section, table, verdict  # noqa: E402 (bench/ is on the path)

HEIGHT, WIDTH = 256, 512
FULL_HEIGHT, FULL_WIDTH = 1024, 2048
TARGETS = {"(c)/(a)": 30.0, "(c)/(b)": 5.0, "(d2)/(d0)": 1.6}


def write_frames(root: Path, count: int) -> list[tuple[str, str]]:
    """The `folder` layout, full-size: images/NNN.png, masks/NNN.png, classes.txt."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    pairs = []
    for index in range(count):
        image, mask = render_sample(0, index, HEIGHT, WIDTH)
        paths = (str(root / "images" / f"{index:04d}.png"), str(root / "masks" / f"{index:04d}.png"))
        Image.fromarray(image).resize((FULL_WIDTH, FULL_HEIGHT), Image.BILINEAR).save(paths[0], compress_level=1)
        Image.fromarray(mask).resize((FULL_WIDTH, FULL_HEIGHT), Image.NEAREST).save(paths[1], compress_level=1)
        pairs.append(paths)
    return pairs


def prepare_shards(frames: Path, out: Path) -> ShardedSplit:
    dataset = folder_dataset(frames, split=(1.0, 0.0, 0.0))
    prepare(dataset, load_folder, out, (HEIGHT, WIDTH), 32, "none", False, lambda tasks: [task() for task in tasks])
    return ShardedSplit(out, "train")


def seed_sample(image_path: str, mask_path: str) -> tuple[np.ndarray, np.ndarray]:
    """One sample as seed 001 reads it (there at 256x256; here at the prepared 256x512)."""
    image = cv2.resize(cv2.imread(image_path), (WIDTH, HEIGHT)) / 255.0
    mask = cv2.resize(cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE), (WIDTH, HEIGHT), interpolation=cv2.INTER_NEAREST)
    return image, mask


class PngDataset(Dataset):
    """The seed's per-sample work behind a DataLoader, as a first PyTorch port would have it."""

    def __init__(self, pairs: list[tuple[str, str]]):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = seed_sample(*self.pairs[index])
        return torch.from_numpy(image.astype(np.float32).transpose(2, 0, 1)), torch.from_numpy(mask.astype(np.int64))


def count_batches(batches: Iterable) -> int:
    return sum(len(images) for images, _ in batches)


def seed_loop(pairs: list[tuple[str, str]]) -> Callable[[int], int]:
    return lambda _: sum(1 for pair in pairs if seed_sample(*pair) is not None)


def png_loader(pairs: list[tuple[str, str]], batch: int) -> Callable[[int], int]:
    loader = DataLoader(PngDataset(pairs), batch_size=batch, num_workers=2, persistent_workers=True)
    return lambda _: count_batches(loader)


def segq_reader(dataset: SplitDataset, batch: int, workers: int) -> Callable[[int], int]:
    """Each pass is the next epoch, as the train loop moves its iteration's loader along."""
    rows = EpochRows(lambda epoch: np.random.default_rng(epoch).permutation(len(dataset)), batch)
    loader = make_loader(dataset, rows, batch, training=True, workers=workers)
    return lambda epoch: count_batches(loader.epoch(epoch))


def torch_collated_reader(dataset: SplitDataset, batch: int, workers: int) -> Callable[[int], int]:
    """(d) as segq read it before workers.data.BatchRing: the same rows, workers and prefetch, and
    torch's default collation, which gives each batch a fresh shared-memory file."""
    rows = EpochRows(lambda epoch: np.random.default_rng(epoch).permutation(len(dataset)), batch)
    # The dataset's rows are read-only views of the shards; torch's collation copies them into the
    # batch all the same, but warns on the way (from each worker, which inherits this filter).
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    loader = DataLoader(dataset, batch_sampler=rows, num_workers=workers, prefetch_factor=PREFETCH_BATCHES,
                        multiprocessing_context=loader_context(), persistent_workers=True)
    iterator = iter(loader)
    return lambda _: sum(len(next(iterator)[0]) for _ in range(rows.batches_per_epoch))


def child_pids() -> set[int]:
    """This process's children: the loader workers alive now."""
    return {int(pid) for task in Path("/proc/self/task").iterdir()
            for pid in (task / "children").read_text().split()}


def cpu_seconds(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def wait_for_idle_workers() -> None:
    """Until the loader workers have stopped working (their prefetch is full), so that the next
    block runs alone."""
    before = cpu_seconds(child_pids())
    while True:
        time.sleep(0.1)
        now = cpu_seconds(child_pids())
        if now == before:
            return
        before = now


def rss_anon_kib(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                total += int(line.split()[1])
    return total


class Case:
    """One way of reading the frames: `run_pass(n)` reads them once (as epoch n) and says how many.
    A case with loader workers that prefetch across passes (`prefetches`) starts each block with an
    untimed pass, which takes what they prefetched while the other cases ran."""

    def __init__(self, run_pass: Callable[[int], int], prefetches: bool = False):
        self.run_pass, self.prefetches = run_pass, prefetches
        self.passes, self.timed_passes, self.images, self.seconds = 0, 0, 0, 0.0

    def next_pass(self) -> int:
        self.passes += 1
        return self.run_pass(self.passes)

    def block(self, seconds: float, after_pass: Callable[[int], None] | None = None) -> None:
        """Timed passes until `seconds` have gone by, then a wait until its loader workers are idle."""
        if self.prefetches or self.passes == 0:
            self.next_pass()
        start = time.perf_counter()
        while True:
            images = self.next_pass()
            elapsed = time.perf_counter() - start
            self.images, self.timed_passes = self.images + images, self.timed_passes + 1
            if after_pass:
                after_pass(self.timed_passes)
            if elapsed >= seconds:
                break
        self.seconds += elapsed
        wait_for_idle_workers()

    @property
    def rate(self) -> float:
        return self.images / self.seconds


def interleaved_rates(cases: dict[str, Case], seconds: float, block_seconds: float,
                      after_pass: dict[str, Callable[[int], None]]) -> dict[str, float]:
    """Blocks of about `block_seconds` of each case in turn, until every case has `seconds` of timed
    passes. This machine's speed drifts (its cores are shared with other virtual machines) by up to
    a factor of 1.5 within a minute; cases that take turns see the same drift, so their ratios hold."""
    while min(case.seconds for case in cases.values()) < seconds:
        for key, case in cases.items():
            if case.seconds < seconds:
                case.block(block_seconds, after_pass.get(key))
    return {key: case.rate for key, case in cases.items()}


def measure(pairs: list[tuple[str, str]], split: ShardedSplit, batch: int, seconds: float,
            block_seconds: float) -> tuple[dict, dict]:
    normalize = Normalize(split.manifest["mean"], split.manifest["std"])
    plain = SplitDataset(split, None, normalize)
    basic = SplitDataset(split, train_transform("basic", HEIGHT, WIDTH, split.manifest["ignore_index"]), normalize)
    cases = {"(a)": Case(seed_loop(pairs)), "(b)": Case(png_loader(pairs, batch)),
             "(c)": Case(segq_reader(plain, batch, 0)), "(d0)": Case(segq_reader(basic, batch, 0))}
    torch_collated = Case(torch_collated_reader(basic, batch, 2), prefetches=True)  # forks its workers now
    others = child_pids()
    cases["(d2)"] = Case(segq_reader(basic, batch, 2), prefetches=True)
    cases["(d2t)"] = torch_collated
    memory = {}

    def read_memory(done: int) -> None:
        # Anonymous memory of this process and (d2)'s loader workers, after (d2)'s first and fourth pass.
        if done in (1, 4) and done not in memory:
            memory[done] = rss_anon_kib({os.getpid()} | (child_pids() - others))

    return interleaved_rates(cases, seconds, block_seconds, {"(d2)": read_memory}), memory


CASES = {"(a)": "seed's loop", "(b)": "DataLoader over PNGs, 2 workers", "(c)": "segq reader, no augmentation",
         "(d0)": "segq reader, `basic`, 0 loader workers", "(d2)": "segq reader, `basic`, 2 loader workers",
         "(d2t)": "(d2) with torch's default collation instead of segq's BatchRing"}
SECTION_TITLE = "# Data path: segq's shard reader against per-file loading"


def ratios_of(rates: dict) -> dict:
    return {"(c)/(a)": rates["(c)"] / rates["(a)"], "(c)/(b)": rates["(c)"] / rates["(b)"],
            "(d2)/(d0)": rates["(d2)"] / rates["(d0)"], "(d2)/(d2t)": rates["(d2)"] / rates["(d2t)"]}


def target_verdict(key: str, value: float) -> str:
    if key not in TARGETS:
        return "the gain of BatchRing, no target"
    return f">= {TARGETS[key]}x: {verdict(value >= TARGETS[key])}"


def results_section(run: Run, rates: dict, memory: dict) -> str:
    """This benchmark's section of bench/RESULTS.md, from one run's figures."""
    growth = memory[4] / memory[1]
    body = table(["case", "images/s"], [[f"{key} {name}", f"{rates[key]:.1f}"] for key, name in CASES.items()])
    body += [""] + table(["ratio", "measured", "target"], [
        [key, f"{value:.2f}x", target_verdict(key, value)] for key, value in ratios_of(rates).items()] + [
        ["RssAnon after 4 passes / after 1", f"{memory[4] / 1024:.1f} / {memory[1] / 1024:.1f} MiB = {growth:.3f}",
         f"within 10%: {verdict(abs(growth - 1) <= 0.10)}"]])
    return section(SECTION_TITLE, DESCRIPTION, run, body, READING)


DESCRIPTION = """`bench/data_path.py` renders `--frames` (64) synthetic scenes, stores them as 1024x2048 PNGs (as a dataset on
disk would be) and prepares them to 256x512 shards with segq's `prepare()` (the `folder` source).
Then, on the same 256x512 frames, in batches of 8, it measures: (a) the seed notebook's loop
(`cv2.imread` + `cv2.resize` + /255 per sample), (b) a torch DataLoader over the PNGs with 2 workers,
(c) the segq reader without augmentation (uint8 batches; their normalisation runs on the training
device and is not in this figure), (d) the segq reader with the `basic` albumentations preset with
0 and with 2 loader workers (one pass = one epoch of the 64 frames, through the train loop's
`EpochRows`), and (d2t) as (d2) but with torch's default collation instead of segq's BatchRing,
and the anonymous memory (RssAnon of the process and its loader workers) after 1 and
after 4 passes. The cases take turns in blocks of about a second until each has had 6 timed
seconds, so that a drift in the machine's speed (its cores are shared with other virtual machines)
falls on all of them alike. `make bench` rewrites this section."""


READING = """Reading: reading rows from the memory-mapped shards is two orders of magnitude faster than decoding
and resizing files, and memory stays flat across passes. Each process here has one OpenCV thread and one
torch thread, as in a Ray train worker with one CPU (workers.trial_run sizes OpenCV's pool to the
worker's CPUs, and to one with loader workers, which then each augment on one core). Masks travel as
uint8 (widened to int64 on the device), so a batch of 8 carries 4 MiB instead of 11 MiB, and loader
workers write their batches into a ring of shared-memory slots that outlive the batch
(workers.data.BatchRing): with torch's default collation each batch got a fresh shared-memory file,
whose 1024 pages the worker then faulted in one by one: (d2) against (d2t) is what that cost.
The loader reads epoch after epoch from one live iterator (workers.data.IterationLoader),
so its workers keep prefetching across the end of a pass instead of waiting for the next one to
start. The other processes on the machine (see the load average) share the same two cores."""


def print_results(rates: dict, memory: dict) -> None:
    for key, name in CASES.items():
        print(f"{key:5} {rates[key]:9.1f} images/s  {name}")
    for key, value in ratios_of(rates).items():
        print(f"{key:10} {value:7.2f}x  ({target_verdict(key, value).replace('**not met**', 'NOT met')})")
    growth = memory[4] / memory[1]
    print(f"RssAnon (this process + loader workers, during (d2)): after 1 pass {memory[1] / 1024:.1f} MiB, "
          f"after 4 {memory[4] / 1024:.1f} MiB, ratio {growth:.3f} (target within 10%: "
          f"{'met' if abs(growth - 1) <= 0.10 else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per case (d2: at least 4 passes)")
    parser.add_argument("--block-seconds", type=float, default=1.0,
                        help="the cases take turns, about this long each")
    add_arguments(parser)
    args = parser.parse_args()
    # As in a Ray train worker with one CPU (workers.trial_run sizes OpenCV's pool to torch's threads);
    # the loaders' parallelism is the variable.
    torch.set_num_threads(1)
    limit_augmentation_threads(torch.get_num_threads())
    run = Run({"OpenCV": cv2.__version__})
    print(f"machine: {run.describe()}")
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        pairs = write_frames(Path(scratch) / "frames", args.frames)
        split = prepare_shards(Path(scratch) / "frames", Path(scratch) / "shards")
        print(f"{args.frames} frames {HEIGHT}x{WIDTH}, stored as {FULL_HEIGHT}x{FULL_WIDTH} PNGs and prepared to "
              f"{HEIGHT}x{WIDTH} shards in {time.perf_counter() - start:.1f}s; batches of {args.batch}")
        rates, memory = measure(pairs, split, args.batch, args.seconds, args.block_seconds)
    print_results(rates, memory)
    run.finish()
    publish(args, SECTION_TITLE, results_section(run, rates, memory))


if __name__ == "__main__":
    main()
