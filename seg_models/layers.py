"""Small building blocks the decoders share."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1,
                 dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2 * dilation,
                  dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def resize_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=False)


class PooledBranch(nn.Module):
    """Average-pool to `bins` x `bins`, project, and spread back over the input's size
    (ASPP's image pooling at bins=1, a PSPNet pyramid level otherwise). Its BatchNorm sees
    batch x bins^2 values per channel, so bins=1 needs a batch of 2 or more in training."""

    def __init__(self, in_channels: int, out_channels: int, bins: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(bins)
        self.project = conv_bn_relu(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_to(self.project(self.pool(x)), x)


class ClassifierHead(nn.Sequential):
    """torchvision's FCNHead: 3x3 conv to `hidden` channels, BN, ReLU, dropout, 1x1 to classes."""

    def __init__(self, in_channels: int, hidden: int, num_classes: int, dropout: float = 0.1):
        super().__init__(
            conv_bn_relu(in_channels, hidden, 3),
            nn.Dropout(dropout),
            nn.Conv2d(hidden, num_classes, 1),
        )
