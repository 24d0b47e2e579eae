"""Data sources behind one registry, all yielding (input, target) pairs of float tensors in [0, 1].

A spec is `NAME` or `NAME:ARG`: `digits`, `imagefolder:PATH`, `cifar10:ROOT`, `synthetic:3x32x32`.
The task (`classification`, `denoising`) is chosen in `DataConfig`; a dense task turns any image
source into (noisy, clean) pairs, so every source serves every task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from compress.errors import DataError
from compress.registry import Registry


@dataclass
class DataConfig:
    """Which data, shaped how.

    Attributes:
        name: dataset spec (see module docstring).
        task: what the model learns: class labels, or clean images from noisy ones.
        image_size: images are resized to image_size x image_size, or to H x W for a pair [H, W]
            (each side 4..4096; a pair of equal sides is kept as the one int).
        channels: 1 (grey) or 3 (grey replicated / RGB).
        val_fraction: share of samples held out for evaluation (deterministic split).
        calib_size: calibration samples, drawn from the training split.
        noise_sigma: Gaussian noise level for the denoising task (on [0, 1] images).
        limit: keep at most this many samples per split (fast experiments).
        seed: the split and the noise depend on it only.
        resize / crop_pct / interpolation: how a photo becomes `image_size` (squash, or scale and
            centre-crop: `compress.data.transforms.fit_image`); None: the model's preprocessing, else squash.
        workers: DataLoader worker processes that read and decode the samples (0: in the main process).
            Worth it for `imagefolder:` and `images:`, whose samples are decoded from files; the order of
            the batches and every random draw stay the same whatever the count.
    """

    name: str = "digits"
    task: Literal["classification", "denoising"] = "classification"
    image_size: int | tuple[int, ...] = 32
    channels: int = 3
    val_fraction: float = 0.2
    calib_size: int = 256
    noise_sigma: float = 0.2
    limit: int | None = None
    seed: int = 0
    resize: Literal["squash", "shorter"] | None = None
    crop_pct: float | None = None
    interpolation: Literal["nearest", "bilinear", "bicubic"] | None = None
    workers: int = field(default=0, metadata={"range": (0, 64)})

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")
        if self.calib_size < 1:
            raise ValueError(f"calib_size must be at least 1, got {self.calib_size}")
        self.image_size = check_image_size(self.image_size)
        if self.crop_pct is not None and not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")


MAX_SIDE = 4096


def check_image_size(size) -> int | tuple[int, int]:
    """`size` as one int (a square) or an (H, W) pair, each side 4..4096; ValueError (one line) if not.

    A pair of equal sides becomes the int, so a square is spelled one way in manifests."""
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(v) for v in size):
        h, w = int(size[0]), int(size[1])
        sides = (h, w)
    elif _is_int(size):
        h = w = int(size)
        sides = (h,)
    else:
        raise ValueError(f"image_size: expected one size or [H, W], got {str(size)[:40]}")
    for side in sides:
        if not 4 <= side <= MAX_SIDE:
            raise ValueError(f"image_size: each side must be between 4 and {MAX_SIDE}, got {str(side)[:20]}")
    return h if h == w else (h, w)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass
class DataBundle:
    """The splits of one dataset, ready for a DataLoader."""

    train: torch.utils.data.Dataset  # noqa: F821
    val: torch.utils.data.Dataset  # noqa: F821
    calib: torch.utils.data.Dataset  # noqa: F821
    input_shape: tuple[int, int, int]
    num_classes: int
    task: str
    config: DataConfig
    normalized: bool = False  # splits already pass through a model's mean/std

    @property
    def labelled(self) -> bool:
        """False for images without labels (num_classes 0 on a classification task)."""
        return self.task != "classification" or self.num_classes > 0


# the label of a sample without one (`images:`): never a class index, so no metric can count it
UNLABELLED = -1

# source name -> loader(arg, config) -> (train, val, num_classes) of classification datasets
DATASETS: Registry[Callable] = Registry("dataset", DataError)


def fit_to_model(config: DataConfig, preprocessing: dict) -> DataConfig:
    """`config` with the resize policy the model's preprocessing names, where the user set none."""
    import dataclasses

    changes = {}
    for key in ("resize", "crop_pct", "interpolation"):
        if getattr(config, key) is None and preprocessing.get(key) is not None:
            changes[key] = preprocessing[key]
    return dataclasses.replace(config, **changes) if changes else config


def with_preprocessing(bundle: DataBundle, preprocessing: dict) -> DataBundle:
    """The bundle with every split normalised as the model expects (mean/std), for classifiers.

    Dense tasks keep [0, 1] images: their targets are images in the same space."""
    from compress.models.preprocess import normalizer

    norm = normalizer(preprocessing)
    if norm is None or bundle.task != "classification" or bundle.normalized:
        return bundle
    from compress.data.transforms import Normalized

    out = DataBundle(
        Normalized(bundle.train, norm),
        Normalized(bundle.val, norm),
        Normalized(bundle.calib, norm),
        bundle.input_shape,
        bundle.num_classes,
        bundle.task,
        bundle.config,
        normalized=True,
    )
    return out


def prepare_for_model(bundle: DataBundle, preprocessing: dict) -> DataBundle:
    """The data as a model expects it: resized by its policy (where the user set none), normalised."""
    if not preprocessing or bundle.normalized:
        return bundle
    fitted = fit_to_model(bundle.config, preprocessing)
    if fitted is not bundle.config:
        bundle = load_data(fitted)
    return with_preprocessing(bundle, preprocessing)


def load_data(config: DataConfig | str) -> DataBundle:
    """Resolve a data spec into train / val / calibration splits for the configured task."""
    import torch

    from compress.data import crops, images, photos, sources  # noqa: F401  (registers the sources)
    from compress.data.transforms import DenoisingDataset

    if isinstance(config, str):
        config = DataConfig(name=config)
    name, _, arg = config.name.partition(":")
    loader = DATASETS.get(name)
    train, val, num_classes = loader(arg, config)
    if config.limit is not None:
        train = torch.utils.data.Subset(train, range(min(config.limit, len(train))))
        val = torch.utils.data.Subset(val, range(min(config.limit, len(val))))
    calib = torch.utils.data.Subset(train, range(min(config.calib_size, len(train))))
    if config.task == "denoising":
        train = DenoisingDataset(train, config.noise_sigma, config.seed)
        val = DenoisingDataset(val, config.noise_sigma, config.seed + 1)
        calib = DenoisingDataset(calib, config.noise_sigma, config.seed)
        num_classes = 0
    from compress.data.transforms import image_hw

    shape = (config.channels, *image_hw(config.image_size))
    return DataBundle(train, val, calib, shape, num_classes, config.task, config)
