"""bench/RESULTS.md: each benchmark rewrites its own section (from its title to the next one) with
the figures of the run it just made, the exact command, the machine and the date."""
from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

from workers.files import write_atomically

RESULTS = Path(__file__).with_name("RESULTS.md")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="rewrite this benchmark's section there (default bench/RESULTS.md)")
    parser.add_argument("--no-results", action="store_true", help="print the figures only")


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")


class Run:
    """One benchmark run: the machine, the versions that matter, the date, and the load average at
    its start and (after `finish`) at its end: the other processes share the same cores."""

    def __init__(self, versions: dict[str, str] | None = None):
        import ray
        import torch

        self.cpus, self.model = os.cpu_count(), cpu_model()
        self.versions = {"Python": platform.python_version(), "torch": torch.__version__, "Ray": ray.__version__,
                         **(versions or {})}
        self.date = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M}"
        self.load_before, self.load_after = load_average(), None

    def finish(self) -> None:
        self.load_after = load_average()
        print(f"load average after: {self.load_after}")

    def describe(self) -> str:
        versions = ", ".join(f"{name} {version}" for name, version in self.versions.items())
        return f"{self.cpus} CPUs, {self.model}; {versions}; {self.date} UTC; load average before: {self.load_before}"

    def machine_line(self) -> str:
        versions = ", ".join(f"{name} {version}" for name, version in self.versions.items())
        return (f"Machine: `nproc` = {self.cpus}, CPU `{self.model}`; {versions}. Run on {self.date} UTC, "
                f"load average before {self.load_before}, after {self.load_after}.")


def command() -> str:
    """The command line of this run, as typed from the repository root."""
    return " ".join([".venv/bin/python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def verdict(met: bool) -> str:
    return "met" if met else "**not met**"


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def section(title: str, description: str, run: Run, body: list[str], reading: str) -> str:
    """A benchmark's section: what it measures, the command, the machine, the figures, the reading."""
    return "\n".join([title, "", description, "", "Command (from the repository root):", "", "```", command(), "```",
                      "", run.machine_line(), "", *body, "", reading, ""])


def write_section(results: Path, title: str, text: str) -> None:
    """Replace the section that starts with `title` in `results` (up to the next title), or add it."""
    old = results.read_text() if results.exists() else ""
    start = old.find(title)
    if start < 0:
        new = old.rstrip("\n") + ("\n\n" if old else "") + text
    else:
        following = old.find("\n# ", start + len(title))
        rest = old[following + 1:] if following >= 0 else ""
        new = old[:start] + text + ("\n" + rest if rest else "")
    write_atomically(results, new)  # never a half-written RESULTS.md


def publish(args: argparse.Namespace, title: str, text: str) -> None:
    if not args.no_results:
        write_section(args.results, title, text)
        print(f"wrote its section of {args.results}")
