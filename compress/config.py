"""Typed configs from plain data.

Every config is a dataclass. `from_dict` fills one from a mapping (a YAML section, CLI options) and
rejects unknown keys, wrong types and out-of-range numbers with a message that names the key and its
path in the file; `to_dict` gives the resolved config back as plain data for manifests.

Numbers are checked the same way for every command and recipe: a float must be finite, a number is
never negative (unless its field is in `SIGNED`), and the fields in `MINIMUM` and `FRACTIONS` have
their ranges. A field can also say its own range: `field(metadata={"range": (lo, hi)})`.
Messages quote at most a short prefix of a value (`compress.text.short`).
"""

from __future__ import annotations

import dataclasses
import math
import types
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from compress.errors import RecipeError
from compress.text import short

C = TypeVar("C")

SIGNED = {
    "s_init", "dim", "lambda_init", "change", "max_slowdown", "max_accuracy_drop", "max_params_increase",
    "max_macs_increase", "max_size_increase",
}  # fmt: skip
MINIMUM = {
    name: 1
    for name in (
        "batch_size", "eval_batch_size", "rounds", "n_boot", "iters", "kmeans_iters", "min_iters", "max_iters",
        "bits", "groups", "samples", "queue_size", "parity_batch", "image_size", "channels", "calib_size",
        "num_classes", "world_size", "hidden", "attention_heads", "steps_per_level", "tries", "calib_batches",
        "round_to", "checkpoint_every", "taylor_batches", "limit", "iterative_steps", "n", "m",
    )
}  # fmt: skip
MINIMUM["opset"] = 7
MAXIMUM = {"image_size": 4096, "channels": 3, "batch_size": 1 << 16, "eval_batch_size": 1 << 16}
FRACTIONS = {
    "val_fraction", "ratio", "target_macs", "target_params", "max_group_ratio", "confidence", "momentum",
    "distill_alpha", "min_area", "max_area", "sample_weight",
}  # fmt: skip


def from_dict(cls: type[C], data: Any, *, where: str = "config") -> C:
    """Build dataclass `cls` from `data`, checking keys and types.

    Args:
        cls: the dataclass type.
        data: a mapping (or None for all defaults).
        where: path of this section for error messages, e.g. "recipe.yaml: steps[2].params".
    """
    if data is None:
        data = {}
    if dataclasses.is_dataclass(data) and isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise RecipeError(f"{where}: unknown key {short(unknown[0], 40)}; allowed: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}")
        _check_range(name, kwargs[name], fields[name], f"{where}.{name}")
        kwargs[name] = _onto_default(fields[name], value, kwargs[name], f"{where}.{name}")
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise RecipeError(f"{where}: missing required key '{missing[0]}'")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise RecipeError(f"{where}: {short(str(e), 200)[1:-1]}") from None


def _onto_default(f: dataclasses.Field, given: Any, value: Any, where: str) -> Any:
    """A nested section overrides only the keys it names: the others keep the field's own default
    (a method whose training schedule differs from TrainConfig's keeps it when a recipe sets epochs)."""
    if not (isinstance(given, dict) and dataclasses.is_dataclass(value)) or f.default_factory is dataclasses.MISSING:
        return value
    base = f.default_factory()
    if type(base) is not type(value):
        return value
    try:
        return dataclasses.replace(base, **{k: getattr(value, k) for k in given})
    except (ValueError, TypeError) as e:
        raise RecipeError(f"{where}: {short(str(e), 200)[1:-1]}") from None


def _check_range(name: str, value: Any, f: dataclasses.Field, where: str) -> None:
    """Refuse a number outside its field's range (see the module docstring)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    lo, hi = f.metadata.get("range", (None, None))
    if lo is None and hi is None:
        if name in FRACTIONS:
            lo, hi = 0.0, 1.0
        elif name in MINIMUM:
            lo = MINIMUM[name]
        elif name not in SIGNED:
            lo = 0
        hi = MAXIMUM.get(name, hi)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise RecipeError(f"{where}: must be {span}, got {value}")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except RecipeError as e:
                errors.append(str(e))
        raise RecipeError(errors[0] if len(errors) == 1 else f"{where}: {short(value)} fits none of {tp}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise RecipeError(f"{where}: {short(value)} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: expected a list, got {type(value).__name__}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise RecipeError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=False)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {type(value).__name__}")
        _, vt = get_args(tp) or (str, Any)
        return {str(k): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(f"{where}: expected true or false, got {short(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise RecipeError(f"{where}: expected an integer, got {short(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise RecipeError(f"{where}: expected a finite number, got {value}")
            return float(value)
        raise RecipeError(f"{where}: expected a number, got {short(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise RecipeError(f"{where}: expected a string, got {short(value)}")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise RecipeError(f"{where}: expected {tp.__name__}, got {short(value)}")
    return value


def to_dict(config: Any) -> Any:
    """Plain-data form of a config (dataclasses, lists, tuples, dicts)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, dict):
        return {str(k): to_dict(v) for k, v in config.items()}
    return config
