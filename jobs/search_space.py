"""The search-space vocabulary of a spec, in one place: how each space is written and checked,
drawn for grid and random search, and handed to Ray Tune (PBT's mutations) and to Optuna.

    {grid: [a, b]}            an axis of the cartesian product (a list to pick from elsewhere)
    {choice: [a, b]}          one of the list
    {uniform: [low, high]}    a float in [low, high]
    {loguniform: [low, high]} a float in [low, high], uniform in log space (0 < low)
    {randint: [low, high]}    an integer in [low, high): high is exclusive, as in Ray Tune
    {quniform: [low, high, q]} a multiple of q in [low, high]
"""
from __future__ import annotations

import math
import random
from typing import Any

from seg_models.exceptions import SpecError

SPACES = ("grid", "choice", "uniform", "loguniform", "randint", "quniform")
LISTS = ("grid", "choice")  # the spaces that are lists of values


def is_multiple(value: float, q: float) -> bool:
    return math.isclose(value / q, round(value / q), abs_tol=1e-9)


# kind: (arity, integers only, what its arguments must be, the check); the rules are Ray Tune's
BOUNDED = {
    "uniform": (2, False, "[low, high] with low < high", lambda low, high: low < high),
    "loguniform": (2, False, "0 < low < high", lambda low, high: 0 < low < high),
    "randint": (2, True, "integers [low, high] with low < high (high is exclusive)", lambda low, high: low < high),
    "quniform": (3, False, "[low, high, q] with low < high, q > 0 and low, high multiples of q",
                 lambda low, high, q: low < high and q > 0 and is_multiple(low, q) and is_multiple(high, q)),
}


def search_kind(name: str, value: Any) -> str | None:
    """The search space a value is written as (`{loguniform: [1e-4, 1e-2]}`), None for a plain value."""
    if not (isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value)), str)):
        return None
    kind = next(iter(value))
    if kind not in SPACES:
        raise SpecError(f"{name}: unknown search space {kind!r}; valid: {', '.join(SPACES)}")
    return kind


def is_number(value: Any, integer: bool) -> bool:
    return isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)


def check_space(name: str, kind: str, args: Any) -> list:
    """The space's arguments, checked; an error names the field and says what they must be."""
    if kind in LISTS:
        if not isinstance(args, list) or not args:
            raise SpecError(f"{name}: {kind} must be a non-empty list")
        return args
    arity, integer, rule, holds = BOUNDED[kind]
    if not (isinstance(args, list) and len(args) == arity and all(is_number(a, integer) for a in args)
            and holds(*args)):
        raise SpecError(f"{name}: {kind} needs {rule} (got {args!r})")
    return args


def sample_space(kind: str, args: list, rng: random.Random) -> Any:
    """One draw, as Ray Tune's `tune.<kind>` would make it (full precision, no rounding)."""
    if kind in LISTS:
        return rng.choice(args)
    if kind == "randint":
        return rng.randrange(args[0], args[1])
    if kind == "uniform":
        return rng.uniform(args[0], args[1])
    if kind == "loguniform":
        low, high = args
        # exp(log(high)) can land one ulp outside the bounds
        return min(max(math.exp(rng.uniform(math.log(low), math.log(high))), low), high)
    low, high, q = args
    steps = round(rng.uniform(low, high) / q)
    # all-integer bounds give integers, so that e.g. batch_size: {quniform: [8, 64, 8]} stays an int
    return steps * q if all(isinstance(a, int) for a in args) else float(steps * q)


def bounds(kind: str, args: list) -> tuple[Any, Any]:
    """The lowest and highest value a bounded space can take (randint's high is exclusive)."""
    return args[0], args[1] - 1 if kind == "randint" else args[1]


def within_space(value: float, kind: str, args: list) -> float:
    """`value` brought back into a bounded space: a multiple of q for quniform, within its bounds,
    an integer where the space's values are integers."""
    low, high = bounds(kind, args)
    if kind == "quniform":
        value = round(value / args[2]) * args[2]
    value = min(max(value, low), high)
    return int(round(value)) if kind == "randint" or all(isinstance(a, int) for a in args) else float(value)


def tune_domain(kind: str, args: list):
    """The space as Ray Tune writes it: a list for grid and choice, else `tune.<kind>(*args)`."""
    if kind in LISTS:
        return list(args)
    from ray import tune

    return getattr(tune, kind)(*args)


def optuna_suggest(trial, name: str, kind: str, args: list):
    """One value of the space, suggested by an Optuna trial."""
    if kind in LISTS:
        return trial.suggest_categorical(name, args)
    if kind == "randint":
        low, high = bounds(kind, args)
        return trial.suggest_int(name, low, high)
    if kind == "quniform":
        return trial.suggest_float(name, args[0], args[1], step=args[2])
    return trial.suggest_float(name, args[0], args[1], log=kind == "loguniform")

