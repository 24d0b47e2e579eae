"""What the GPU backends need from CUDA: a guard, and the device's name, driver and clocks (read, never set)."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from compress.errors import BackendError

# nvidia-smi fields read into every GPU result; the clocks are what the card ran at, not a setting
_SMI_FIELDS = (
    "name",
    "driver_version",
    "memory.total",
    "clocks.sm",
    "clocks.max.sm",
    "clocks.mem",
    "power.limit",
    "temperature.gpu",
)


def graph_replay(fn, stream):
    """Capture one `fn()` on `stream` in a CUDA graph; returns (replay, what fn returned).

    `replay()` launches the graph on `stream` (a graph replays on the current stream otherwise). The
    returned tensors are the graph's static outputs: each replay writes into them."""
    import torch

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        out = fn()

    def replay():
        with torch.cuda.stream(stream):
            graph.replay()

    return replay, out


def require_cuda(what: str) -> None:
    """A one-line error when torch sees no CUDA device."""
    import torch

    if not torch.cuda.is_available():
        raise BackendError(f"{what} needs a CUDA device, and torch sees none here (torch {torch.__version__})")


def device_info(index: int = 0) -> dict[str, Any]:
    """Name, compute capability, CUDA/driver versions and current clocks of GPU `index`."""
    import torch

    info: dict[str, Any] = {"device": f"cuda:{index}"}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(index)
        info.update(
            {
                "name": props.name,
                "compute_capability": f"{props.major}.{props.minor}",
                "memory_gib": round(props.total_memory / 2**30, 1),
                "cuda_runtime": torch.version.cuda,
            }
        )
    info.update(nvidia_smi(index))
    return info


def nvidia_smi(index: int = 0) -> dict[str, str]:
    """The `_SMI_FIELDS` as nvidia-smi reports them (empty where it is absent or fails)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    try:
        out = subprocess.run(
            [exe, f"--id={index}", f"--query-gpu={','.join(_SMI_FIELDS)}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    values = [v.strip() for v in out.splitlines()[0].split(",")] if out else []
    if len(values) != len(_SMI_FIELDS):
        return {}
    return {f"smi_{k.replace('.', '_')}": v for k, v in zip(_SMI_FIELDS, values, strict=True)}


def gpu_name(index: int = 0) -> str:
    """The device name used in engine cache keys."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(index)
    name = nvidia_smi(index).get("smi_name")
    if not name:
        raise BackendError("no CUDA device found (torch sees none and nvidia-smi gives no name)")
    return name
