"""What kind of model file a path holds, read from its first bytes, never by loading it.

Each kind has its own loader and each failure its own message: not found, permission denied, a
directory, an empty file, a file that is no model at all (named by what it looks like), ONNX, a
`torch.export` archive, TorchScript, a `torch.save` file (a compress checkpoint, a state_dict or
pickled objects: the checkpoint loader tells these apart), or safetensors.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from compress.errors import ModelError

_SIGNATURES = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\x7fELF", "an executable"),
    (b"\x89HDF", "an HDF5 file (Keras?)"),
)


def diagnose(path: Path) -> str:
    """One of "onnx", "export", "torchscript", "torch", "safetensors"; a ModelError for anything else."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model not found: {path}")
    if path.is_dir():
        raise ModelError(f"{path} is a directory but not a run directory (no manifest.json)")
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except PermissionError:
        raise ModelError(f"{path}: permission denied") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read ({e.strerror})") from None
    if not head:
        raise ModelError(f"{path}: empty file, not a model")
    if head[:4] == b"PK\x03\x04":
        return _zip_kind(path)
    if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        return "torch"  # a legacy (non-zip) torch.save file or a plain pickle
    if len(head) >= 10 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < os.path.getsize(path):
        return "safetensors"
    if path.suffix == ".onnx" or _looks_like_onnx(head):
        return "onnx"
    for sig, what in _SIGNATURES:
        if head.startswith(sig):
            raise ModelError(f"{path}: not a model file (it is {what})")
    if _is_text(head):
        raise ModelError(f"{path}: not a model file (it is text)")
    raise ModelError(f"{path}: not a PyTorch, torch.export, TorchScript, safetensors or ONNX file")


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()[:5000]
    except (zipfile.BadZipFile, OSError):
        raise ModelError(f"{path}: a damaged zip file, not a readable model") from None
    if any(n.endswith("/archive_format") or n.endswith("serialized_exported_program.json") for n in names):
        return "export"
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith("/data.pkl") for n in names):
        return "torch"
    raise ModelError(f"{path}: a zip file, but not a PyTorch, torch.export or TorchScript archive")


def _looks_like_onnx(head: bytes) -> bool:
    # an ONNX ModelProto starts with field 1 (ir_version, varint: 0x08) and is protobuf throughout
    return head[:1] == b"\x08" and 3 <= head[1] <= 20 and b"\x12" in head[2:4]


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not just a character cut at the end of the sample
            return False
    return all(ch >= 32 or ch in (9, 10, 13) for ch in head)
