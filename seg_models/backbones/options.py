"""Options every backbone-based architecture shares."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


class BackboneOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    width: float = Field(1.0, gt=0, le=4, description="channel multiplier of backbone and decoder")
    pretrained: str | None = Field(None, description="local torchvision state_dict of the backbone")

    @field_validator("pretrained")
    @classmethod
    def pretrained_needs_full_width(cls, pretrained: str | None, info: ValidationInfo) -> str | None:
        width = info.data.get("width", 1.0)
        if pretrained is not None and width != 1.0:
            raise ValueError(f"pretrained weights fit width 1.0 only, not {width}; "
                             "drop pretrained or set width to 1.0")
        return pretrained
