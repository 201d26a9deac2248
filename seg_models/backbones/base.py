"""What every backbone offers the decoders: one feature map per stage, with its channels and stride."""
from __future__ import annotations

from torch import nn

from seg_models.exceptions import SpecError

MIN_CHANNELS = 8


def scale_channels(channels: int, width: float) -> int:
    return max(MIN_CHANNELS, int(round(channels * width)))


def check_output_stride(name: str, output_stride: int, supported: tuple[int, ...]) -> None:
    if output_stride not in supported:
        raise SpecError(
            f"{name} supports output stride {', '.join(map(str, supported))}; got {output_stride}"
        )


def init_weights(module: nn.Module) -> None:
    """torchvision's initialisation, which matters when training from scratch."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


class Backbone(nn.Module):
    """Subclasses set `stage_channels` and `stage_strides` (one entry per stage, shallow to deep)
    and return one feature map per stage from `forward`."""

    stage_channels: list[int]
    stage_strides: list[int]

    def stage_at_stride(self, stride: int) -> int:
        """Index of the deepest stage whose output has this stride."""
        matches = [index for index, s in enumerate(self.stage_strides) if s == stride]
        if not matches:
            raise SpecError(
                f"{type(self).__name__} has no stage at stride {stride}; strides: {self.stage_strides}"
            )
        return matches[-1]
