"""N:M masks by the hardware's rule and the rules for which layers can carry one.

The rule (NVIDIA sparse tensor cores, TensorRT, cuSPARSELt): along the **input-channel** axis, every
group of M consecutive weights holds at most N nonzeros. Conv weight [K, C/g, R, S]: groups of M
consecutive C for each (K, R, S); Linear weight [out, in]: groups along `in`; ConvTranspose weight
[C, K/g, R, S]: along C (axis 0). Reshaping the flat weight into rows of M is a different, wrong rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# Shape rules of the sparse kernels, kept in one place.
# torch.sparse.to_sparse_semi_structured (cuSPARSELt / CUTLASS): a 2-D weight [rows, cols] needs rows and
# cols multiples of these minimums (torch's _DTYPE_SHAPE_CONSTRAINTS for fp16/bf16; int8 needs 128 cols).
TORCH_MIN_ROWS = 32
TORCH_MIN_COLS = 64
# TensorRT sparse weights: channel counts multiples of 16 as a rule of thumb (TensorRT picks per layer at build
# time and may still choose a dense kernel).
TRT_CHANNEL_MULTIPLE = 16
_FLOAT = (np.float16, np.float32, np.float64)


def parse_nm(pattern: str) -> tuple[int, int]:
    """'2:4' -> (2, 4): at most N nonzeros in every group of M."""
    try:
        n, m = (int(v) for v in str(pattern).split(":"))
    except ValueError:
        raise ValueError(f"sparsity pattern must look like N:M (e.g. 2:4), got '{pattern}'") from None
    if not 0 < n < m:
        raise ValueError(f"sparsity pattern N:M needs 0 < N < M, got '{pattern}'")
    return n, m


def input_axis(op: str, ndim: int = 2, trans_b: int = 1) -> int:
    """The input-channel axis of a weight: torch kinds (conv, conv_transpose, linear) or ONNX op types."""
    if op in ("conv", "Conv", "QLinearConv", "ConvInteger"):
        return 1
    if op in ("conv_transpose", "ConvTranspose"):
        return 0
    if op in ("linear",):
        return 1
    if op == "Gemm":
        return 1 if trans_b else 0
    return ndim - 2  # MatMul family: B is [..., K, N]


def nm_mask(weight: torch.Tensor | np.ndarray, n: int, m: int, axis: int) -> torch.Tensor | np.ndarray:
    """Boolean mask keeping the `n` largest |w| of every `m` consecutive entries along `axis`.

    Same type as `weight` (torch or numpy). Ties go to the lower index (stable).
    """
    is_np = isinstance(weight, np.ndarray)
    w = torch.from_numpy(np.asarray(weight, dtype=np.float64)) if is_np else weight.detach()
    if w.shape[axis] % m:
        raise ValueError(f"axis {axis} of a {tuple(w.shape)} weight is not a multiple of {m}")
    moved = w.abs().float().movedim(axis, -1)
    groups = moved.reshape(-1, m)
    # stable top-n: sort descending by magnitude with a tiny index bias so ties keep the lower index
    bias = torch.arange(m, dtype=groups.dtype, device=groups.device) * -1e-30
    idx = torch.topk(groups + bias, n, dim=1).indices
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, idx, True)
    mask = keep.reshape(moved.shape).movedim(-1, axis)
    return mask.numpy() if is_np else mask


def holds(weight: np.ndarray | torch.Tensor, n: int, m: int, axis: int) -> bool | None:
    """Whether every group of `m` along `axis` has at most `n` nonzeros (None: axis not a multiple of m)."""
    w = weight.detach().cpu().numpy() if isinstance(weight, torch.Tensor) else np.asarray(weight)
    if w.ndim < 2 or w.shape[axis] % m:
        return None
    g = np.moveaxis(w, axis, -1).reshape(-1, m)
    return bool(((g != 0).sum(axis=1) <= n).all())


def eligibility(
    op: str,
    shape: tuple[int, ...] | list[int],
    m: int,
    *,
    groups: int = 1,
    dtype: Any = np.float32,
    min_params: int = 0,
    axis: int | None = None,
) -> tuple[bool, str, bool, str]:
    """(can carry the pattern, why not, eligible for sparse kernels, why not) of one weight.

    `op`: torch kind (conv, conv_transpose, linear) or ONNX op type. The pattern needs a floating or
    integer weight with at least 2 dims whose input-channel axis is a multiple of M, not depthwise, and at
    least `min_params` weights. Sparse kernels additionally need the shape rules above (torch
    semi-structured for Linear / Gemm / MatMul, TensorRT for convolutions, groups == 1).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        return False, "not a 2-D or conv weight", False, "no pattern"
    ax = input_axis(op, len(shape)) if axis is None else axis
    c = shape[ax]
    kind = np.dtype(dtype) if not isinstance(dtype, torch.dtype) else None
    is_num = (kind is not None and (kind.kind in "fiu")) or (isinstance(dtype, torch.dtype) and dtype.is_floating_point)
    if not is_num:
        return False, f"weight dtype {dtype} is not numeric", False, "no pattern"
    if c == 1 and groups > 1:
        return False, "depthwise (1 input channel per group)", False, "no pattern"
    if c % m:
        return False, f"input channels {c} not a multiple of {m}", False, "no pattern"
    size = int(np.prod(shape))
    if size < min_params:
        return False, f"{size} weights < min_params {min_params}", False, "no pattern"
    conv = op in ("conv", "Conv", "QLinearConv", "ConvInteger", "conv_transpose", "ConvTranspose")
    if conv:
        if groups > 1:
            return True, "", False, f"grouped conv (groups={groups}): no sparse tensor-core kernel"
        k = shape[1 - ax] if op in ("conv_transpose", "ConvTranspose") else shape[0]
        if c % TRT_CHANNEL_MULTIPLE or k % TRT_CHANNEL_MULTIPLE:
            return (
                True,
                "",
                False,
                f"TensorRT sparse conv wants C and K multiples of {TRT_CHANNEL_MULTIPLE} (C={c}, K={k})",
            )
        return True, "", True, ""
    rows = int(np.prod(shape)) // c  # outputs (for a 2-D weight: the other axis)
    if rows % TORCH_MIN_ROWS or c % TORCH_MIN_COLS:
        return (
            True,
            "",
            False,
            f"semi-structured kernels need out % {TORCH_MIN_ROWS} == 0 and in % {TORCH_MIN_COLS} == 0 "
            f"(out={rows}, in={c})",
        )
    return True, "", True, ""
