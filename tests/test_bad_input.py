"""Bad input everywhere: every kind below, across every command, gets a non-zero exit, exactly one
line that names the culprit (file, field, job or address) and the fix, no traceback, and no
change to Redis, to the shards or to any other file.

The cases run in-process through the Typer app (the same root group as the installed `segq`), with
a few through the installed command too; only `jobs resume` needs Ray (it asks Ray first)."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cluster.cli import app
from jobs.records import JobRecord, JobStatus
from seg_models.registry import build_model
from tests.conftest import prepare_synthetic_in_process, run_segq
from tests.redis_servers import OwnedRedis
from workers.checkpointing import checkpoint_state, save_checkpoint
from workers.redis_client import open_redis
from workers.shards import read_manifest
from workers.trial_spec import TrainParams, TrialContext, TrialSpec

FINISHED_JOB, CANCELLED_JOB = "sweep-20260101-000000-f1f1f1", "sweep-20260101-000000-cccccc"
TINY_UNET = {"base_width": 4, "depth": 2}


@dataclass(frozen=True)
class Case:
    kind: str
    args: tuple[str, ...]  # {placeholders} are filled from the world's paths and URLs
    names: tuple[str, ...]  # what the one line must name: the culprit, and the fix where it is a word

    def __str__(self) -> str:
        return self.kind


SPEC = "data: {data}\narchs: [unet]\n"
SPEC_FILES = {
    "unknown_field.yaml": SPEC + "train: {{learning_rate: 0.1}}\n",
    "wrong_type.yaml": SPEC + "train: {{epochs: many}}\n",
    "out_of_range.yaml": SPEC + "resources: {{workers_per_trial: 0}}\n",
    "empty_grid.yaml": SPEC + "train: {{lr: {{grid: []}}}}\n",
    "empty_choice.yaml": SPEC + "train: {{batch_size: {{choice: []}}}}\n",
    "unknown_backbone.yaml": "data: {data}\narchs: [fcn]\nmodels: {{fcn: {{backbone: resnet999}}}}\n",
    "unknown_option.yaml": SPEC + "models: {{unet: {{colour: red}}}}\n",
    "syntax_error.yaml": "data: {data}\narchs: [unet\n",
    "python_tag.yaml": "data: !!python/object/apply:os.system ['touch {world}/pwned']\narchs: [unet]\n",
}
DRY = ("--dry-run",)
SWEEP = ("submit", "sweep")
REDIS = ("--redis-url", "{redis}")
OFFLINE_RAY = ("--address", "http://127.0.0.1:9")

CASES = [
    # specs
    Case("spec unknown field", (*SWEEP, "{specs}/unknown_field.yaml", *DRY), ("learning_rate", "unknown field")),
    Case("spec wrong type", (*SWEEP, "{specs}/wrong_type.yaml", *DRY), ("train.epochs", "many")),
    Case("spec value out of range", (*SWEEP, "{specs}/out_of_range.yaml", *DRY), ("workers_per_trial",)),
    Case("flag value out of range", (*SWEEP, "--data", "{data}", "--arch", "unet", "--lr", "-0.1", *DRY),
         ("train.lr", "greater than 0")),
    Case("not an MLflow tracking URI", (*SWEEP, "--data", "{data}", "--arch", "unet", "--mlflow", "localhost:5000",
                                         *DRY), ("tracking.mlflow", "localhost:5000", "http(s)://")),
    Case("worker range upside down", (*SWEEP, "--data", "{data}", "--arch", "unet", "--workers-per-trial", "4-1",
                                      *DRY), ("resources.workers_per_trial", "max (1) is below min (4)")),
    Case("spec empty grid", (*SWEEP, "{specs}/empty_grid.yaml", *DRY), ("lr",)),
    Case("spec empty choice", (*SWEEP, "{specs}/empty_choice.yaml", *DRY), ("batch_size",)),
    Case("unknown architecture", (*SWEEP, "--data", "{data}", "--arch", "nonet", *DRY), ("nonet", "unet")),
    Case("load_from missing", (*SWEEP, "--data", "{data}", "--arch", "unet", "--load-from", "{world}/none.pt", *DRY),
         ("load_from", "none.pt")),
    Case("load_from of another architecture",
         (*SWEEP, "--data", "{data}", "--arch", "fcn", "--load-from", "{world}/good.pt", *DRY), ("load_from", "fcn")),
    Case("load_from of other classes",
         (*SWEEP, "--data", "{data}", "--arch", "unet", "--load-from", "{world}/three_classes.pt", *DRY),
         ("load_from", "classes")),
    Case("load_from a pickle that would run code",
         (*SWEEP, "--data", "{data}", "--arch", "unet", "--load-from", "{world}/crafted.pt", *DRY),
         ("load_from", "crafted.pt")),
    Case("unknown backbone", (*SWEEP, "{specs}/unknown_backbone.yaml", *DRY), ("models.fcn.backbone", "resnet18")),
    Case("unknown model option", (*SWEEP, "{specs}/unknown_option.yaml", *DRY), ("colour",)),
    Case("YAML syntax error", (*SWEEP, "{specs}/syntax_error.yaml", *DRY), ("syntax_error.yaml",)),
    Case("YAML that would run code", (*SWEEP, "{specs}/python_tag.yaml", *DRY), ("python_tag.yaml",)),
    Case("spec file missing", (*SWEEP, "{specs}/none.yaml", *DRY), ("none.yaml",)),
    Case("unknown search", (*SWEEP, "--data", "{data}", "--arch", "unet", "--search", "sideways", *DRY),
         ("sideways",)),
    Case("saliency keep percent out of range",
         ("submit", "saliency", "--data", "{data}", "--arch", "unet", "--keep-percent", "150", *DRY),
         ("keep_percent",)),
    # data
    Case("data folder missing", (*SWEEP, "--data", "{world}/nodata", "--arch", "unet", *DRY),
         ("nodata", "segq data prepare")),
    Case("data of another format version", (*SWEEP, "--data", "{future}", "--arch", "unet", *DRY),
         ("future", "format version")),
    Case("shard whose sha256 changed", ("data", "inspect", "{tampered}"), ("train-00000.arrow", "sha256")),
    Case("inspect a folder with no dataset", ("data", "inspect", "{specs}"), ("specs",)),
    Case("unknown data source", ("data", "prepare", "nosuch", "--out", "{world}/out"), ("nosuch", "synthetic")),
    Case("bad image size", ("data", "prepare", "synthetic", "--out", "{world}/out", "--size", "64by64"),
         ("64by64",)),
    Case("image folder missing", ("data", "prepare", "folder", "{world}/nofolder", "--out", "{world}/out"),
         ("nofolder",)),
    # predict, eval, export
    Case("crafted pickle checkpoint", ("predict", "{world}/crafted.pt", "{image}", "--out", "{world}/pred"),
         ("crafted.pt", "refused")),
    Case("crafted pickle of a newer protocol", ("predict", "{world}/crafted4.pt", "{image}", "--out", "{world}/pred"),
         ("crafted4.pt", "checkpoint")),
    Case("corrupt checkpoint", ("predict", "{world}/corrupt.pt", "{image}", "--out", "{world}/pred"),
         ("corrupt.pt", "checkpoint.pt")),
    Case("checkpoint of another architecture", ("predict", "{world}/mixed.pt", "{image}", "--out", "{world}/pred"),
         ("mixed.pt", "fcn")),
    Case("not a segq checkpoint", ("eval", "{world}/plain.pt", "--data", "{data}"), ("plain.pt", "segq")),
    Case("dataset with other classes", ("eval", "{world}/three_classes.pt", "--data", "{data}"),
         ("three_classes.pt", "classes")),
    Case("checkpoint missing", ("eval", "{world}/none.pt", "--data", "{data}"), ("none.pt",)),
    Case("export a corrupt checkpoint", ("export", "{world}/corrupt.pt", "--out", "{world}/model.ts"),
         ("corrupt.pt",)),
    Case("image that is not an image", ("predict", "{world}/good.pt", "{world}/notimage.png", "--out", "{world}/pred"),
         ("notimage.png",)),
    Case("eval of an unknown split", ("eval", "{world}/good.pt", "--data", "{data}", "--split", "holdout"),
         ("holdout",)),
    # jobs
    Case("jobs show of an unknown job", (*REDIS, "--address", "{ray_off}", "jobs", "show", "nojob"), ("nojob",)),
    Case("jobs logs of an unknown job", (*REDIS, *OFFLINE_RAY, "jobs", "logs", "nojob"), ("nojob",)),
    Case("jobs cancel of an unknown job", (*REDIS, *OFFLINE_RAY, "jobs", "cancel", "nojob"), ("nojob",)),
    Case("summary of an unknown job", (*REDIS, "summary", "nojob"), ("nojob",)),
    Case("watch of an unknown job", (*REDIS, "watch", "nojob"), ("nojob",)),
    Case("cancel of a cancelled job", (*REDIS, *OFFLINE_RAY, "jobs", "cancel", CANCELLED_JOB),
         (CANCELLED_JOB, "cancelled")),
    Case("summary in an unknown format", (*REDIS, "summary", FINISHED_JOB, "--format", "pdf"), ("pdf", "json")),
    # cluster addresses and secrets
    Case("unreachable Redis", ("--redis-url", "redis://127.0.0.1:1/0", *OFFLINE_RAY, "jobs", "list"),
         ("127.0.0.1:1",)),
    Case("unreachable Ray", (*REDIS, *OFFLINE_RAY, "jobs", "logs", FINISHED_JOB), ("127.0.0.1:9",)),
    Case("submit to an unreachable Ray", (*REDIS, *OFFLINE_RAY, *SWEEP, "--data", "{data}", "--arch", "unet"),
         ("127.0.0.1:9",)),
    Case("wrong Redis password", ("--redis-url", "{locked_wrong}", "summary", FINISHED_JOB), ("password",)),
    Case("no Redis password", ("--redis-url", "{locked_none}", "summary", FINISHED_JOB), ("password",)),
    Case("Redis password file missing", ("--redis-url", "{locked_nofile}", "summary", FINISHED_JOB),
         ("password file", "nofile")),
    Case("not a Redis URL", ("--redis-url", "http://127.0.0.1:1", "summary", FINISHED_JOB), ("http://127.0.0.1:1",)),
    Case("dashboard with no cluster", ("dashboard",), ("segq up",)),
]
RESUME_CASES = [
    Case("jobs resume of an unknown job", (*REDIS, "--address", "{ray}", "jobs", "resume", "nojob"), ("nojob",)),
    Case("jobs resume of a finished job", (*REDIS, "--address", "{ray}", "jobs", "resume", FINISHED_JOB),
         (FINISHED_JOB, "finished")),
]
# Through the installed command as well: the same line and exit from a real process.
INSTALLED = ("spec unknown field", "crafted pickle checkpoint", "crafted pickle of a newer protocol",
             "unreachable Redis", "wrong Redis password")


def save_model(path: Path, arch: str, num_classes: int, manifest: dict, data: Path, weights_of: str | None = None,
               options: dict | None = None) -> Path:
    options = TINY_UNET if options is None else options
    trial = TrialSpec(name="t", arch=arch, model=options, train=TrainParams())
    context = TrialContext(job_id="j", data=str(data), storage=str(data), redis_url="redis://unused",
                           events_stream="unused")
    model = build_model(weights_of or arch, num_classes, options if weights_of is None else {})
    state = checkpoint_state(model, trial, context, {**manifest, "num_classes": num_classes,
                                                     "class_names": manifest["class_names"][:num_classes]})
    path.mkdir(parents=True)
    return save_checkpoint(path, state)


class Crafted:
    """Unpickling this runs a shell command: the marker file must never appear."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def make_checkpoints(world: Path, data: Path) -> None:
    manifest = read_manifest(data)
    good = save_model(world / "good", "unet", manifest["num_classes"], manifest, data)
    shutil.copy(good, world / "good.pt")
    shutil.copy(save_model(world / "three", "unet", 3, manifest, data), world / "three_classes.pt")
    shutil.copy(save_model(world / "mixed", "fcn", manifest["num_classes"], manifest, data, weights_of="unet",
                           options={"backbone": "resnet18"}), world / "mixed.pt")
    torch.save({"model": Crafted(world / "pwned"), "trial": {}}, world / "crafted.pt")
    # a plain pickle of protocol 4: torch warns about the protocol before it refuses the file
    (world / "crafted4.pt").write_bytes(pickle.dumps({"model": Crafted(world / "pwned")}, protocol=4))
    (world / "corrupt.pt").write_bytes(os.urandom(512))
    torch.save({"weights": [1.0, 2.0]}, world / "plain.pt")
    (world / "notimage.png").write_text("this is text, not a PNG\n")


def make_datasets(world: Path) -> dict[str, Path]:
    data = prepare_synthetic_in_process(world / "data", 12, (0.5, 0.25, 0.25), size=(16, 16))
    future = Path(shutil.copytree(data, world / "future"))
    manifest = json.loads((future / "manifest.json").read_text())
    (future / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    tampered = Path(shutil.copytree(data, world / "tampered"))
    with open(tampered / "train-00000.arrow", "r+b") as shard:
        shard.seek(100)
        shard.write(b"\xff\xfe\xfd")
    return {"data": data, "future": future, "tampered": tampered, "image": world / "image.png"}


@pytest.fixture(scope="module")
def world(tmp_path_factory, redis_server):
    root = tmp_path_factory.mktemp("bad-input")
    paths = make_datasets(root)
    from PIL import Image
    Image.new("RGB", (16, 16), (10, 200, 30)).save(paths["image"])
    make_checkpoints(root, paths["data"])
    (root / "specs").mkdir()
    for name, text in SPEC_FILES.items():
        (root / "specs" / name).write_text(text.format(data=paths["data"], world=root))
    locked = OwnedRedis(root / "locked-redis", extra=["--requirepass", "the-right-one"]).start()
    redis_url = f"{redis_server}/14"
    client = open_redis(redis_url, decode_responses=True)
    client.flushdb()
    for job_id, status in ((FINISHED_JOB, JobStatus.FINISHED), (CANCELLED_JOB, JobStatus.CANCELLED)):
        JobRecord(id=job_id, kind="sweep", spec={"data": str(paths["data"])}, status=status,
                  ray_submission_id=job_id).save(client)
    (root / "home").mkdir()
    values = {**{name: str(path) for name, path in paths.items()}, "world": str(root), "specs": str(root / "specs"),
              "redis": redis_url, "ray_off": "http://127.0.0.1:9", "home": str(root / "home"),
              "locked_wrong": f"redis://:wrong@127.0.0.1:{locked.port}/0",
              "locked_none": f"redis://127.0.0.1:{locked.port}/0",
              "locked_nofile": f"redis://127.0.0.1:{locked.port}/0?password_file={root}/nofile"}
    yield values
    locked.stop()
    client.close()


def files_under(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file() and "locked-redis" not in path.parts}


def redis_state(url: str) -> dict:
    client = open_redis(url, decode_responses=True)
    return {key: client.dump(key) for key in sorted(client.scan_iter("*"))}


def isolated_env(world: dict) -> dict:
    """No SEGQ_* from the caller's shell, and a home where nothing runs (nothing is started)."""
    env = {name: None for name in os.environ if name.startswith("SEGQ_")}
    return {**env, "SEGQ_HOME": world["home"], "COLUMNS": "200"}


def check_one_line(case: Case, exit_code: int, output: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert exit_code not in (0, None), f"{case}: exit {exit_code}\n{output}"
    assert "Traceback" not in output, f"{case}: traceback\n{output}"
    assert len(lines) == 1, f"{case}: {len(lines)} lines\n{output}"
    for name in case.names:
        assert name.lower() in lines[0].lower(), f"{case}: the line does not name {name!r}: {lines[0]}"


def run_case(case: Case, world: dict, installed: bool = False) -> None:
    args = [arg.format(**world) for arg in case.args]
    root = Path(world["world"])
    files, stored = files_under(root), redis_state(world["redis"])
    if installed:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEGQ_")} | {"SEGQ_HOME": world["home"]}
        result = run_segq(*args, env=env, timeout=120)
        check_one_line(case, result.returncode, result.stdout + result.stderr)
    else:
        result = CliRunner().invoke(app, args, env=isolated_env(world))
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            f"{case}: {type(result.exception).__name__}: {result.exception}")
        check_one_line(case, result.exit_code, result.output)
    assert files_under(root) == files, f"{case}: files changed"
    assert redis_state(world["redis"]) == stored, f"{case}: Redis changed"
    assert not (root / "pwned").exists()
    assert not (Path(world["home"]) / "cluster.json").exists(), f"{case}: a cluster was started"


def test_the_catalogue_is_large():
    assert len({case.kind for case in CASES + RESUME_CASES}) >= 30


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input(case, world):
    run_case(case, world)


@pytest.mark.parametrize("case", [case for case in CASES if case.kind in INSTALLED], ids=str)
def test_bad_input_through_the_installed_command(case, world):
    run_case(case, world, installed=True)


@pytest.mark.ray
@pytest.mark.parametrize("case", RESUME_CASES, ids=str)
def test_bad_resume(case, world, segq_env):
    state = json.loads((Path(segq_env["SEGQ_HOME"]) / "cluster.json").read_text())
    run_case(case, {**world, "ray": state["ray"]["dashboard_url"]})
