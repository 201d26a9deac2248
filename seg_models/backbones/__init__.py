"""Backbones by name. Each returns one feature map per stage and knows their channels and strides."""
from __future__ import annotations

from typing import Callable

from seg_models.exceptions import SpecError
from seg_models.backbones.base import Backbone, scale_channels
from seg_models.backbones.mobilenet import mobilenet_v2
from seg_models.backbones.pretrained import load_pretrained
from seg_models.backbones.resnet import resnet18, resnet34, resnet50, resnet101
from seg_models.backbones.vgg import vgg16, vgg16_bn

BACKBONES: dict[str, Callable[..., Backbone]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "mobilenet_v2": mobilenet_v2,
    "vgg16": vgg16,
    "vgg16_bn": vgg16_bn,
}


def build_backbone(name: str, width: float = 1.0, output_stride: int = 32,
                   pretrained: str | None = None, in_channels: int = 3) -> Backbone:
    try:
        builder = BACKBONES[name]
    except KeyError:
        raise SpecError(f"unknown backbone {name!r}; valid: {', '.join(sorted(BACKBONES))}") from None
    backbone = builder(width=width, output_stride=output_stride, in_channels=in_channels)
    if pretrained is not None:
        load_pretrained(backbone, pretrained)
    return backbone


__all__ = ["BACKBONES", "Backbone", "build_backbone", "load_pretrained", "scale_channels"]
