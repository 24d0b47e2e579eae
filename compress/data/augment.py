"""Training-time augmentation of the training split: random-resized crop and horizontal flip, through
torchvision's transforms v2 (`RandomResizedCrop`, `RandomHorizontalFlip`).

`Augmented` wraps the training split for one epoch. Sample i of epoch e is transformed under its own
seed, drawn from (training seed, e, i) only, so the augmented batches do not depend on the order in
which DataLoader workers fetch them, on the worker count, or on where a resumed run starts. Dense
tasks get the same flip on the input and the target image; a random-resized crop there is refused,
since resampling a noisy input changes its noise (see `build_augmentation`).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from compress.errors import RecipeError

AUGMENTS = ("none", "flip", "crop_flip")


def build_augmentation(
    augment: str,
    input_shape: tuple[int, int, int],
    *,
    task: str = "classification",
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    interpolation: str | None = None,
):
    """The v2 transform for `augment` on images of `input_shape` (C, H, W), or None for `none`.

    `crop_flip` crops a random area fraction in `scale` with an aspect ratio in `ratio` and resizes it
    back to (H, W), then flips half the images; `flip` only flips."""
    if augment not in AUGMENTS:
        raise RecipeError(f"augment: unknown '{str(augment)[:30]}'; available: {', '.join(AUGMENTS)}")
    if augment == "none":
        return None
    from torchvision.transforms import v2

    steps = []
    if augment == "crop_flip":
        if task != "classification":
            raise RecipeError(
                f"augment crop_flip resamples the noisy inputs of the {task} task (it changes their noise); use flip"
            )
        mode = getattr(v2.InterpolationMode, str(interpolation or "bilinear").upper())
        steps.append(
            v2.RandomResizedCrop(tuple(input_shape[1:]), scale=scale, ratio=ratio, interpolation=mode, antialias=True)
        )
    steps.append(v2.RandomHorizontalFlip(0.5))
    return v2.Compose(steps)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample `index` in `epoch` of a run with `seed` (a 63-bit mix of the three)."""
    return ((seed * 1_000_003 + epoch) * 1_000_003 + index) % (1 << 63)


class Augmented(Dataset):
    """The training split of one epoch with `transform` applied to each sample under its own seed.

    The sample's image (and, for dense tasks, its target image) is transformed; labels and sample
    indices pass through. Picklable, so it runs in DataLoader worker processes."""

    def __init__(self, base: Dataset, transform, seed: int, epoch: int) -> None:
        self.base = base
        self.transform = transform
        self.seed = seed
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        from torchvision import tv_tensors

        x, *rest = self.base[i]
        paired = bool(rest) and isinstance(rest[0], torch.Tensor) and rest[0].shape[-2:] == x.shape[-2:]
        with torch.random.fork_rng(devices=[]):  # v2 draws from the global generator; keep it untouched
            torch.manual_seed(sample_seed(self.seed, self.epoch, int(i)))
            if paired:
                x, target = self.transform(tv_tensors.Image(x), tv_tensors.Image(rest[0]))
                rest[0] = target.as_subclass(torch.Tensor)
            else:
                x = self.transform(tv_tensors.Image(x))
        return (x.as_subclass(torch.Tensor).contiguous(), *rest)
