"""Model commands: `segq models`, `segq predict`, `segq export`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cluster.cli.context import console, err

models_app = typer.Typer()


@models_app.command()
def models(num_classes: int = typer.Option(19, help="classes of the head, for the parameter counts")) -> None:
    """List architectures x backbones with parameter counts and output strides."""
    from rich.table import Table

    from seg_models.base import count_parameters
    from seg_models.registry import ARCHITECTURES, build_model

    table = Table(title=f"segq models ({num_classes} classes; width 1.0, other options at their defaults)")
    for column in ("architecture", "backbone", "parameters", "output stride", "description"):
        table.add_column(column, justify="right" if column in ("parameters", "output stride") else "left")
    for name, architecture in sorted(ARCHITECTURES.items()):
        for index, backbone in enumerate(backbone_choices(architecture.options) or [None]):
            model = build_model(name, num_classes, {"backbone": backbone} if backbone else {})
            table.add_row(name if index == 0 else "", backbone or "-", f"{count_parameters(model):,}",
                          str(model.output_stride), architecture.summary if index == 0 else "")
    console.print(table)


def backbone_choices(options_model) -> list[str]:
    from typing import get_args

    field = options_model.model_fields.get("backbone")
    return list(get_args(field.annotation)) if field else []


@models_app.command()
def predict(
    checkpoint: str = typer.Argument(..., help="checkpoint.pt or the checkpoint folder, a path or an s3:// or "
                                               "gs:// URI (best_checkpoint in `segq summary`)"),
    inputs: List[Path] = typer.Argument(..., help="images or folders of images"),
    out: Path = typer.Option(..., "--out", help="folder for NAME_mask.png and NAME_overlay.png"),
    raw: bool = typer.Option(False, "--raw", help="also write NAME_classes.png (class index per pixel)"),
    batch_size: int = typer.Option(8, "--batch-size"),
) -> None:
    """Colourised masks and overlays for images, preprocessed exactly as in training."""
    from rich.progress import Progress

    from jobs.checkpoints.inference import predict_images

    with Progress(console=err, transient=True) as progress:
        bar = progress.add_task("predicting", total=None)
        written = predict_images(checkpoint, inputs, out, raw, batch_size,
                                 lambda done, total: progress.update(bar, completed=done, total=total))
    console.print(f"wrote {written} prediction(s) to {out}")


@models_app.command()
def export(
    checkpoint: str = typer.Argument(..., help="checkpoint.pt or the checkpoint folder, a path or an s3:// or "
                                               "gs:// URI"),
    format: str = typer.Option("torchscript", "--format", help="torchscript or onnx"),
    out: Optional[Path] = typer.Option(None, "--out", help="output file (default: next to the checkpoint)"),
) -> None:
    """Export a trained model for inference without segq (input: 1x3xHxW at the training size,
    normalised with the dataset's mean/std), with that input contract embedded and printed."""
    from seg_models.export import export_model
    from workers.checkpointing import checkpoint_file
    from workers.exceptions import CheckpointError
    from workers.storage import is_uri
    from jobs.checkpoints.inference import load_trained_model

    trained = load_trained_model(checkpoint)
    contract = input_contract(checkpoint)
    suffix = {"torchscript": ".torchscript.pt", "onnx": ".onnx"}.get(format, "")
    if out is None and is_uri(checkpoint):
        raise CheckpointError(f"{checkpoint}: a checkpoint on storage has no local folder to export next to; "
                              "give --out FILE")
    target = out or checkpoint_file(checkpoint).with_name(f"model{suffix}")
    export_model(trained.model, contract, target, format)
    # Plain text: the contract's lists would otherwise be read as rich markup or wrapped.
    for line in (f"wrote {target} (input 1x3x{contract.height}x{contract.width}, {len(contract.class_names)} classes)",
                 contract.describe()):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def input_contract(checkpoint: str):
    """The preprocessing the checkpoint's model was trained with, from the dataset facts it stores
    (the exact mean/std, where the loaded model keeps only their float32 copies)."""
    from seg_models.export import InputContract
    from workers.checkpointing import load_checkpoint

    facts = load_checkpoint(checkpoint)["dataset"]
    height, width = facts["image_size"]
    return InputContract(height=int(height), width=int(width), mean=[float(v) for v in facts["mean"]],
                         std=[float(v) for v in facts["std"]], class_names=[str(n) for n in facts["class_names"]],
                         palette=[[int(c) for c in colour] for colour in facts["palette"]])
