"""Shared tensor transforms and task wrappers for the data sources."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


def to_shape(images: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """Resize a float [N, C, H, W] batch in [0, 1] and match the channel count."""
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    if images.shape[1] == 1 and channels == 3:
        images = images.expand(-1, 3, -1, -1)
    elif images.shape[1] == 3 and channels == 1:
        images = (images * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return images.clamp(0.0, 1.0).contiguous()


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
