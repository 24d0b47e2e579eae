"""The machine and library versions, recorded with every result."""

from __future__ import annotations

import functools
import os
import platform
import sys
from importlib import metadata
from typing import Any

_LIBS = ("compress", "torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "nncf", "tensorrt", "numpy")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _LIBS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@functools.cache
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> int:
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "system": platform.system(),
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "hostname": platform.node(),
    }
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def fingerprint(machine: dict[str, Any] | None = None) -> str:
    """A short key that two results must share before their timings may be compared."""
    m = machine or machine_info()
    return "|".join(str(m.get(k, "")) for k in ("system", "machine", "cpu", "logical_cores", "gpu"))


def environment() -> dict[str, Any]:
    return {"machine": machine_info(), "versions": library_versions()}
