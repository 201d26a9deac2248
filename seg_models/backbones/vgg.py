"""VGG16 and VGG16-bn with torchvision's `features` layout."""
from __future__ import annotations

import torch
from torch import nn

from seg_models.backbones.base import Backbone, check_output_stride, init_weights, scale_channels

# Convolutions of each of the five stages; a 2x2 max-pool follows every stage.
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def vgg16_stage_channels(width: float) -> list[int]:
    return [scale_channels(stage[-1], width) for stage in VGG16_STAGES]


def vgg16_layers(width: float, batch_norm: bool, in_channels: int = 3,
                 return_indices: bool = False) -> list[nn.Module]:
    """The flat layer list of torchvision's `vgg16(_bn).features`, so state_dict indices match."""
    layers: list[nn.Module] = []
    for stage in VGG16_STAGES:
        for base_channels in stage:
            channels = scale_channels(base_channels, width)
            layers.append(nn.Conv2d(in_channels, channels, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(channels))
            layers.append(nn.ReLU(inplace=True))
            in_channels = channels
        layers.append(nn.MaxPool2d(2, stride=2, return_indices=return_indices))
    return layers


class VGG16(Backbone):
    """Stages: the last activation of each of the five conv stages (strides 1 to 16, before their
    pooling), then the final max-pool at stride 32."""

    def __init__(self, width: float = 1.0, batch_norm: bool = False, output_stride: int = 32,
                 in_channels: int = 3):
        super().__init__()
        check_output_stride("vgg16", output_stride, (32,))
        self.features = nn.Sequential(*vgg16_layers(width, batch_norm, in_channels))
        channels = vgg16_stage_channels(width)
        self.stage_channels = channels + channels[-1:]
        self.stage_strides = [1, 2, 4, 8, 16, 32]
        init_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for layer in self.features:
            if isinstance(layer, nn.MaxPool2d):
                features.append(x)
            x = layer(x)
        return features + [x]


def vgg16(width: float = 1.0, output_stride: int = 32, in_channels: int = 3) -> VGG16:
    return VGG16(width, batch_norm=False, output_stride=output_stride, in_channels=in_channels)


def vgg16_bn(width: float = 1.0, output_stride: int = 32, in_channels: int = 3) -> VGG16:
    return VGG16(width, batch_norm=True, output_stride=output_stride, in_channels=in_channels)
