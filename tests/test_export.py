"""`segq export` on a checkpoint built by hand: the exported files carry the input contract, and a
raw image preprocessed as the printed contract says gives `segq predict`'s classes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cluster.cli.models import models_app
from jobs.checkpoints.inference import load_trained_model, predict_classes
from seg_models.registry import build_model

HEIGHT, WIDTH = 32, 48
# Not round numbers, so a contract that rounded them would show.
MEAN = [0.4812345678901234, 0.456, 0.406]
STD = [0.2291234567, 0.224, 0.225]
CLASS_NAMES = ["background", "cat", "dog"]
PALETTE = [[0, 0, 0], [200, 30, 40], [20, 210, 60]]
UNET = {"base_width": 8, "depth": 3}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint with the entries `load_trained_model` reads, around an initialised U-Net."""
    torch.manual_seed(0)
    model = build_model("unet", len(CLASS_NAMES), UNET)
    calibrate_batch_norm(model)
    path = tmp_path_factory.mktemp("trial") / "checkpoint.pt"
    torch.save({
        "format": "segq-checkpoint",
        "model": model.state_dict(),
        "trial": {"arch": "unet", "model": UNET},
        "num_classes": len(CLASS_NAMES),
        "dataset": {"image_size": [HEIGHT, WIDTH], "class_names": CLASS_NAMES, "palette": PALETTE,
                    "mean": MEAN, "std": STD, "ignore_index": 255},
    }, path)
    return path


def calibrate_batch_norm(model: torch.nn.Module) -> None:
    """Batch-norm statistics of random batches: with the initial ones (0 and 1) the head's bias
    outweighs the image and every pixel gets the same class."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a plain average over the batches
    with torch.no_grad():
        for _ in range(5):
            model.train()(torch.randn(4, 3, HEIGHT, WIDTH))


def export(checkpoint, target, format: str) -> list[str]:
    result = CliRunner().invoke(models_app, ["export", str(checkpoint), "--format", format, "--out", str(target)])
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()


def raw_image() -> np.ndarray:
    """uint8 RGB at a size other than the training size, so the resize is part of the contract."""
    return np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)


def preprocess_by_contract(image: np.ndarray, height: int, width: int, mean: list[float],
                           std: list[float]) -> torch.Tensor:
    resized = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    scaled = (resized.astype(np.float32) / 255 - np.float32(mean)) / np.float32(std)
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1)))[None]


def test_torchscript_carries_the_contract_as_attributes(checkpoint, tmp_path):
    target = tmp_path / "model.torchscript.pt"
    export(checkpoint, target, "torchscript")
    module = torch.jit.load(str(target))
    assert (module.height, module.width) == (HEIGHT, WIDTH)
    assert list(module.mean) == MEAN and list(module.std) == STD
    assert list(module.class_names) == CLASS_NAMES
    assert [list(colour) for colour in module.palette] == PALETTE
    assert "x / 255" in module.preprocess


def test_the_command_prints_the_contract(checkpoint, tmp_path):
    lines = export(checkpoint, tmp_path / "model.torchscript.pt", "torchscript")
    assert len(lines) == 2
    assert lines[0].endswith(f"(input 1x3x{HEIGHT}x{WIDTH}, 3 classes)")
    assert f"to {HEIGHT}x{WIDTH} (HxW), x/255, (x - mean {MEAN}) / std {STD}, CHW float32" in lines[1]
    assert lines[1].endswith("3 classes: background, cat, dog")


def test_raw_image_preprocessed_by_the_contract_gives_the_predicted_classes(checkpoint, tmp_path):
    target = tmp_path / "model.torchscript.pt"
    export(checkpoint, target, "torchscript")
    module = torch.jit.load(str(target))
    image = raw_image()
    with torch.no_grad():
        logits = module(preprocess_by_contract(image, module.height, module.width, module.mean, module.std))
    classes = logits.argmax(dim=1)[0].to(torch.uint8).numpy()
    # predict answers at the image's own size: its training-size prediction resized nearest
    at_image_size = np.asarray(Image.fromarray(classes).resize((image.shape[1], image.shape[0]), Image.NEAREST))

    predicted = predict_classes(load_trained_model(checkpoint), [image])[0]
    assert len(np.unique(predicted)) > 1  # a constant map would agree by accident
    np.testing.assert_array_equal(at_image_size, predicted)


def test_onnx_carries_the_contract_as_metadata(checkpoint, tmp_path):
    import onnx
    import onnxruntime

    target = tmp_path / "model.onnx"
    export(checkpoint, target, "onnx")
    props = {entry.key: json.loads(entry.value) for entry in onnx.load(str(target)).metadata_props}
    assert props["height"] == HEIGHT and props["width"] == WIDTH
    assert props["mean"] == MEAN and props["std"] == STD
    assert props["class_names"] == CLASS_NAMES and props["palette"] == PALETTE
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    assert json.loads(session.get_modelmeta().custom_metadata_map["mean"]) == MEAN
