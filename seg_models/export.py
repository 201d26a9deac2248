"""Export a trained model to TorchScript or ONNX (fixed input size: the training size)."""
from __future__ import annotations

from pathlib import Path

import torch

from cluster.exceptions import SpecError

FORMATS = ("torchscript", "onnx")


def export_model(model: torch.nn.Module, example: torch.Tensor, out: Path, format: str) -> Path:
    model.eval()
    if format == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(model, example)
        traced.save(str(out))
    elif format == "onnx":
        try:
            import onnx  # noqa: F401  (the exporter needs it; say so plainly if it is missing)
        except ImportError:
            raise SpecError("--format onnx needs the onnx packages: pip install onnx onnxscript (the `export` extra of segq)") from None
        torch.onnx.export(model, (example,), str(out), input_names=["image"], output_names=["logits"],
                          dynamo=False, opset_version=17)
    else:
        raise SpecError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
    return out
