"""DeepLabV3+ (Chen et al. 2018): atrous spatial pyramid pooling on a dilated backbone, then a
decoder that sharpens it with stride-4 features."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import ConfigDict
from torch import nn

from seg_models.backbones import Backbone, build_backbone, scale_channels
from seg_models.backbones.base import init_weights
from seg_models.backbones.options import BackboneOptions
from seg_models.base import SegmentationModel
from seg_models.layers import PooledBranch, conv_bn_relu, resize_to

ASPP_RATES_AT_STRIDE_16 = (6, 12, 18)
ASPP_CHANNELS = 256
LOW_LEVEL_CHANNELS = 48
LOW_LEVEL_STRIDE = 4


class DeepLabV3PlusOptions(BackboneOptions):
    model_config = ConfigDict(extra="forbid")

    backbone: Literal["resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2"] = "resnet50"
    output_stride: Literal[8, 16] = 16


class ASPP(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, rates: tuple[int, ...]):
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, out_channels)]
            + [conv_bn_relu(in_channels, out_channels, 3, dilation=rate) for rate in rates]
            + [PooledBranch(in_channels, out_channels, bins=1)]
        )
        self.project = nn.Sequential(
            conv_bn_relu(len(self.branches) * out_channels, out_channels),
            nn.Dropout(0.1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class DeepLabV3PlusDecoder(nn.Module):
    def __init__(self, backbone: Backbone, output_stride: int, width: float):
        super().__init__()
        channels = scale_channels(ASPP_CHANNELS, width)
        low_channels = scale_channels(LOW_LEVEL_CHANNELS, width)
        # The rates are set for stride 16; at stride 8 the same field of view needs twice the rate.
        rates = tuple(rate * 16 // output_stride for rate in ASPP_RATES_AT_STRIDE_16)
        self.low_level_stage = backbone.stage_at_stride(LOW_LEVEL_STRIDE)
        self.aspp = ASPP(backbone.stage_channels[-1], channels, rates)
        self.reduce_low_level = conv_bn_relu(backbone.stage_channels[self.low_level_stage], low_channels)
        self.fuse = nn.Sequential(
            conv_bn_relu(channels + low_channels, channels, 3),
            conv_bn_relu(channels, channels, 3),
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        low_level = self.reduce_low_level(features[self.low_level_stage])
        context = resize_to(self.aspp(features[-1]), low_level)
        return self.fuse(torch.cat([context, low_level], dim=1))


class DeepLabV3Plus(SegmentationModel):
    def __init__(self, num_classes: int, options: DeepLabV3PlusOptions, in_channels: int = 3):
        super().__init__()
        self.output_stride = options.output_stride
        self.encoder = build_backbone(options.backbone, options.width, options.output_stride,
                                      options.pretrained, in_channels)
        self.decoder = DeepLabV3PlusDecoder(self.encoder, options.output_stride, options.width)
        self.head = nn.Conv2d(scale_channels(ASPP_CHANNELS, options.width), num_classes, 1)
        init_weights(self.decoder)
