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
def _cpuinfo() -> tuple[str, ...]:
    """The lines of /proc/cpuinfo (empty where the OS has none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return tuple(f)
    except OSError:
        return ()


@functools.cache
def cpu_name() -> str:
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# instruction-set features INT8 kernels depend on (ONNX Runtime's x86 u8s8 kernels saturate without VNNI)
_INT8_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


@functools.cache
def cpu_isa() -> tuple[str, ...]:
    """The INT8-relevant instruction-set features of this CPU (from /proc/cpuinfo; empty where unknown)."""
    for line in _cpuinfo():
        if line.startswith(("flags", "Features")):
            have = set(line.split(":", 1)[1].split())
            return tuple(x for x in _INT8_ISA if x in have)
    return ()


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
        "isa": list(cpu_isa()),
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
    key = "|".join(str(m.get(k, "")) for k in ("system", "machine", "cpu", "logical_cores", "gpu"))
    return f"{key}|{','.join(m['isa'])}" if m.get("isa") else key


def environment() -> dict[str, Any]:
    return {"machine": machine_info(), "versions": library_versions()}
