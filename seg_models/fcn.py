"""FCN (Long et al. 2015): class scores on the deepest features, refined by adding scores from
the stride-16 (16s) and stride-8 (8s) stages."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import ConfigDict
from torch import nn

from seg_models.backbones import Backbone, build_backbone, scale_channels
from seg_models.backbones.base import init_weights
from seg_models.backbones.options import BackboneOptions
from seg_models.base import SegmentationModel
from seg_models.layers import ClassifierHead, resize_to

SKIP_STRIDES = {"32s": (), "16s": (16,), "8s": (16, 8)}


class FCNOptions(BackboneOptions):
    model_config = ConfigDict(extra="forbid")

    backbone: Literal["vgg16", "vgg16_bn", "resnet18", "resnet34", "resnet50", "resnet101"] = "vgg16"
    variant: Literal["8s", "16s", "32s"] = "8s"


class FCNDecoder(nn.Module):
    """Each skip is the deepest stage at its stride: layer3/layer2 of a ResNet, conv5_3/conv4_3
    of VGG (the paper taps pool4/pool3, one conv stage shallower). Up-sampling between fusions is
    bilinear, as in torchvision; the paper's learned deconvolutions start out bilinear too."""

    def __init__(self, backbone: Backbone, num_classes: int, variant: str):
        super().__init__()
        deepest = backbone.stage_channels[-1]
        self.score_deepest = ClassifierHead(deepest, scale_channels(deepest, 1 / 4), num_classes)
        init_weights(self.score_deepest)
        self.skip_stages = [backbone.stage_at_stride(stride) for stride in SKIP_STRIDES[variant]]
        self.score_skips = nn.ModuleList(
            nn.Conv2d(backbone.stage_channels[stage], num_classes, 1) for stage in self.skip_stages
        )
        for score in self.score_skips:
            # Zero, as in the paper, so training starts from the coarser net's predictions.
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        scores = self.score_deepest(features[-1])
        for stage, score_skip in zip(self.skip_stages, self.score_skips):
            skip = score_skip(features[stage])
            scores = resize_to(scores, skip) + skip
        return scores


class FCN(SegmentationModel):
    def __init__(self, num_classes: int, options: FCNOptions, in_channels: int = 3):
        super().__init__()
        self.output_stride = 32
        self.encoder = build_backbone(options.backbone, options.width, self.output_stride,
                                      options.pretrained, in_channels)
        self.decoder = FCNDecoder(self.encoder, num_classes, options.variant)
        self.head = nn.Identity()  # the decoder already fuses class scores
