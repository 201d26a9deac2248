"""SegNet (Badrinarayanan et al. 2017): a VGG16-bn encoder whose max-pool indices the decoder
uses to un-pool, so boundaries come back where the encoder found its maxima."""
from __future__ import annotations

from typing import NamedTuple

import torch
from pydantic import ConfigDict
from torch import nn

from seg_models.backbones.base import init_weights
from seg_models.backbones.options import BackboneOptions
from seg_models.backbones.pretrained import load_pretrained
from seg_models.backbones.vgg import VGG16_STAGES, vgg16_layers, vgg16_stage_channels
from seg_models.base import SegmentationModel
from seg_models.layers import conv_bn_relu


class SegNetOptions(BackboneOptions):
    """`pretrained` is a torchvision vgg16_bn state_dict for the encoder."""

    model_config = ConfigDict(extra="forbid")


class PooledFeatures(NamedTuple):
    x: torch.Tensor
    indices: list[torch.Tensor]  # one per max-pool, shallow to deep


class SegNetEncoder(nn.Module):
    def __init__(self, width: float, in_channels: int):
        super().__init__()
        # torchvision's vgg16_bn layout, so its weights load as they are
        self.features = nn.Sequential(
            *vgg16_layers(width, batch_norm=True, in_channels=in_channels, return_indices=True)
        )

    def forward(self, x: torch.Tensor) -> PooledFeatures:
        indices = []
        for layer in self.features:
            if isinstance(layer, nn.MaxPool2d):
                x, index = layer(x)
                indices.append(index)
            else:
                x = layer(x)
        return PooledFeatures(x, indices)


class DoublingMaxUnpool2d(nn.MaxUnpool2d):
    """2x2 un-pooling to exactly twice the input size. Inputs are divisible by the output stride, so
    every pool halved its input exactly. The aten op is called directly because nn.MaxUnpool2d's
    size check does not survive tracing (TorchScript export)."""

    def __init__(self):
        super().__init__(2, stride=2)

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten.max_unpool2d(x, indices, [2 * x.shape[-2], 2 * x.shape[-1]])


class SegNetDecoderStage(nn.Module):
    def __init__(self, convs: list[nn.Module]):
        super().__init__()
        self.unpool = DoublingMaxUnpool2d()
        self.convs = nn.Sequential(*convs)

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return self.convs(self.unpool(x, indices))


class SegNetDecoder(nn.Module):
    """Mirrors the encoder, deep to shallow: each stage un-pools, then has as many 3x3 convs as its
    encoder stage, the last narrowing to the channels of the stage above. The shallowest stage has
    one conv fewer: the head takes its place, as in the original."""

    def __init__(self, width: float):
        super().__init__()
        channels = vgg16_stage_channels(width)
        stages = []
        for depth in reversed(range(len(VGG16_STAGES))):
            width_here = channels[depth]
            convs = [conv_bn_relu(width_here, width_here, 3) for _ in VGG16_STAGES[depth][1:]]
            if depth > 0:
                convs.append(conv_bn_relu(width_here, channels[depth - 1], 3))
            stages.append(SegNetDecoderStage(convs))
        self.stages = nn.ModuleList(stages)

    def forward(self, pooled: PooledFeatures) -> torch.Tensor:
        x = pooled.x
        for stage, indices in zip(self.stages, reversed(pooled.indices)):
            x = stage(x, indices)
        return x


class SegNet(SegmentationModel):
    def __init__(self, num_classes: int, options: SegNetOptions, in_channels: int = 3):
        super().__init__()
        self.output_stride = 2 ** len(VGG16_STAGES)
        self.encoder = SegNetEncoder(options.width, in_channels)
        self.decoder = SegNetDecoder(options.width)
        self.head = nn.Conv2d(vgg16_stage_channels(options.width)[0], num_classes, 3, padding=1)
        init_weights(self)
        if options.pretrained is not None:
            load_pretrained(self.encoder, options.pretrained)
