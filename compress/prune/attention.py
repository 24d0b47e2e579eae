"""MultiheadAttention -> `PrunableAttention` (in `compress.layers.attention`), so heads can be pruned.

`from_mha` copies the weights of a batch-first self-attention MultiheadAttention into a
`PrunableAttention`, which computes the same function with separate q/k/v/out projections.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.layers import PrunableAttention


def convertible(m: nn.Module) -> bool:
    """Whether `m` is a MultiheadAttention that `PrunableAttention` reproduces exactly."""
    return (
        isinstance(m, nn.MultiheadAttention)
        and m.batch_first
        and m._qkv_same_embed_dim
        and m.bias_k is None
        and not m.add_zero_attn
        and m.in_proj_weight is not None
    )


def from_mha(m: nn.MultiheadAttention) -> PrunableAttention:
    e, h = m.embed_dim, m.num_heads
    new = PrunableAttention(e, h, e // h, bias=m.in_proj_bias is not None, dropout=m.dropout)
    with torch.no_grad():
        for i, proj in enumerate((new.q_proj, new.k_proj, new.v_proj)):
            proj.weight.copy_(m.in_proj_weight[i * e : (i + 1) * e])
            if m.in_proj_bias is not None:
                proj.bias.copy_(m.in_proj_bias[i * e : (i + 1) * e])
        new.out_proj.weight.copy_(m.out_proj.weight)
        if m.out_proj.bias is not None:
            new.out_proj.bias.copy_(m.out_proj.bias)
    new.train(m.training)
    return new


def convert_attention(module: nn.Module) -> list[str]:
    """Replace every convertible MultiheadAttention in `module` (in place); returns their names."""
    done = []
    for name, m in list(module.named_modules()):
        if name and convertible(m):
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, from_mha(m))
            done.append(name)
    return done
