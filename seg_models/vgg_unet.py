"""U-Net decoder on a VGG16 encoder (as TernausNet): the five conv stages are the skips."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import ConfigDict
from torch import nn

from seg_models.backbones import build_backbone
from seg_models.backbones.base import init_weights
from seg_models.backbones.options import BackboneOptions
from seg_models.base import SegmentationModel
from seg_models.unet import UpStep, conv_block


class VGGUNetOptions(BackboneOptions):
    model_config = ConfigDict(extra="forbid")

    backbone: Literal["vgg16", "vgg16_bn"] = "vgg16_bn"
    upsampling: Literal["transpose", "bilinear"] = "transpose"


class VGGUNetDecoder(nn.Module):
    """A centre block on the stride-32 pooled features, then one U-Net up-step per skip."""

    def __init__(self, stage_channels: list[int], upsampling: str):
        super().__init__()
        *skip_channels, deepest = stage_channels
        self.center = conv_block(deepest, deepest, batch_norm=True)
        steps = []
        in_channels = deepest
        for channels in reversed(skip_channels):
            steps.append(UpStep(in_channels, channels, channels, upsampling, batch_norm=True))
            in_channels = channels
        self.steps = nn.ModuleList(steps)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        *skips, deepest = features
        x = self.center(deepest)
        for step, skip in zip(self.steps, reversed(skips)):
            x = step(x, skip)
        return x


class VGGUNet(SegmentationModel):
    def __init__(self, num_classes: int, options: VGGUNetOptions, in_channels: int = 3):
        super().__init__()
        self.output_stride = 32
        self.encoder = build_backbone(options.backbone, options.width, self.output_stride,
                                      options.pretrained, in_channels)
        self.decoder = VGGUNetDecoder(self.encoder.stage_channels, options.upsampling)
        self.head = nn.Conv2d(self.encoder.stage_channels[0], num_classes, 1)
        init_weights(self.decoder)
