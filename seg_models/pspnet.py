"""PSPNet (Zhao et al. 2017): a dilated ResNet whose last features are pooled at 1x1, 2x2, 3x3
and 6x6 for global context, with an optional auxiliary classifier on layer3 for training."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import ConfigDict, Field
from torch import nn

from seg_models.backbones import Backbone, build_backbone, scale_channels
from seg_models.backbones.base import init_weights
from seg_models.backbones.options import BackboneOptions
from seg_models.base import SegmentationModel
from seg_models.layers import ClassifierHead, PooledBranch, conv_bn_relu

PYRAMID_BINS = (1, 2, 3, 6)
BOTTLENECK_CHANNELS = 512
AUX_CHANNELS = 256
LAYER3 = -2  # index of ResNet's layer3 among the backbone's stages


class PSPNetOptions(BackboneOptions):
    model_config = ConfigDict(extra="forbid")

    backbone: Literal["resnet18", "resnet34", "resnet50", "resnet101"] = "resnet50"
    output_stride: Literal[8, 16] = 8
    aux_head: bool = True
    aux_weight: float = Field(0.4, ge=0, description="weight of the auxiliary loss in training")


class PyramidPooling(nn.Module):
    def __init__(self, in_channels: int, bins: tuple[int, ...] = PYRAMID_BINS):
        super().__init__()
        branch_channels = in_channels // len(bins)
        self.branches = nn.ModuleList(PooledBranch(in_channels, branch_channels, b) for b in bins)
        self.out_channels = in_channels + branch_channels * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x] + [branch(x) for branch in self.branches], dim=1)


class PSPDecoder(nn.Module):
    def __init__(self, backbone: Backbone, width: float):
        super().__init__()
        self.pyramid = PyramidPooling(backbone.stage_channels[-1])
        self.bottleneck = nn.Sequential(
            conv_bn_relu(self.pyramid.out_channels, scale_channels(BOTTLENECK_CHANNELS, width), 3),
            nn.Dropout(0.1),
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.bottleneck(self.pyramid(features[-1]))


class StageClassifier(nn.Module):
    """Scores one stage of the backbone's features (the auxiliary head)."""

    def __init__(self, stage: int, in_channels: int, hidden: int, num_classes: int):
        super().__init__()
        self.stage = stage
        self.classify = ClassifierHead(in_channels, hidden, num_classes)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.classify(features[self.stage])


class PSPNet(SegmentationModel):
    def __init__(self, num_classes: int, options: PSPNetOptions, in_channels: int = 3):
        super().__init__()
        self.output_stride = options.output_stride
        self.encoder = build_backbone(options.backbone, options.width, options.output_stride,
                                      options.pretrained, in_channels)
        self.decoder = PSPDecoder(self.encoder, options.width)
        self.head = nn.Conv2d(scale_channels(BOTTLENECK_CHANNELS, options.width), num_classes, 1)
        self.aux_weight = options.aux_weight
        if options.aux_head:
            self.aux_head = StageClassifier(LAYER3, self.encoder.stage_channels[LAYER3],
                                            scale_channels(AUX_CHANNELS, options.width), num_classes)
        init_weights(self.decoder)
        if self.aux_head is not None:
            init_weights(self.aux_head)
