"""The base of every error segq raises on purpose, and the errors the model zoo raises.

Each layer keeps the errors it raises in its own `exceptions.py` (seg_models < workers < jobs),
all derived from `SegqError`. Only the CLI turns them into a one-line message and an exit code.
"""


class SegqError(Exception):
    """Base class: the message is shown to the user as one line."""


class SpecError(SegqError):
    """A job spec, a model option or a flag is invalid."""


class UnknownArchitecture(SpecError):
    def __init__(self, name: str, valid: list[str]):
        super().__init__(f"unknown architecture {name!r}; valid: {', '.join(valid)}")
        self.name = name


class InputShapeError(SegqError):
    """An input tensor does not fit the model."""
