"""A multi-head attention layer whose heads can be removed, as an exact stand-in for nn.MultiheadAttention.

torch's MultiheadAttention fuses q/k/v into one `in_proj_weight` and ties the inner width to
`embed_dim`, so no head can be removed from it. `PrunableAttention` holds separate q/k/v/out
projections with an inner width of num_heads x head_dim; its forward splits heads with
`view(B, L, -1, head_dim)` (head_dim literal), so the dependency analysis ties each head's dims into
one removable unit and pruning drops whole heads. The conversion from MultiheadAttention is in
`compress.prune.attention`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compress.layers.registry import register_layer


class PrunableAttention(nn.Module):
    """Batch-first multi-head attention with separate projections (no masks, no dropout at eval)."""

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.dropout = dropout
        inner = num_heads * head_dim
        self.q_proj = nn.Linear(embed_dim, inner, bias=bias)
        self.k_proj = nn.Linear(embed_dim, inner, bias=bias)
        self.v_proj = nn.Linear(embed_dim, inner, bias=bias)
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias)

    def get_config(self) -> dict[str, Any]:
        return {
            "embed_dim": self.embed_dim,
            "num_heads": self.q_proj.out_features // self.head_dim,
            "head_dim": self.head_dim,
            "bias": self.q_proj.bias is not None,
            "dropout": self.dropout,
        }

    def forward(self, query, key, value, need_weights: bool = False, **_: Any):
        b, lq = query.shape[0], query.shape[1]
        lk = key.shape[1]
        q = self.q_proj(query).view(b, lq, -1, self.head_dim).transpose(1, 2)
        k = self.k_proj(key).view(b, lk, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(value).view(b, lk, -1, self.head_dim).transpose(1, 2)
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * (self.head_dim**-0.5), dim=-1)
        if self.training and self.dropout > 0:
            attn = nn.functional.dropout(attn, self.dropout)
        out = torch.matmul(attn, v).transpose(1, 2).flatten(2)
        return self.out_proj(out), None


register_layer(
    PrunableAttention, key="compress.PrunableAttention", aliases=["compress.prune.attention.PrunableAttention"]
)
