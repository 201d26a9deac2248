"""Load a local torchvision-format state_dict into a backbone, strictly on the backbone's keys."""
from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from seg_models.exceptions import SpecError

# torchvision's classification heads; a segmentation backbone has none.
CLASSIFIER_PREFIXES = ("fc.", "classifier.")
LISTED_KEYS = 5


def load_pretrained(module: nn.Module, path: str | Path) -> None:
    state = read_state_dict(path)
    state = {key: value for key, value in state.items() if not key.startswith(CLASSIFIER_PREFIXES)}
    expected = module.state_dict()
    problems = [
        describe_keys("missing", sorted(set(expected) - set(state))),
        describe_keys("unexpected", sorted(set(state) - set(expected))),
        describe_keys("wrong shape", sorted(
            f"{key} {tuple(state[key].shape)} != {tuple(expected[key].shape)}"
            for key in set(state) & set(expected) if state[key].shape != expected[key].shape
        )),
    ]
    problems = [problem for problem in problems if problem]
    if problems:
        raise SpecError(
            f"pretrained weights {path} do not fit {type(module).__name__}: {'; '.join(problems)}; "
            "use a torchvision state_dict of the same backbone at width 1.0"
        )
    module.load_state_dict(state)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise SpecError(f"pretrained weights {path} not found; give the path of a local .pth file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise SpecError(f"pretrained weights {path} are not a readable state_dict: {error}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SpecError(f"pretrained weights {path} hold no state_dict (a dict of tensors)")
    return state


def describe_keys(problem: str, keys: list[str]) -> str:
    if not keys:
        return ""
    shown = ", ".join(keys[:LISTED_KEYS])
    more = f" and {len(keys) - LISTED_KEYS} more" if len(keys) > LISTED_KEYS else ""
    return f"{len(keys)} {problem} ({shown}{more})"
