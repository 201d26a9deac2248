"""The registry of data sources: which source takes which flag, the defaults, and the CLI's view of it.
No cluster: every case here is refused or listed before `segq data prepare` connects to anything."""
import pytest
from typer.testing import CliRunner

from cluster.cli.data import data_app
from jobs.preparation.sources.registry import SOURCES, describe_flag, open_source, source_flags
from seg_models.exceptions import SpecError

SOURCE_FLAGS = {
    "--count": ["synthetic"],
    "--difficulty": ["synthetic"],
    "--split": ["synthetic", "folder"],
    "--label-mode": ["cityscapes"],
    "--val-fraction": ["pets"],
    "--border": ["pets"],
    "--classes": ["folder"],
}


def not_given():
    return {name: None for name in source_flags()}


def test_every_source_flag_belongs_to_its_sources():
    assert list(SOURCES) == ["synthetic", "cityscapes", "pets", "folder"]
    assert {name: [s.name for s in SOURCES.values() if any(f.name == name for f in s.flags)]
            for name in source_flags()} == SOURCE_FLAGS


@pytest.mark.parametrize("name, help_text", [
    ("--count", "synthetic: number of scenes (default 200)"),
    ("--split", "synthetic, folder: train,val,test fractions (default 0.7,0.15,0.15)"),
    ("--label-mode", "cityscapes: train_ids (19 classes, the rest 255) or label_ids (34) (default train_ids)"),
    ("--val-fraction", "pets: share of trainval held out as val (default 0.1)"),
    ("--border", "pets: the trimap border as a 'class' or 'ignore' (255) (default class)"),
    ("--classes", "folder: class names a,b,c, id 0 first (instead of ROOT/classes.txt)"),
])
def test_flag_help_names_its_sources_and_default(name, help_text):
    assert describe_flag(name) == help_text


def test_synthetic_gets_the_defaults_and_parsed_flags():
    dataset, _ = open_source("synthetic", None, 5, False, not_given())
    assert dataset.options == {"count": 200, "seed": 5, "split": [0.7, 0.15, 0.15]}
    given = not_given() | {"--count": 10, "--split": "0.6,0.2,0.2"}
    dataset, _ = open_source("synthetic", None, 5, False, given)
    assert dataset.options == {"count": 10, "seed": 5, "split": [0.6, 0.2, 0.2]}


@pytest.mark.parametrize("source, root, flag, value, message", [
    ("cityscapes", "r", "--count", 3, "--count applies to synthetic only, not cityscapes; drop it"),
    ("cityscapes", "r", "--split", "1,0,0", "--split applies to synthetic, folder only, not cityscapes; drop it"),
    ("synthetic", None, "--label-mode", "label_ids", "--label-mode applies to cityscapes only, not synthetic; drop it"),
    ("folder", "r", "--border", "class", "--border applies to pets only, not folder; drop it"),
    ("folder", "r", "--val-fraction", 0.2, "--val-fraction applies to pets only, not folder; drop it"),
    ("pets", "r", "--classes", "a,b", "--classes applies to folder only, not pets; drop it"),
    ("pets", None, None, None, "pets: give the dataset's root folder: segq data prepare pets ROOT --out DIR"),
    ("bogus", "r", None, None, "source 'bogus': unknown; available: synthetic, cityscapes, pets, folder"),
])
def test_a_flag_for_another_source_is_refused(source, root, flag, value, message):
    given = not_given() | ({flag: value} if flag else {})
    with pytest.raises(SpecError) as caught:
        open_source(source, root, 0, False, given)
    assert str(caught.value) == message


@pytest.fixture
def no_cluster(monkeypatch):
    def trap(*args, **kwargs):
        raise AssertionError("the cluster was reached before the flags were checked")
    monkeypatch.setattr("cluster.cli.data.endpoints_of", trap)


def test_prepare_help_lists_every_flag(no_cluster):
    result = CliRunner().invoke(data_app, ["prepare", "--help"], env={"COLUMNS": "240"})
    assert result.exit_code == 0
    for name in ["--out", "--size", "--seed", "--shard-size", "--compression", "--overwrite", "--skip-bad",
                 *SOURCE_FLAGS]:
        assert name in result.output
    assert "synthetic, cityscapes, pets or folder" in result.output
    assert describe_flag("--label-mode") in result.output


def test_cli_refuses_a_foreign_flag_before_any_connection(no_cluster, tmp_path):
    result = CliRunner().invoke(data_app, ["prepare", "pets", str(tmp_path), "--out", str(tmp_path / "out"),
                                           "--split", "0.5,0.25,0.25"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SpecError)
    assert str(result.exception) == "--split applies to synthetic, folder only, not pets; drop it"
    assert not (tmp_path / "out").exists()
