"""Using a trained checkpoint: rebuild its model, preprocess exactly as in training, predict, draw."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from workers.exceptions import CheckpointError, DataError
from seg_models.registry import build_model
from workers.augment import Normalize
from workers.checkpointing import load_checkpoint
from workers.palette import colour_classes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
OVERLAY_ALPHA = 0.5


@dataclass
class TrainedModel:
    model: torch.nn.Module
    height: int
    width: int
    normalize: Normalize
    class_names: list[str]
    palette: np.ndarray  # (classes, 3) uint8
    trial: dict
    scoring: dict | None = None  # how the trial scored it (workers.checkpointing.scoring_setup)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """uint8 HxWx3 of any size -> the normalised CHW tensor at the training size."""
        resized = Image.fromarray(image).resize((self.width, self.height), Image.BILINEAR)
        return self.normalize(torch.from_numpy(np.array(resized, dtype=np.uint8))[None])[0]


def load_trained_model(checkpoint: str | Path, device: str = "cpu") -> TrainedModel:
    state = load_checkpoint(checkpoint, map_location=device)
    trial, facts = state["trial"], state["dataset"]
    model = build_model(trial["arch"], state["num_classes"], trial["model"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:  # torch lists every mismatched key on many lines
        raise CheckpointError(f"{checkpoint}: its weights do not fit its {trial['arch']} model "
                              f"({str(error).splitlines()[0].rstrip(':. ')}); use a checkpoint.pt as a trial "
                              "wrote it") from None
    model.eval().to(device)
    height, width = facts["image_size"]
    return TrainedModel(model=model, height=height, width=width, normalize=Normalize(facts["mean"], facts["std"]),
                        class_names=facts["class_names"], palette=np.asarray(facts["palette"], np.uint8),
                        trial=trial, scoring=state.get("scoring"))


def collect_images(paths: list[Path]) -> list[Path]:
    """Files as given, folders expanded to the images they hold (sorted)."""
    images = []
    for path in paths:
        if path.is_dir():
            images += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            images.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    if not images:
        raise DataError(f"no images found in {', '.join(map(str, paths))} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return images


@torch.no_grad()
def predict_classes(trained: TrainedModel, images: list[np.ndarray], device: str = "cpu") -> list[np.ndarray]:
    """Class-index maps at each image's own size (the training-size prediction, resized nearest)."""
    batch = torch.stack([trained.preprocess(image) for image in images]).to(device)
    predictions = trained.model(batch).argmax(dim=1).to(torch.uint8).cpu().numpy()
    return [
        np.asarray(Image.fromarray(prediction).resize((image.shape[1], image.shape[0]), Image.NEAREST))
        for prediction, image in zip(predictions, images)
    ]


def overlay(image: np.ndarray, colored: np.ndarray) -> np.ndarray:
    return (image * (1 - OVERLAY_ALPHA) + colored * OVERLAY_ALPHA).round().astype(np.uint8)


def write_prediction(out: Path, stem: str, image: np.ndarray, classes: np.ndarray, palette: np.ndarray,
                     raw: bool) -> list[Path]:
    colored = colour_classes(classes, palette)
    written = [out / f"{stem}_mask.png", out / f"{stem}_overlay.png"]
    Image.fromarray(colored).save(written[0])
    Image.fromarray(overlay(image, colored)).save(written[1])
    if raw:
        written.append(out / f"{stem}_classes.png")
        Image.fromarray(classes).save(written[2])
    return written


def predict_images(checkpoint: str, inputs: list[Path], out: Path, raw: bool, batch_size: int,
                   progress: Callable[[int, int], None] = lambda done, total: None) -> int:
    """`segq predict`: NAME_mask.png and NAME_overlay.png (with `raw`, also NAME_classes.png) in
    `out` for every image of `inputs` (files or folders), `batch_size` at a time; `progress(done,
    total)` after each batch. The number of images predicted."""
    from jobs.preparation.sources.images import read_rgb

    trained = load_trained_model(checkpoint)
    paths = collect_images(inputs)
    out.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(paths), batch_size):
        batch = paths[start:start + batch_size]
        images = [read_rgb(path) for path in batch]
        for path, image, classes in zip(batch, images, predict_classes(trained, images)):
            write_prediction(out, path.stem, image, classes, trained.palette, raw)
        progress(start + len(batch), len(paths))
    return len(paths)
