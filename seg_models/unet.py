"""U-Net (Ronneberger et al. 2015): a contracting path, an expanding path and skip connections."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from seg_models.base import SegmentationModel


class UNetOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_width: int = Field(32, ge=1, description="channels of the first level; doubles per level")
    depth: int = Field(4, ge=1, le=6, description="number of down-sampling steps")
    upsampling: Literal["transpose", "bilinear"] = "transpose"
    batch_norm: bool = True


def conv_block(in_channels: int, out_channels: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for channels_in in (in_channels, out_channels):
        layers.append(nn.Conv2d(channels_in, out_channels, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNetEncoder(nn.Module):
    def __init__(self, in_channels: int, widths: list[int], batch_norm: bool):
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.blocks = nn.ModuleList()
        for width in widths:
            self.blocks.append(conv_block(in_channels, width, batch_norm))
            in_channels = width

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, block in enumerate(self.blocks):
            x = block(x if index == 0 else self.pool(x))
            features.append(x)
        return features


class UpStep(nn.Module):
    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, upsampling: str,
                 batch_norm: bool):
        super().__init__()
        if upsampling == "transpose":
            self.up = nn.ConvTranspose2d(in_channels, skip_channels, 2, stride=2)
        else:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, skip_channels, 1),
            )
        self.block = conv_block(2 * skip_channels, out_channels, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.up(x), skip], dim=1))


class UNetDecoder(nn.Module):
    def __init__(self, widths: list[int], upsampling: str, batch_norm: bool):
        super().__init__()
        self.steps = nn.ModuleList(
            UpStep(widths[i + 1], widths[i], widths[i], upsampling, batch_norm)
            for i in reversed(range(len(widths) - 1))
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for step, skip in zip(self.steps, reversed(features[:-1])):
            x = step(x, skip)
        return x


class UNet(SegmentationModel):
    def __init__(self, num_classes: int, options: UNetOptions, in_channels: int = 3):
        super().__init__()
        widths = [options.base_width * 2**level for level in range(options.depth + 1)]
        self.output_stride = 2**options.depth
        self.encoder = UNetEncoder(in_channels, widths, options.batch_norm)
        self.decoder = UNetDecoder(widths, options.upsampling, options.batch_norm)
        self.head = nn.Conv2d(widths[0], num_classes, 1)
