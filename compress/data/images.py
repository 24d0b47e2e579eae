"""`images:PATH`: a folder of images without labels, and the class indices of `imagefolder` folders.

`images:PATH` takes every png / jpg / jpeg / bmp / webp file under PATH (recursively, hidden files and
folders skipped, in sorted order), split into train / val deterministically like every source. Its
samples carry the label `UNLABELLED` (-1) and the bundle has `num_classes` 0: no accuracy is computed
on it; calibration, distillation and fidelity to a reference model are what it serves.

`class_indices` maps `imagefolder` class folders to the model's output indices when their names say
so: a mapping file `PATH/classes.json` (`{"n01440764": 0, ...}` or a list, position = index) or
`PATH/classes.txt` (one class per line, its first word the folder name, line number = index, as in
ImageNet's `LOC_synset_mapping.txt`), else folder names that are all integers ("0", "207"), else the
folders' sorted positions (the torchvision `ImageFolder` convention).
"""

from __future__ import annotations

import json
from pathlib import Path

from torch.utils.data import Dataset

from compress.data import DATASETS, UNLABELLED, DataConfig
from compress.data.transforms import split_indices
from compress.errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MAPPING_FILES = ("classes.json", "classes.txt")


def find_images(root: Path) -> list[Path]:
    """Image files under `root`, recursively, sorted; hidden files and folders are skipped."""
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).parts
        if any(p.startswith(".") for p in rel) or path.suffix.lower() not in EXTENSIONS or not path.is_file():
            continue
        found.append(path)
    return found


def check_readable(paths: list[Path]) -> None:
    """Open each file's header (cheap: no pixels are decoded); the first unreadable one is named."""
    from PIL import Image, UnidentifiedImageError

    for path in paths:
        try:
            with Image.open(path) as img:
                img.size  # noqa: B018  (the header is parsed on open; size proves it)
        except (OSError, UnidentifiedImageError, ValueError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(f"unreadable image {path}: {reason}") from None


@DATASETS.register("images")
def images(arg: str, config: DataConfig) -> tuple[Dataset, Dataset, int]:
    """`images:PATH`: every image under PATH, no labels (see the module docstring)."""
    from compress.data.sources import _FolderImages

    root = Path(arg)
    if not arg or not root.is_dir():
        raise DataError(f"images: directory not found: '{arg}'")
    paths = find_images(root)
    if len(paths) < 2:
        what = "no image files" if not paths else "only one image file"
        raise DataError(
            f"images:{arg}: {what} ({', '.join(EXTENSIONS)}) found; a train and a val split need at least two"
        )
    check_readable(paths)
    train_idx, val_idx = split_indices(len(paths), config.val_fraction, config.seed)
    samples = [(str(p), UNLABELLED) for p in paths]
    return (
        _FolderImages([samples[i] for i in train_idx], config),
        _FolderImages([samples[i] for i in val_idx], config),
        0,
    )


def read_mapping(path: Path) -> dict[str, int]:
    """Class name -> output index from a `classes.json` or `classes.txt` file."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the class mapping ({e})") from None
    if path.suffix == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not a JSON file ({e})") from None
        if isinstance(obj, list) and all(isinstance(v, str) for v in obj):
            mapping = {name: i for i, name in enumerate(obj)}
        elif isinstance(obj, dict) and all(isinstance(v, int) and not isinstance(v, bool) for v in obj.values()):
            mapping = {str(k): int(v) for k, v in obj.items()}
        else:
            raise DataError(f"{path}: expected a list of class names or an object of name -> index")
    else:
        names = [line.split()[0] for line in text.splitlines() if line.strip()]
        mapping = {name: i for i, name in enumerate(names)}
    if not mapping:
        raise DataError(f"{path}: the class mapping is empty")
    if min(mapping.values()) < 0:
        raise DataError(f"{path}: class indices must be >= 0")
    return mapping


def class_indices(root: Path, classes: list[str]) -> tuple[dict[str, int], int]:
    """Each class folder's output index, and the number of outputs they need (module docstring)."""
    for name in MAPPING_FILES:
        path = root / name
        if path.is_file():
            mapping = read_mapping(path)
            missing = [c for c in classes if c not in mapping]
            if missing:
                raise DataError(f"{path}: no index for class folder '{missing[0][:60]}' ({len(missing)} missing)")
            return {c: mapping[c] for c in classes}, max(mapping.values()) + 1
    if classes and all(c.isascii() and c.isdigit() for c in classes):
        indices = {c: int(c) for c in classes}
        if len(set(indices.values())) != len(indices):
            raise DataError(f"{root}: numeric class folders name the same index twice ({', '.join(classes[:4])}...)")
        return indices, max(indices.values()) + 1
    return {c: i for i, c in enumerate(classes)}, len(classes)
