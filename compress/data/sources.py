"""The registered data sources. Nothing here downloads: data is bundled or local."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset, TensorDataset

from compress.data import DATASETS, DataConfig
from compress.data.transforms import fit_image, split_indices, to_shape
from compress.errors import DataError


@DATASETS.register("digits")
def digits(arg: str, config: DataConfig) -> tuple[Dataset, Dataset, int]:
    """scikit-learn's bundled handwritten digits (1797 real 8x8 scans, 10 classes)."""
    if arg:
        raise DataError(f"digits takes no argument, got 'digits:{arg}'")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = to_shape(images, config.image_size, config.channels)
    labels = torch.tensor(bunch.target, dtype=torch.long)
    train_idx, val_idx = split_indices(len(labels), config.val_fraction, config.seed)
    return (
        TensorDataset(images[train_idx], labels[train_idx]),
        TensorDataset(images[val_idx], labels[val_idx]),
        10,
    )


@DATASETS.register("synthetic")
def synthetic(arg: str, config: DataConfig) -> tuple[Dataset, Dataset, int]:
    """Random images and labels, `synthetic:CxHxW`, for latency-only work (accuracy is meaningless)."""
    from compress.data import check_image_size

    try:
        c, h, w = (int(v) for v in arg.lower().split("x"))
        config.image_size = check_image_size((h, w))
    except ValueError as e:
        hint = f" ({e})" if "image_size" in str(e) else ""
        raise DataError(
            f"synthetic data needs a shape like 'synthetic:3x32x32', got 'synthetic:{arg[:30]}'{hint}"
        ) from None
    config.channels = c
    g = torch.Generator().manual_seed(config.seed)
    n = config.limit or 512
    images = torch.rand(n, c, h, w, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    train_idx, val_idx = split_indices(n, config.val_fraction, config.seed)
    return (
        TensorDataset(images[train_idx], labels[train_idx]),
        TensorDataset(images[val_idx], labels[val_idx]),
        10,
    )


class _FolderImages(Dataset):
    def __init__(self, samples: list[tuple[str, int]], config: DataConfig) -> None:
        self.samples = samples
        self.size = config.image_size
        self.channels = config.channels
        self.policy = (config.resize, config.crop_pct, config.interpolation)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, UnidentifiedImageError
        from torchvision.transforms.functional import pil_to_tensor

        path, label = self.samples[i]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB" if self.channels == 3 else "L")
                x = pil_to_tensor(img).float().unsqueeze(0) / 255.0
        except (OSError, UnidentifiedImageError) as e:
            raise DataError(f"unreadable image {path}: {e}") from None
        x = fit_image(x, self.size, *self.policy)
        return to_shape(x, self.size, self.channels)[0], label


@DATASETS.register("imagefolder")
def imagefolder(arg: str, config: DataConfig) -> tuple[Dataset, Dataset, int]:
    """`imagefolder:PATH`: PATH/CLASS/*.jpg|png; or PATH/train/... and PATH/val/... if both exist.

    Labels are the model's output indices where the folder names say so (`compress.data.images`)."""
    from torchvision.datasets import ImageFolder

    root = Path(arg)
    if not arg or not root.is_dir():
        raise DataError(f"imagefolder: directory not found: '{arg}'")
    from compress.data.images import class_indices

    def labelled(folder: ImageFolder) -> tuple[list[tuple[str, int]], int]:
        index, n = class_indices(root, folder.classes)  # numeric names or classes.txt/.json: the model's
        return [(p, index[folder.classes[t]]) for p, t in folder.samples], n

    try:
        if (root / "train").is_dir() and (root / "val").is_dir():
            tr, va = ImageFolder(str(root / "train")), ImageFolder(str(root / "val"))
            if tr.classes != va.classes:
                raise DataError(f"{root}: train and val have different class folders")
            (train, n), (val, _) = labelled(tr), labelled(va)
            return _FolderImages(train, config), _FolderImages(val, config), n
        folder = ImageFolder(str(root))
    except FileNotFoundError as e:
        raise DataError(f"imagefolder:{arg}: {e}") from None
    train_idx, val_idx = split_indices(len(folder.samples), config.val_fraction, config.seed)
    samples, n = labelled(folder)
    return (
        _FolderImages([samples[i] for i in train_idx], config),
        _FolderImages([samples[i] for i in val_idx], config),
        n,
    )


@DATASETS.register("cifar10")
def cifar10(arg: str, config: DataConfig) -> tuple[Dataset, Dataset, int]:
    """`cifar10:ROOT`: torchvision's CIFAR-10 from local files; never downloads."""
    from torchvision.datasets import CIFAR10

    root = Path(arg or ".")
    try:
        train = CIFAR10(str(root), train=True, download=False)
        val = CIFAR10(str(root), train=False, download=False)
    except RuntimeError:
        raise DataError(
            f"cifar10: no dataset under '{root}'; download 'cifar-10-python.tar.gz' yourself and extract it so "
            f"that '{root / 'cifar-10-batches-py'}' exists (compress never downloads)"
        ) from None

    def tensors(ds: CIFAR10) -> TensorDataset:
        x = torch.tensor(ds.data).permute(0, 3, 1, 2).float() / 255.0
        return TensorDataset(to_shape(x, config.image_size, config.channels), torch.tensor(ds.targets))

    return tensors(train), tensors(val), 10
