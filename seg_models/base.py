"""The one base every architecture shares: encoder, then decoder, then head, then resize to input."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seg_models.exceptions import InputShapeError


def check_input_shape(x: torch.Tensor, output_stride: int) -> None:
    if x.ndim != 4:
        raise InputShapeError(f"expected NCHW input, got a tensor of shape {tuple(x.shape)}")
    height, width = x.shape[-2:]
    for name, size in (("height", height), ("width", width)):
        if size % output_stride:
            fixed = (size // output_stride + 1) * output_stride
            raise InputShapeError(
                f"{name} {size} is not divisible by output stride {output_stride}; "
                f"pad or resize to {fixed}"
            )


class SegmentationModel(nn.Module):
    """Subclasses set `encoder`, `decoder`, `head` and `output_stride`; an optional `aux_head`
    reads the encoder features and is used only in training (its logits are returned second)."""

    output_stride: int = 1

    def __init__(self):
        super().__init__()
        # An instance attribute, not a class-level None: that would hide a module registered later.
        self.aux_head: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        check_input_shape(x, self.output_stride)
        features = self.encoder(x)
        logits = self._resize(self.head(self.decoder(features)), x)
        if self.training and self.aux_head is not None:
            return logits, self._resize(self.aux_head(features), x)
        return logits

    @staticmethod
    def _resize(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if logits.shape[-2:] == x.shape[-2:]:
            return logits
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def split_outputs(output: torch.Tensor | tuple[torch.Tensor, torch.Tensor]):
    """(logits, aux_logits or None) from whatever a model's forward returned."""
    if isinstance(output, tuple):
        return output[0], output[1]
    return output, None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
