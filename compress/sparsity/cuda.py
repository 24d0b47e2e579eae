"""The torch CUDA path: swap eligible Linear layers to semi-structured (2:4) sparse weights only where a
per-layer timing on the device shows the sparse kernel faster.

On an H100, `torch.sparse.to_sparse_semi_structured` Linear layers were slower than dense at every small
shape tried, so a blanket swap would make models slower: each candidate is timed (dense vs sparse,
interleaved in one process) and swapped only when sparse / dense latency is below `max_ratio`.
The selection (`select_sparse`) takes the timer as an argument, so its logic is tested without a GPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from compress.errors import BackendError
from compress.sparsity.masks import TORCH_MIN_COLS, TORCH_MIN_ROWS, holds

Timer = Callable[[nn.Linear, torch.Tensor], tuple[float, float]]  # -> (dense seconds, sparse seconds)
NO_CUDA = "no CUDA device: no sparse kernels ran (every layer stays dense)"


def candidates(module: nn.Module, dtype: torch.dtype = torch.float16) -> tuple[list[str], list[dict[str, Any]]]:
    """(Linear layers semi-structured kernels could run, [{name, reason}] of those that cannot)."""
    ok, skipped = [], []
    for name, mod in module.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        out_f, in_f = mod.weight.shape
        if out_f % TORCH_MIN_ROWS or in_f % TORCH_MIN_COLS:
            skipped.append(
                {"name": name, "reason": f"shape {out_f}x{in_f}: needs out % {TORCH_MIN_ROWS}, in % {TORCH_MIN_COLS}"}
            )
        elif not holds(mod.weight.detach().cpu(), 2, 4, 1):
            skipped.append({"name": name, "reason": "weight is not 2:4 sparse along its input axis"})
        elif dtype not in (torch.float16, torch.bfloat16, torch.int8):
            skipped.append({"name": name, "reason": f"dtype {dtype}: semi-structured kernels need fp16, bf16 or int8"})
        else:
            ok.append(name)
    return ok, skipped


def select_sparse(
    module: nn.Module,
    example_inputs: dict[str, torch.Tensor],
    timer: Timer,
    *,
    dtype: torch.dtype = torch.float16,
    max_ratio: float = 0.95,
) -> dict[str, Any]:
    """Time every candidate Linear on its own input (dense vs sparse) and pick those that are faster.

    `example_inputs`: {layer name: an input of that layer}. Returns {"layers": [{name, shape, dense_s,
    sparse_s, ratio, sparse, reason}], "swapped": [names], "skipped": [...]}; a layer is chosen only when
    sparse_s / dense_s <= max_ratio (a margin against timing noise).
    """
    names, skipped = candidates(module, dtype)
    mods = dict(module.named_modules())
    rows, chosen = [], []
    for name in names:
        mod = mods[name]
        if name not in example_inputs:
            skipped.append({"name": name, "reason": "not reached by the example input"})
            continue
        dense_s, sparse_s = timer(mod, example_inputs[name])
        ratio = sparse_s / dense_s if dense_s > 0 else float("inf")
        pick = ratio <= max_ratio
        rows.append(
            {
                "name": name,
                "shape": list(mod.weight.shape),
                "dense_s": dense_s,
                "sparse_s": sparse_s,
                "ratio": ratio,
                "sparse": pick,
                "reason": f"sparse {1 / ratio:.2f}x faster"
                if pick
                else f"sparse {ratio:.2f}x the dense time: kept dense",
            }
        )
        if pick:
            chosen.append(name)
    return {"layers": rows, "swapped": chosen, "skipped": skipped}


def layer_inputs(module: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input of every Linear layer for one forward pass of `x`."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        mod.register_forward_pre_hook(lambda _m, args, _n=name: seen.setdefault(_n, args[0].detach()))
        for name, mod in module.named_modules()
        if isinstance(mod, nn.Linear)
    ]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def cuda_timer(rounds: int = 50, warmup: int = 10) -> Timer:
    """Dense vs semi-structured timing of one Linear on CUDA, interleaved, median of `rounds` each."""

    def timer(mod: nn.Linear, x: torch.Tensor) -> tuple[float, float]:
        from torch.sparse import to_sparse_semi_structured

        w = mod.weight.detach()
        b = None if mod.bias is None else mod.bias.detach()
        ws = to_sparse_semi_structured(w)
        dense = lambda: torch.nn.functional.linear(x, w, b)  # noqa: E731
        sparse = lambda: torch.nn.functional.linear(x, ws, b)  # noqa: E731
        for _ in range(warmup):
            dense(), sparse()
        td, ts = [], []
        for _ in range(rounds):
            for fn, acc in ((dense, td), (sparse, ts)):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn()
                torch.cuda.synchronize()
                acc.append(time.perf_counter() - t0)
        return sorted(td)[len(td) // 2], sorted(ts)[len(ts) // 2]

    return timer


def swap(module: nn.Module, names: list[str]) -> None:
    """Replace the weights of the named Linear layers by semi-structured sparse tensors (in place)."""
    from torch.sparse import to_sparse_semi_structured

    mods = dict(module.named_modules())
    for name in names:
        mod = mods[name]
        mod.weight = nn.Parameter(to_sparse_semi_structured(mod.weight.detach()), requires_grad=False)


def sparse_auto(
    module: nn.Module, x: torch.Tensor, *, dtype: torch.dtype = torch.float16, timer: Timer | None = None
) -> dict[str, Any]:
    """`--sparse auto` on torch CUDA: move to the device in `dtype`, time, swap where faster; report it."""
    if timer is None:
        if not torch.cuda.is_available():
            return {"layers": [], "swapped": [], "skipped": [], "note": NO_CUDA}
        module.to("cuda", dtype)
        x = x.to("cuda", dtype)
        timer = cuda_timer()
    try:
        report = select_sparse(module, layer_inputs(module, x), timer, dtype=dtype)
    except RuntimeError as e:
        raise BackendError(f"semi-structured sparse timing failed: {str(e).splitlines()[0][:200]}") from None
    if report["swapped"] and x.is_cuda:  # a fake timer on CPU tests the selection only
        swap(module, report["swapped"])
    report["note"] = (
        f"{len(report['swapped'])} of {len(report['layers'])} timed Linear layers run semi-structured sparse kernels"
    )
    return report
