"""Backbones against torchvision, through the recorded keys, shapes and features of
../shared/fixtures/torchvision_backbones.json (see its header for how the fill and input are made)."""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import pytest
import torch

from seg_models.exceptions import SpecError
from seg_models.backbones import BACKBONES, build_backbone

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "torchvision_backbones.json"
CLASSIFIER_PREFIXES = ("fc.", "classifier.")


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(FIXTURE.read_text())["models"]


def fill_value(key: str, shape: torch.Size) -> torch.Tensor:
    if key.endswith("running_var"):
        return torch.ones(shape)
    if key.endswith(("running_mean", "num_batches_tracked")):
        return torch.zeros(shape)
    t = torch.arange(math.prod(shape), dtype=torch.float64)
    values = 0.05 * torch.sin(0.37 * t + 1.3 * (zlib.crc32(key.encode()) % 1000))
    return values.reshape(shape)


def fill_deterministically(model: torch.nn.Module) -> None:
    state = model.state_dict()
    model.load_state_dict({key: fill_value(key, v.shape).to(v.dtype) for key, v in state.items()})


def fixed_input() -> torch.Tensor:
    return torch.sin(0.01 * torch.arange(3 * 64 * 64, dtype=torch.float32)).reshape(1, 3, 64, 64)


def backbone_part(state_dict: dict[str, list[int]]) -> list[tuple[str, list[int]]]:
    return [(key, shape) for key, shape in state_dict.items() if not key.startswith(CLASSIFIER_PREFIXES)]


def test_fixture_covers_every_backbone(recorded):
    assert sorted(recorded) == sorted(BACKBONES)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_state_dict_matches_torchvision(recorded, name):
    ours = [(key, list(v.shape)) for key, v in build_backbone(name).state_dict().items()]
    assert ours == backbone_part(recorded[name]["state_dict"])


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_features_match_torchvision(recorded, name):
    expected = recorded[name]
    model = build_backbone(name).eval()
    fill_deterministically(model)
    with torch.no_grad():
        features = model(fixed_input())[-1].double()

    # float32 noise: vgg16 in float64 moves the sum by 4e-5 (relative) and first values by 1e-5, and
    # the CPU's kernels (which vector instructions the convolutions use) move its float32 sum and
    # first values by up to 3e-4 (relative). A wrong layer, weight or order moves them by far more.
    assert list(features.shape) == expected["feature_shape"]
    assert features.sum().item() == pytest.approx(expected["feature_sum"], rel=5e-4)
    assert features.abs().sum().item() == pytest.approx(expected["feature_abs_sum"], rel=5e-4)
    first8 = features.flatten()[:8].tolist()
    assert first8 == pytest.approx(expected["feature_first8"], rel=5e-4, abs=1e-5)


SUPPORTED_STRIDES = {name: (32,) if name.startswith("vgg") else (8, 16, 32) for name in BACKBONES}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_stage_channels_and_strides_describe_the_features(name):
    for output_stride in SUPPORTED_STRIDES[name]:
        model = build_backbone(name, width=0.25, output_stride=output_stride).eval()
        with torch.no_grad():
            features = model(torch.zeros(1, 3, 64, 96))
        assert [tuple(f.shape[1:]) for f in features] == [
            (channels, 64 // stride, 96 // stride)
            for channels, stride in zip(model.stage_channels, model.stage_strides)
        ]
        assert max(model.stage_strides) == output_stride


def test_width_scales_channels():
    assert build_backbone("resnet50", width=0.25).stage_channels == [16, 64, 128, 256, 512]
    assert build_backbone("vgg16", width=0.5).stage_channels == [32, 64, 128, 256, 256, 256]
    # torchvision's make_divisible, and the last 1x1 conv never narrower than 1280
    assert build_backbone("mobilenet_v2", width=0.5).stage_channels == [8, 16, 16, 48, 1280]


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(SpecError, match="unknown backbone 'resnet152'; valid: mobilenet_v2, resnet101"):
        build_backbone("resnet152")


def test_vgg_cannot_dilate():
    with pytest.raises(SpecError, match="vgg16 supports output stride 32; got 16"):
        build_backbone("vgg16", output_stride=16)


def torchvision_style_state(name: str, width: float) -> dict[str, torch.Tensor]:
    state = {key: torch.randn(v.shape) if v.is_floating_point() else v
             for key, v in build_backbone(name, width=width).state_dict().items()}
    state["fc.weight"] = torch.randn(1000, 8)  # classifier keys are ignored
    state["fc.bias"] = torch.randn(1000)
    return state


def test_pretrained_round_trip(tmp_path):
    state = torchvision_style_state("resnet18", width=0.25)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)

    loaded = build_backbone("resnet18", width=0.25, pretrained=str(path)).state_dict()

    assert loaded.keys() == state.keys() - {"fc.weight", "fc.bias"}
    assert all(torch.equal(loaded[key], state[key]) for key in loaded)


def test_pretrained_with_a_wrong_key_names_it(tmp_path):
    state = torchvision_style_state("resnet18", width=0.25)
    state["conv_1.weight"] = state.pop("conv1.weight")
    path = tmp_path / "renamed.pth"
    torch.save(state, path)

    with pytest.raises(SpecError, match=r"1 missing \(conv1\.weight\); 1 unexpected \(conv_1\.weight\)"):
        build_backbone("resnet18", width=0.25, pretrained=str(path))


def test_pretrained_of_another_backbone_truncates_the_key_lists(tmp_path):
    path = tmp_path / "vgg16.pth"
    torch.save(torchvision_style_state("vgg16", width=0.25), path)

    with pytest.raises(SpecError, match=r"120 missing \(.* and 115 more\); 26 unexpected \(.* and 21 more\)"):
        build_backbone("resnet18", width=0.25, pretrained=str(path))


def test_pretrained_with_wrong_width_reports_shapes(tmp_path):
    path = tmp_path / "half.pth"
    torch.save(torchvision_style_state("resnet18", width=0.5), path)

    with pytest.raises(SpecError, match=r"wrong shape \(bn1\.bias \(32,\) != \(16,\)"):
        build_backbone("resnet18", width=0.25, pretrained=str(path))


def test_pretrained_file_must_exist(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        build_backbone("resnet18", pretrained=str(tmp_path / "nope.pth"))


def test_resnet_dilation_follows_torchvision():
    """As replace_stride_with_dilation=[False, True, True]: a dilated layer's first block keeps
    the previous dilation with stride 1; the rest take the new one."""
    model = build_backbone("resnet50", width=0.25, output_stride=8)
    convs = {name: (m.stride, m.dilation) for name, m in model.named_modules() if name.endswith("conv2")}
    assert convs["layer2.0.conv2"] == ((2, 2), (1, 1))
    assert convs["layer3.0.conv2"] == ((1, 1), (1, 1))
    assert convs["layer3.1.conv2"] == ((1, 1), (2, 2))
    assert convs["layer4.0.conv2"] == ((1, 1), (2, 2))
    assert convs["layer4.2.conv2"] == ((1, 1), (4, 4))
    assert model.layer4[0].downsample[0].stride == (1, 1)


def test_mobilenet_dilation_at_output_stride_16():
    model = build_backbone("mobilenet_v2", width=0.25, output_stride=16)
    depthwise = {index: (block.conv[1][0].stride, block.conv[1][0].dilation)
                 for index, block in enumerate(model.features) if 1 < index < 18}
    assert depthwise[7] == ((2, 2), (1, 1))  # stride 16 reached here
    assert depthwise[14] == ((1, 1), (1, 1))  # would go to 32: keeps its resolution instead
    assert depthwise[15] == ((1, 1), (2, 2))
    assert depthwise[17] == ((1, 1), (2, 2))
