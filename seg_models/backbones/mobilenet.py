"""MobileNetV2 with torchvision's `features` layout and DeepLab's dilation for output stride 8/16."""
from __future__ import annotations

import torch
from torch import nn

from seg_models.backbones.base import Backbone, check_output_stride, init_weights

# expansion t, channels c, repeats n, stride s (Sandler et al. 2018, table 2)
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# Index in `features` of the last layer of each stage (strides 2, 4, 8, 16, 32 undilated).
STAGE_ENDS = (1, 3, 6, 13, 18)


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's rounding: nearest multiple of `divisor`, never more than 10% below `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def conv_bn_relu6(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                  groups: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = (kernel_size - 1) // 2 * dilation
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation,
                  groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int,
                 dilation: int = 1):
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_relu6(in_channels, hidden, kernel_size=1))
        layers += [
            conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden, dilation=dilation),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(Backbone):
    def __init__(self, width: float = 1.0, output_stride: int = 32, in_channels: int = 3):
        super().__init__()
        check_output_stride("mobilenet_v2", output_stride, (8, 16, 32))
        channels = make_divisible(32 * width)
        layers: list[nn.Module] = [conv_bn_relu6(in_channels, channels, stride=2)]
        current_stride, dilation = 2, 1
        layer_channels, layer_strides = [channels], [current_stride]
        for expand_ratio, base_channels, repeats, first_stride in INVERTED_RESIDUAL_SETTING:
            out_channels = make_divisible(base_channels * width)
            previous_dilation = dilation
            if first_stride > 1 and current_stride == output_stride:
                # Past the output stride a stride-2 block keeps the resolution and dilates
                # what follows instead; the block itself still sees the old dilation.
                dilation *= first_stride
                first_stride = 1
            current_stride *= first_stride
            for repeat in range(repeats):
                stride = first_stride if repeat == 0 else 1
                block_dilation = previous_dilation if repeat == 0 else dilation
                layers.append(InvertedResidual(channels, out_channels, stride, expand_ratio,
                                               block_dilation))
                channels = out_channels
                layer_channels.append(channels)
                layer_strides.append(current_stride)
        last_channels = make_divisible(1280 * max(1.0, width))
        layers.append(conv_bn_relu6(channels, last_channels, kernel_size=1))
        layer_channels.append(last_channels)
        layer_strides.append(current_stride)
        self.features = nn.Sequential(*layers)

        self.stage_channels = [layer_channels[end] for end in STAGE_ENDS]
        self.stage_strides = [layer_strides[end] for end in STAGE_ENDS]
        init_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in STAGE_ENDS:
                features.append(x)
        return features


def mobilenet_v2(width: float = 1.0, output_stride: int = 32, in_channels: int = 3) -> MobileNetV2:
    return MobileNetV2(width, output_stride, in_channels)
