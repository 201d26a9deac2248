"""ResNet-18/34/50/101 with torchvision's state_dict layout (without `fc`) and optional dilation."""
from __future__ import annotations

import torch
from torch import nn

from seg_models.backbones.base import Backbone, check_output_stride, init_weights, scale_channels

# Which of layer2, layer3, layer4 trade their stride for dilation, as torchvision's
# `replace_stride_with_dilation`, to reach each output stride.
DILATED_LAYERS = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation,
                     dilation=dilation, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, dilation: int = 1):
        super().__init__()
        # Unlike torchvision, dilation is allowed here so resnet18/34 can serve DeepLab and PSPNet.
        self.conv1 = conv3x3(in_channels, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet v1.5: the stride sits on the 3x3 convolution."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, dilation: int = 1):
        super().__init__()
        self.conv1 = conv1x1(in_channels, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(Backbone):
    """Stages: the stem (conv1, bn1, relu) at stride 2, then layer1..layer4."""

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: tuple[int, int, int, int],
                 width: float = 1.0, output_stride: int = 32, in_channels: int = 3):
        super().__init__()
        check_output_stride(f"resnet with {block.__name__}", output_stride, tuple(DILATED_LAYERS))
        planes = [scale_channels(p, width) for p in (64, 128, 256, 512)]
        self._in_channels = planes[0]
        self._dilation = 1

        self.conv1 = nn.Conv2d(in_channels, planes[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        dilate = DILATED_LAYERS[output_stride]
        self.layer1 = self._make_layer(block, planes[0], layers[0])
        self.layer2 = self._make_layer(block, planes[1], layers[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(block, planes[2], layers[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(block, planes[3], layers[3], stride=2, dilate=dilate[2])

        self.stage_channels = [planes[0]] + [p * block.expansion for p in planes]
        self.stage_strides = [2, 4] + [min(stride, output_stride) for stride in (8, 16, 32)]
        init_weights(self)

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int,
                    stride: int = 1, dilate: bool = False) -> nn.Sequential:
        previous_dilation = self._dilation
        if dilate:
            self._dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self._in_channels != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self._in_channels, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self._in_channels, planes, stride, downsample, previous_dilation)]
        self._in_channels = planes * block.expansion
        layers += [block(self._in_channels, planes, dilation=self._dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        features = [stem]
        x = self.maxpool(stem)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features


def resnet18(width: float = 1.0, output_stride: int = 32, in_channels: int = 3) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), width, output_stride, in_channels)


def resnet34(width: float = 1.0, output_stride: int = 32, in_channels: int = 3) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), width, output_stride, in_channels)


def resnet50(width: float = 1.0, output_stride: int = 32, in_channels: int = 3) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), width, output_stride, in_channels)


def resnet101(width: float = 1.0, output_stride: int = 32, in_channels: int = 3) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 23, 3), width, output_stride, in_channels)
