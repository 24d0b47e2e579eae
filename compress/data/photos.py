"""`photos`: the colour photographs bundled with scikit-image, for the dense image-to-image task.

Eight real colour photos ship inside the scikit-image package (`skimage.data`; nothing is
downloaded). Each is resized so its shorter side is SIDE pixels (`photos:SIDE`, default 256), then:
  * the training split is every `image_size` patch (square, or H x W) of the six training photos on a
    grid with a stride of half a patch;
  * the validation split holds out two whole photos (`HELD_OUT`): none of their pixels is trained on,
    and their patches tile each photo exactly once (non-overlapping; a last row and column aligned to
    the far edge), so the validation PSNR is measured over the whole held-out photos.
`held_out_photos` gives the held-out photos themselves, uncut, for whole-image evaluation of a fully
convolutional model. The source has no labels: it serves `--task denoising` only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from compress.data import DATASETS, DataConfig
from compress.data.transforms import image_hw, to_shape
from compress.errors import DataError, MissingDependencyError

# name -> how to get the (H, W, 3) uint8 array from skimage.data
PHOTOS = (
    "astronaut",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "motorcycle",
    "chelsea",
    "coffee",
)
HELD_OUT = ("chelsea", "coffee")
DEFAULT_SIDE = 256


def _load(name: str):
    try:
        from skimage import data
    except ImportError:
        raise MissingDependencyError(
            "the photos source needs scikit-image (pip install scikit-image); it bundles the photos"
        ) from None
    if name == "motorcycle":
        return data.stereo_motorcycle()[0]
    return getattr(data, name)()


def photo(name: str, side: int = DEFAULT_SIDE) -> torch.Tensor:
    """One bundled photo as a [3, H, W] float tensor in [0, 1], its shorter side `side` pixels."""
    x = torch.from_numpy(_load(name)[..., :3].copy()).permute(2, 0, 1).float().div(255.0)[None]
    h, w = x.shape[-2:]
    size = (side, max(side, round(w * side / h))) if h <= w else (max(side, round(h * side / w)), side)
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0.0, 1.0)[0]


def _starts(length: int, patch: int, stride: int) -> list[int]:
    """Patch offsets along one axis, the last one aligned to the far edge so every pixel is covered."""
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


def patches(image: torch.Tensor, patch: int | tuple[int, int], stride: int | tuple[int, int]) -> torch.Tensor:
    """[N, C, PH, PW] patches of a [C, H, W] image on a grid with the given stride (ints: square)."""
    _, h, w = image.shape
    (ph, pw), (sh, sw) = image_hw(patch), image_hw(stride)
    return torch.stack([image[:, y : y + ph, x : x + pw] for y in _starts(h, ph, sh) for x in _starts(w, pw, sw)])


def _side(arg: str) -> int:
    if not arg:
        return DEFAULT_SIDE
    try:
        side = int(arg)
    except ValueError:
        side = 0
    if side < 16:
        raise DataError(f"photos:SIDE takes the shorter side in pixels (at least 16), got 'photos:{arg}'")
    return side


def held_out_photos(config: DataConfig, arg: str = "") -> list[torch.Tensor]:
    """The held-out photos, whole, as [C, H, W] tensors shaped by `config.channels`."""
    side = _side(arg)
    photos = [photo(n, side) for n in HELD_OUT]
    if config.channels == 3:
        return photos
    return [(x * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True) for x in photos]


@DATASETS.register("photos")
def photos(arg: str, config: DataConfig) -> tuple[Dataset, Dataset, int]:
    """Patches of scikit-image's bundled colour photos; two whole photos held out (see module docstring)."""
    if config.task == "classification":
        raise DataError("the photos source has no labels; use it with --task denoising")
    side = _side(arg)
    size = config.image_size
    ph, pw = image_hw(size)
    if max(ph, pw) > side:
        raise DataError(
            f"photos:{side}: patches of {max(ph, pw)} px do not fit photos {side} px high; lower --image-size"
        )
    half = (max(1, ph // 2), max(1, pw // 2))
    train = [patches(photo(n, side), size, half) for n in PHOTOS if n not in HELD_OUT]
    val = [patches(photo(n, side), size, size) for n in HELD_OUT]
    xt = to_shape(torch.cat(train), size, config.channels)
    xv = to_shape(torch.cat(val), size, config.channels)
    zeros = torch.zeros
    return TensorDataset(xt, zeros(len(xt), dtype=torch.long)), TensorDataset(xv, zeros(len(xv), dtype=torch.long)), 0
