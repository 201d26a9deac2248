"""The model zoo: one dict from a lowercase architecture name to its options and builder."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ValidationError
from torch import nn

from seg_models.exceptions import SpecError, UnknownArchitecture
from seg_models.deeplab import DeepLabV3Plus, DeepLabV3PlusOptions
from seg_models.fcn import FCN, FCNOptions
from seg_models.pspnet import PSPNet, PSPNetOptions
from seg_models.segnet import SegNet, SegNetOptions
from seg_models.unet import UNet, UNetOptions
from seg_models.vgg_unet import VGGUNet, VGGUNetOptions


@dataclass(frozen=True)
class Architecture:
    name: str
    options: type[BaseModel]
    build: Callable[[int, Any], nn.Module]  # (num_classes, options) -> model
    summary: str


ARCHITECTURES: dict[str, Architecture] = {
    "unet": Architecture("unet", UNetOptions, UNet, "U-Net encoder-decoder with skip connections"),
    "segnet": Architecture("segnet", SegNetOptions, SegNet,
                           "SegNet: VGG16-bn encoder, decoder un-pools with the encoder's indices"),
    "fcn": Architecture("fcn", FCNOptions, FCN, "FCN-8s/16s/32s skip fusion on a VGG16 or ResNet"),
    "deeplabv3plus": Architecture("deeplabv3plus", DeepLabV3PlusOptions, DeepLabV3Plus,
                                  "DeepLabV3+: ASPP and a stride-4 skip on a dilated ResNet or MobileNetV2"),
    "pspnet": Architecture("pspnet", PSPNetOptions, PSPNet,
                           "PSPNet: pyramid pooling (bins 1/2/3/6) on a dilated ResNet, aux head"),
    "vgg_unet": Architecture("vgg_unet", VGGUNetOptions, VGGUNet, "U-Net decoder on a VGG16 encoder"),
}


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UnknownArchitecture(name, sorted(ARCHITECTURES)) from None


def validate_options(arch: str, options: dict[str, Any] | None) -> BaseModel:
    architecture = get_architecture(arch)
    try:
        return architecture.options(**(options or {}))
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        raise SpecError(f"models.{arch}.{field}: {message}") from None


def build_model(arch: str, num_classes: int, options: dict[str, Any] | None = None) -> nn.Module:
    return get_architecture(arch).build(num_classes, validate_options(arch, options))
