"""`photocrops`: many crops of scikit-image's bundled colour photos, without labels.

The real photos of `compress.data.photos` (nothing downloads), cut into `photocrops:N` crops per
split (default 256): each crop takes 20-100 % of its photo's shorter side at a random place, and
is resized to `image_size` (a square, or H x W: then the crop has that aspect ratio). Training and
calibration crops come from six photos; the validation crops come only from the two held-out photos
(`photos.HELD_OUT`), so a figure measured on them is measured on pixels no step trained or calibrated
on. Labels are `UNLABELLED`: the metric is fidelity to a reference model (top-1 agreement), the way a
user checks a network on their own images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from compress.data import DATASETS, UNLABELLED, DataConfig
from compress.data.photos import HELD_OUT, PHOTOS, photo
from compress.data.transforms import image_hw, to_shape
from compress.errors import DataError

DEFAULT_CROPS = 256
_SIDE = 448


def crops(names: list[str], count: int, size: int | tuple[int, int], seed: int) -> torch.Tensor:
    """`count` [3, H, W] crops spread evenly over the photos `names` (`size`: a square side or (H, W))."""
    th, tw = image_hw(size)
    g = torch.Generator().manual_seed(seed)
    images = [photo(n, _SIDE) for n in names]
    out = []
    for i in range(count):
        img = images[i % len(images)]
        _, h, w = img.shape
        side = min(h, w) * (0.2 + 0.8 * torch.rand((), generator=g).item())
        # the crop has the output's aspect ratio; its longer side is `side` (the square case: side x side)
        ch, cw = (int(side), int(side * tw / th)) if th >= tw else (int(side * th / tw), int(side))
        ch, cw = max(1, min(ch, h)), max(1, min(cw, w))
        y = int(torch.randint(0, h - ch + 1, (), generator=g))
        x = int(torch.randint(0, w - cw + 1, (), generator=g))
        patch = img[None, :, y : y + ch, x : x + cw]
        out.append(F.interpolate(patch, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)[0])
    return torch.stack(out).clamp(0.0, 1.0)


@DATASETS.register("photocrops")
def photocrops(arg: str, config: DataConfig) -> tuple[Dataset, Dataset, int]:
    """Unlabelled crops of the bundled photos; the validation crops come from held-out photos only."""
    try:
        count = int(arg) if arg else DEFAULT_CROPS
    except ValueError:
        count = 0
    if count < 1:
        raise DataError(f"photocrops:N takes the number of crops per split, got 'photocrops:{arg[:20]}'")
    train_names = [n for n in PHOTOS if n not in HELD_OUT]
    xt = to_shape(crops(train_names, count, config.image_size, config.seed), config.image_size, config.channels)
    xv = to_shape(crops(list(HELD_OUT), count, config.image_size, config.seed + 1), config.image_size, config.channels)
    label = torch.full
    return (
        TensorDataset(xt, label((len(xt),), UNLABELLED, dtype=torch.long)),
        TensorDataset(xv, label((len(xv),), UNLABELLED, dtype=torch.long)),
        0,
    )
