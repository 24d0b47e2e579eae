"""A network's preprocessing: how a photo becomes the tensor it was trained on.

    {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "input_size": [3, 224, 224],
     "resize": "shorter", "crop_pct": 0.875, "interpolation": "bicubic"}

`resize: shorter` is the ImageNet evaluation convention: scale the shorter side to
`size / crop_pct`, then take the centre `size` x `size` crop; `squash` resizes to the square directly.
Sources fill it in where they know it (timm's `pretrained_cfg`, torchvision's weight metadata); the
user overrides any field; it is stored in the checkpoint and manifest, shown by `info`, and applied
by every command that feeds data. {} means plain [0, 1] images.
"""

from __future__ import annotations

import math
from typing import Any

from compress.errors import DataError

FIELDS = ("mean", "std", "input_size", "resize", "crop_pct", "interpolation")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


def resolve_preprocessing(known: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """`known` updated by the user's `overrides`, checked field by field."""
    prep = {k: v for k, v in dict(known or {}).items() if k in FIELDS}
    for key, value in (overrides or {}).items():
        if key not in FIELDS:
            raise DataError(f"preprocessing: unknown key '{str(key)[:30]}'; allowed: {', '.join(FIELDS)}")
        if value is not None:
            prep[key] = value
    for key in ("mean", "std"):
        if key in prep:
            values = prep[key]
            ok = isinstance(values, (list, tuple)) and len(values) in (1, 3)
            ok = ok and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
            if not ok or (key == "std" and min(values) <= 0):
                raise DataError(f"preprocessing.{key}: expected 1 or 3 finite numbers{' > 0' if key == 'std' else ''}")
            prep[key] = [float(v) for v in values]
    if "input_size" in prep:
        size = prep["input_size"]
        ok = isinstance(size, (list, tuple)) and len(size) == 3
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in size)
        if not ok or size[0] not in (1, 3) or not all(4 <= v <= 4096 for v in size[1:]):
            raise DataError("preprocessing.input_size: expected [C, H, W] with C 1 or 3 and H, W between 4 and 4096")
        prep["input_size"] = [int(v) for v in size]
    if "crop_pct" in prep and not (isinstance(prep["crop_pct"], (int, float)) and 0 < prep["crop_pct"] <= 1):
        raise DataError("preprocessing.crop_pct: expected a fraction in (0, 1]")
    if prep.get("resize", "squash") not in ("shorter", "squash"):
        raise DataError("preprocessing.resize: expected 'shorter' or 'squash'")
    if prep.get("interpolation", "bilinear") not in INTERPOLATIONS:
        prep["interpolation"] = "bilinear"
    return prep


def normalizer(prep: dict[str, Any]):
    """A function that maps a batch of [0, 1] images to the network's input, or None when there is none."""
    if not prep.get("mean"):
        return None
    return Normalize(prep["mean"], prep["std"])


class Normalize:
    """(x - mean) / std over a [N, C, H, W] batch; a plain object, so datasets holding it pickle into
    DataLoader worker processes."""

    def __init__(self, mean, std) -> None:
        import torch

        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def __call__(self, x):
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def describe_preprocessing(prep: dict[str, Any]) -> str:
    """One line for `info`: 'mean [..] std [..]; shorter side 256 -> centre 224 (bicubic)'."""
    if not prep:
        return "none (plain [0, 1] images)"
    parts = []
    if prep.get("mean"):
        parts.append(f"mean {[round(v, 3) for v in prep['mean']]} std {[round(v, 3) for v in prep['std']]}")
    h, w = (prep.get("input_size") or [None, None, None])[-2:]
    pct = prep.get("crop_pct", 1.0)
    if prep.get("resize") == "shorter" and h and h == w:
        parts.append(f"shorter side {round(h / pct)} -> centre {h}")
    elif prep.get("resize") == "shorter" and h:
        parts.append(f"scaled to cover {round(h / pct)}x{round(w / pct)} -> centre {h}x{w}")
    elif h:
        parts.append(f"resize to {h}x{w}")
    if prep.get("interpolation"):
        parts.append(str(prep["interpolation"]))
    return "; ".join(parts)


def preprocessing_of_file(path) -> dict[str, Any]:
    """What the inputs of a deployed file need: an ONNX file's `compress.preprocessing` metadata, less
    the mean/std when they are baked into its graph; {} for anything else."""
    from pathlib import Path

    if Path(path).suffix != ".onnx":
        return {}
    from compress.export.onnx import read_preprocessing

    prep = dict(read_preprocessing(path))
    if prep.pop("baked", False):
        prep.pop("mean", None)
        prep.pop("std", None)
    return prep
