"""Export a trained model to TorchScript or ONNX (fixed input size: the training size), with the
input contract embedded: what a raw image must go through before the model sees it.

The TorchScript module carries the contract as attributes (`torch.jit.load(path).mean`), the ONNX
model as metadata_props whose values are JSON strings.
"""
# No `from __future__ import annotations`: TorchScript reads ContractModule's class annotations as
# types and cannot resolve them as strings.
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List

import torch

from seg_models.exceptions import SpecError

FORMATS = ("torchscript", "onnx")
PREPROCESS = ("RGB uint8 HxWx3, resized (bilinear) to height x width; x / 255; minus mean; divided by std "
              "(per channel, R G B); CHW float32, batched as 1x3xHxW; output: logits 1xCxHxW, argmax over C")


@dataclass(frozen=True)
class InputContract:
    height: int
    width: int
    mean: list[float]
    std: list[float]
    class_names: list[str]
    palette: list[list[int]]
    preprocess: str = PREPROCESS

    def metadata(self) -> dict[str, str]:
        return {key: json.dumps(value) for key, value in asdict(self).items()}

    def describe(self) -> str:
        return (f"input contract: RGB resized (bilinear) to {self.height}x{self.width} (HxW), x/255, "
                f"(x - mean {self.mean}) / std {self.std}, CHW float32; "
                f"{len(self.class_names)} classes: {', '.join(self.class_names)}")


class ContractModule(torch.nn.Module):
    """The exported model with the contract as scripted attributes; forward is the model's."""

    height: int
    width: int
    mean: List[float]
    std: List[float]
    class_names: List[str]
    palette: List[List[int]]
    preprocess: str

    def __init__(self, model: torch.nn.Module, contract: InputContract):
        super().__init__()
        self.model = model
        for key, value in asdict(contract).items():
            setattr(self, key, value)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)


def export_model(model: torch.nn.Module, contract: InputContract, out: Path, format: str) -> Path:
    model.eval()
    example = torch.zeros(1, 3, contract.height, contract.width)
    if format == "torchscript":
        export_torchscript(model, example, contract, out)
    elif format == "onnx":
        export_onnx(model, example, contract, out)
    else:
        raise SpecError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
    return out


def export_torchscript(model: torch.nn.Module, example: torch.Tensor, contract: InputContract, out: Path) -> None:
    # Tracing copes with every architecture (scripting does not); the wrapper around the traced
    # graph is scripted so that its attributes are saved with it.
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
    torch.jit.script(ContractModule(traced, contract)).save(str(out))


def export_onnx(model: torch.nn.Module, example: torch.Tensor, contract: InputContract, out: Path) -> None:
    try:
        import onnx
    except ImportError:
        raise SpecError("--format onnx needs the onnx packages: pip install onnx onnxscript "
                        "(the `export` extra of segq)") from None
    torch.onnx.export(model, (example,), str(out), input_names=["image"], output_names=["logits"],
                      dynamo=False, opset_version=17)
    exported = onnx.load(str(out))
    onnx.helper.set_model_props(exported, contract.metadata())
    onnx.save(exported, str(out))
