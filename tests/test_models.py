"""Every architecture in the registry: shapes, gradients, parameter counts, input checks, and
the behaviour that makes each one what it claims to be."""
from __future__ import annotations

import pydantic
import pytest
import torch
from torch import nn

from seg_models.exceptions import InputShapeError, SpecError
from seg_models.backbones import build_backbone
from seg_models.base import count_parameters, split_outputs
from seg_models.pspnet import PSPNetOptions
from seg_models.registry import ARCHITECTURES, build_model

NUM_CLASSES = 3

# (case id, architecture, small options): at least one per architecture, plus the other
# backbones and variants worth exercising.
CASES = [
    ("unet", "unet", {"base_width": 8}),
    ("segnet", "segnet", {"width": 0.25}),
    ("fcn", "fcn", {"width": 0.25, "backbone": "resnet18", "variant": "8s"}),
    ("fcn-vgg16-16s", "fcn", {"width": 0.25, "backbone": "vgg16", "variant": "16s"}),
    ("deeplabv3plus", "deeplabv3plus", {"width": 0.25, "backbone": "resnet18"}),
    ("deeplabv3plus-mobilenet-os8", "deeplabv3plus",
     {"width": 0.25, "backbone": "mobilenet_v2", "output_stride": 8}),
    ("pspnet", "pspnet", {"width": 0.25, "backbone": "resnet18"}),
    ("pspnet-resnet50-os16", "pspnet",
     {"width": 0.25, "backbone": "resnet50", "output_stride": 16, "aux_head": False}),
    ("vgg_unet", "vgg_unet", {"width": 0.25}),
    ("vgg_unet-vgg16-bilinear", "vgg_unet", {"width": 0.25, "backbone": "vgg16", "upsampling": "bilinear"}),
]
CASE_IDS = [case_id for case_id, _, _ in CASES]

# Recorded so an accidental change to an architecture shows up here.
SMALL_PARAMETER_COUNTS = {
    "unet": 486_571,
    "segnet": 1_844_483,
    "fcn": 739_417,
    "fcn-vgg16-16s": 958_198,
    "deeplabv3plus": 1_042_219,
    "deeplabv3plus-mobilenet-os8": 2_716_251,
    "pspnet": 1_051_478,
    "pspnet-resnet50-os16": 2_924_435,
    "vgg_unet": 2_424_179,
    "vgg_unet-vgg16-bilinear": 2_291_507,
}
DEFAULT_PARAMETER_COUNTS = {  # default options, 21 classes
    "unet": 7_763_701,
    "segnet": 29_451_413,
    "fcn": 15_329_023,
    "deeplabv3plus": 40_352_181,
    "pspnet": 48_957_802,
    "vgg_unet": 38_715_989,
}


@pytest.fixture(params=CASES, ids=CASE_IDS)
def case(request) -> tuple[str, nn.Module]:
    torch.manual_seed(0)
    case_id, arch, options = request.param
    return case_id, build_model(arch, NUM_CLASSES, options)


def test_every_architecture_has_a_case():
    assert {arch for _, arch, _ in CASES} == set(ARCHITECTURES)


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 64, 96), (1, 3, 32, 32)])
def test_logits_have_the_input_size(case, shape):
    _, model = case
    with torch.no_grad():
        logits = model.eval()(torch.randn(shape))
    assert logits.shape == (shape[0], NUM_CLASSES, *shape[2:])


@pytest.mark.parametrize("size", [32, 64])
def test_every_parameter_gets_a_gradient_in_training(case, size):
    _, model = case
    logits, aux_logits = split_outputs(model.train()(torch.randn(2, 3, size, size)))
    loss = logits.mean() if aux_logits is None else logits.mean() + aux_logits.mean()
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_parameter_counts_are_stable(case):
    case_id, model = case
    assert count_parameters(model) == SMALL_PARAMETER_COUNTS[case_id]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_parameter_counts_at_default_options(arch):
    assert count_parameters(build_model(arch, 21)) == DEFAULT_PARAMETER_COUNTS[arch]


def test_input_not_divisible_by_the_stride_is_refused(case):
    _, model = case
    with pytest.raises(InputShapeError, match=r"height 68 is not divisible by output stride \d+; pad or resize"):
        model(torch.randn(1, 3, 68, 64))


def test_segnet_decoder_unpools_with_the_encoder_indices():
    torch.manual_seed(0)
    model = build_model("segnet", NUM_CLASSES, {"width": 0.25}).eval()
    last_pool = [m for m in model.encoder.modules() if isinstance(m, nn.MaxPool2d)][-1]
    first_unpool = next(m for m in model.decoder.modules() if isinstance(m, nn.MaxUnpool2d))
    seen = {}
    last_pool.register_forward_hook(lambda module, inputs, output: seen.update(pooled=inputs[0]))
    first_unpool.register_forward_hook(lambda module, inputs, output: seen.update(unpooled=output))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))

    before_pool, unpooled = seen["pooled"], seen["unpooled"]
    n, c, h, w = before_pool.shape
    window_max = before_pool.reshape(n, c, h // 2, 2, w // 2, 2).amax(dim=(3, 5))
    window_max = window_max.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    # ReLU makes some windows all zero; there the un-pooled value is zero wherever it lands.
    argmax_positions = (before_pool == window_max) & (window_max > 0)
    assert argmax_positions.sum() > 100
    assert torch.equal(unpooled != 0, argmax_positions)
    assert torch.equal(unpooled[argmax_positions], before_pool[argmax_positions])


def test_pspnet_aux_logits_only_in_training():
    model = build_model("pspnet", NUM_CLASSES, {"width": 0.25, "backbone": "resnet18", "aux_head": True})
    assert model.aux_weight == 0.4

    output = model.train()(torch.randn(2, 3, 64, 64))
    assert isinstance(output, tuple)
    assert [tuple(o.shape) for o in output] == [(2, NUM_CLASSES, 64, 64)] * 2

    with torch.no_grad():
        assert isinstance(model.eval()(torch.randn(1, 3, 64, 64)), torch.Tensor)


def test_pspnet_needs_a_resnet():
    with pytest.raises(pydantic.ValidationError, match="backbone"):
        PSPNetOptions(backbone="mobilenet_v2")
    with pytest.raises(SpecError, match="pspnet.backbone"):
        build_model("pspnet", NUM_CLASSES, {"backbone": "vgg16"})


@pytest.mark.parametrize("arch, options, field", [
    ("deeplabv3plus", {"output_stride": 32}, "output_stride"),
    ("fcn", {"variant": "4s"}, "variant"),
    ("segnet", {"width": 0}, "width"),
    ("vgg_unet", {"depth": 4}, "depth"),
])
def test_invalid_options_are_refused(arch, options, field):
    with pytest.raises(SpecError, match=f"{arch}.{field}"):
        build_model(arch, NUM_CLASSES, options)


def test_pretrained_weights_need_full_width():
    with pytest.raises(SpecError, match="fcn.pretrained: .*pretrained weights fit width 1.0 only"):
        build_model("fcn", NUM_CLASSES, {"backbone": "resnet18", "width": 0.5, "pretrained": "r18.pth"})


def random_state_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {key: torch.randn(v.shape) if v.is_floating_point() else v
            for key, v in module.state_dict().items()}


def test_pretrained_backbone_reaches_the_encoder(tmp_path):
    state = random_state_of(build_backbone("resnet18"))
    torch.save(state, tmp_path / "resnet18.pth")

    model = build_model("deeplabv3plus", NUM_CLASSES,
                        {"backbone": "resnet18", "pretrained": str(tmp_path / "resnet18.pth")})

    assert all(torch.equal(v, state[key]) for key, v in model.encoder.state_dict().items())


def test_segnet_encoder_loads_vgg16_bn_weights(tmp_path):
    state = random_state_of(build_backbone("vgg16_bn"))
    torch.save(state, tmp_path / "vgg16_bn.pth")

    model = build_model("segnet", NUM_CLASSES, {"pretrained": str(tmp_path / "vgg16_bn.pth")})

    assert model.encoder.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[key]) for key, v in model.encoder.state_dict().items())
