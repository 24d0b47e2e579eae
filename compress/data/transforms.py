"""Shared tensor transforms and task wrappers for the data sources."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


def image_hw(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """(H, W) of an image size: one int is a square, a pair is H x W."""
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def to_shape(images: torch.Tensor, size: int | tuple[int, int], channels: int) -> torch.Tensor:
    """Resize a float [N, C, H, W] batch in [0, 1] to `size` (square, or H x W) and match the channel count."""
    hw = image_hw(size)
    if tuple(images.shape[-2:]) != hw:
        images = F.interpolate(images, size=hw, mode="bilinear", align_corners=False, antialias=True)
    if images.shape[1] == 1 and channels == 3:
        images = images.expand(-1, 3, -1, -1)
    elif images.shape[1] == 3 and channels == 1:
        images = (images * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return images.clamp(0.0, 1.0).contiguous()


def fit_image(
    image: torch.Tensor,
    size: int | tuple[int, int],
    resize: str | None,
    crop_pct: float | None,
    interpolation: str | None,
) -> torch.Tensor:
    """One [1, C, H, W] image in [0, 1] to `size` (square, or H x W): squashed, or (ImageNet evaluation)
    scaled, aspect ratio kept, until it covers size / crop_pct and the centre `size` taken. For a square
    `size` that is the usual "shorter side to size / crop_pct, then centre crop"."""
    th, tw = image_hw(size)
    mode = interpolation or "bilinear"
    kw = {"align_corners": False, "antialias": True} if mode != "nearest" else {}
    if resize != "shorter":
        if tuple(image.shape[-2:]) != (th, tw):
            image = F.interpolate(image, size=(th, tw), mode=mode, **kw)
        return image.clamp(0.0, 1.0)
    h, w = image.shape[-2:]
    pct = crop_pct or 1.0
    scale = max(round(th / pct) / h, round(tw / pct) / w)
    new = (max(th, int(round(h * scale))), max(tw, int(round(w * scale))))
    image = F.interpolate(image, size=new, mode=mode, **kw)
    top, left = (new[0] - th) // 2, (new[1] - tw) // 2
    return image[..., top : top + th, left : left + tw].clamp(0.0, 1.0)


class Normalized(Dataset):
    """A dataset whose images pass through `norm` (the model's mean/std) on the way out."""

    def __init__(self, base: Dataset, norm) -> None:
        self.base = base
        self.norm = norm

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, *rest = self.base[i]
        return (self.norm(x.unsqueeze(0))[0], *rest)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic shuffled (train, val) split of range(n)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(n * val_fraction)))
    return perm[n_val:], perm[:n_val]


class DenoisingDataset(Dataset):
    """(noisy, clean) pairs from an image dataset; the noise of sample i is fixed by (seed, i)."""

    def __init__(self, base: Dataset, sigma: float, seed: int) -> None:
        self.base = base
        self.sigma = sigma
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        clean = self.base[i][0]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        noisy = clean + self.sigma * torch.randn(clean.shape, generator=g)
        return noisy, clean
