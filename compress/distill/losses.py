"""Distillation losses as plain tensor functions (no state), shared by the methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T^2 * KL(softmax(z_t / T) || softmax(z_s / T)), averaged over the batch."""
    t = temperature
    log_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * (t * t)


def info_nce(query: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE where row i of `query` must pick row i of `keys` among all rows (in-batch negatives).

    Works on batched sets too: query and keys of shape [..., N, D]; rows are L2-normalised here.
    """
    q = F.normalize(query.float(), dim=-1)
    k = F.normalize(keys.float(), dim=-1)
    logits = q @ k.transpose(-1, -2) / temperature
    n = logits.shape[-1]
    target = torch.arange(n, device=logits.device).expand(logits.shape[:-1])
    return F.cross_entropy(logits.reshape(-1, n), target.reshape(-1))


def linear_cka(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Linear CKA between two representations of the same batch (Kornblith et al. 2019).

    x: [B, ...], y: [B, ...] (flattened per sample). Uses the Gram form
    <K, L>_F / (||K||_F ||L||_F) with K = Xc Xc^T, L = Yc Yc^T, which is cheap for wide features.
    """
    x = x.flatten(1).float()
    y = y.flatten(1).float()
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    k = x @ x.T
    l_ = y @ y.T
    return (k * l_).sum() / (k.norm() * l_.norm() + eps)


def pixel_info_nce(
    student: torch.Tensor, teacher: torch.Tensor, queue: torch.Tensor | None, temperature: float = 0.2
) -> torch.Tensor:
    """Per-pixel InfoNCE (PCD): each student pixel is pulled to the teacher pixel at the same position
    and pushed from the queue's vectors.

    student, teacher: [B, D, H, W]; queue: [K, D] or None (then the loss is 0: no negatives yet).
    """
    s = F.normalize(student.float(), dim=1)
    t = F.normalize(teacher.float(), dim=1)
    pos = (s * t).sum(1, keepdim=True)  # [B, 1, H, W]
    if queue is None or queue.shape[0] == 0:
        return (pos * 0).sum() / pos.numel()
    q = F.normalize(queue.float(), dim=1)
    neg = torch.einsum("bdhw,kd->bkhw", s, q)
    logits = torch.cat([pos, neg], dim=1) / temperature
    return -F.log_softmax(logits, dim=1)[:, 0].mean()
