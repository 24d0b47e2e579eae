"""Batched matmul (attention scores and values) and `F.scaled_dot_product_attention`."""

from __future__ import annotations

import operator

import numpy as np
import torch
import torch.nn.functional as F

from compress.prune.labels import NONE, L, Unsupported, compress_arr
from compress.prune.ops.registry import register_function, register_method


def matmul(g, node, a: L, b: L) -> L:
    """Batched matmul a[..., i, k] @ b[..., k, j].

    Supported: labels contracted over k in both operands (tied per batch position, e.g. one head),
    or b labelled along j with a constant per batch position (values); anything else is fixed.
    """
    shape = g.meta_shape(node)
    n = len(shape)
    if a.arr.ndim != n or b.arr.ndim != n or n < 3:
        raise Unsupported("matmul of unexpected rank")
    if a.arr.shape[-2] > 1 or b.arr.shape[-1] > 1 and b.arr.shape[-2] > 1:
        raise Unsupported("matmul with labels along rows")
    batch = tuple(max(a.arr.shape[d], b.arr.shape[d]) for d in range(n - 2))
    A = np.broadcast_to(a.arr, batch + a.arr.shape[-2:]).reshape(-1, a.arr.shape[-1])
    out_shape = list(batch) + [1, b.arr.shape[-1]]
    if b.arr.shape[-1] > 1:  # values: b labelled along j, a contributes one label per batch position
        B = np.broadcast_to(b.arr, batch + b.arr.shape[-2:]).reshape(len(A), -1)
        for row_a, row_b in zip(A, B, strict=True):
            ua = np.unique(row_a)
            if ua.size > 1:
                raise Unsupported("matmul with labels along the contraction and the columns")
            if ua[0] >= 0:
                g.tie(np.concatenate([ua, row_b]), f"{node.name}: attention over fixed channels")
        return L(compress_arr(B.reshape(out_shape).copy()), shape, a.batched or b.batched)
    B = np.broadcast_to(b.arr, batch + b.arr.shape[-2:]).reshape(len(A), -1)
    out = np.full(len(A), NONE, dtype=np.int64)
    for i, (row_a, row_b) in enumerate(zip(A, B, strict=True)):
        atoms = np.concatenate([row_a, row_b])
        if (atoms >= 0).any():
            g.tie(atoms, f"{node.name}: contraction over fixed channels")
            out[i] = atoms[atoms >= 0][0]
    if batch and all(s == 1 for s in batch) and (out >= 0).any():
        g.atoms.fix(out, f"{node.name}: contraction over channels without a batch axis")
    return L(compress_arr(out.reshape(list(batch) + [1, 1]).copy()), shape, a.batched or b.batched)


@register_function(torch.matmul, operator.matmul, torch.bmm)
def matmul_function(g, node, args: list, kwargs: dict) -> L:
    a, b = args[0], args[1]
    if not isinstance(a, L) or not isinstance(b, L):
        raise Unsupported(f"{node.name}: matmul with a non-tensor")
    return matmul(g, node, a, b)


@register_method("matmul", "bmm", "__matmul__")
def matmul_method(g, node, args: list, kwargs: dict) -> L:
    return matmul_function(g, node, args, kwargs)


@register_function(F.scaled_dot_product_attention)
def sdpa(g, node, args: list, kwargs: dict) -> L:
    """softmax(q k^T * scale) v over (..., tokens, head_dim): q and k are contracted per head.

    The default scale is 1/sqrt(head_dim), so the head width may not change: each head's
    q / k dims are tied into one unit (whole heads are removed, never single dims).
    """
    q, k, v = args[0], args[1], args[2] if len(args) > 2 else kwargs.get("value")
    if not all(isinstance(t, L) for t in (q, k, v)):
        raise Unsupported(f"{node.name}: attention with a non-tensor")
    mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
    if isinstance(mask, L) and (mask.arr >= 0).any():
        raise Unsupported(f"{node.name}: attention mask with channel labels")
    shape = g.meta_shape(node)
    n = len(shape)
    for t in (q, k, v):
        if t.arr.ndim != n or t.arr.shape[-2] > 1:
            raise Unsupported(f"{node.name}: attention with labels along the token axis")
    batch = tuple(max(q.arr.shape[d], k.arr.shape[d], v.arr.shape[d]) for d in range(n - 2))
    Q = np.broadcast_to(q.arr, batch + q.arr.shape[-2:]).reshape(-1, q.arr.shape[-1])
    K = np.broadcast_to(k.arr, batch + k.arr.shape[-2:]).reshape(-1, k.arr.shape[-1])
    V = np.broadcast_to(v.arr, batch + v.arr.shape[-2:]).reshape(len(Q), -1)
    scale = kwargs.get("scale")
    for row_q, row_k in zip(Q, K, strict=True):
        if scale is None:  # the head width stays: q and k of one head are one unit
            g.tie(np.concatenate([row_q, row_k]), f"{node.name}: attention over fixed channels")
        else:
            qq, kk = np.broadcast_arrays(row_q, row_k)
            for a, b in zip(qq, kk, strict=True):
                g.tie(np.array([a, b]), f"{node.name}: attention over fixed channels")
    return L(compress_arr(V.reshape(batch + (1, v.arr.shape[-1])).copy()), shape, q.batched or v.batched)
