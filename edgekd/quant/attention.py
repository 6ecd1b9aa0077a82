"""INT8 attention scores for timm-style self-attention: q and k get quantizers, so q·kᵀ runs as an
integer MatMul.

A quantizer on Conv/Linear layers alone leaves the two activation-by-activation MatMuls of every
attention block in float. NNCF (``model_type=TRANSFORMER``) quantizes both inputs of q·kᵀ and leaves
softmax·v in float; we do the same, for the same reason: the softmax output is a probability
distribution whose useful range per-tensor int8 resolves badly, while q and k are ordinary
activations. Measured on vit_tiny: OpenVINO runs NNCF's 12 q·kᵀ as int8 subgraphs.

Only modules shaped like ``timm.models.vision_transformer.Attention`` are rewritten (fused
``qkv`` Linear, ``num_heads``/``head_dim``/``scale``, ``q_norm``/``k_norm``/``norm``/``proj``). The
rewrite keeps every submodule under its old name, so exclude globs and sensitivity names do not
change, and computes exactly what timm's non-fused path computes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_REQUIRED = ("qkv", "num_heads", "head_dim", "scale", "q_norm", "k_norm", "attn_drop", "norm", "proj", "proj_drop")


def is_timm_attention(module: nn.Module) -> bool:
    return (type(module).__name__ == "Attention" and all(hasattr(module, a) for a in _REQUIRED)
            and isinstance(module.qkv, nn.Linear))


class Int8ScoresAttention(nn.Module):
    """timm ``Attention`` with quantizers on q (after scaling) and k: q·kᵀ becomes an int8 MatMul."""

    def __init__(self, attn: nn.Module, q_quant: nn.Module, k_quant: nn.Module) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.scale = attn.num_heads, attn.head_dim, attn.scale
        self.attn_dim = getattr(attn, "attn_dim", attn.num_heads * attn.head_dim)
        self.qkv, self.q_norm, self.k_norm = attn.qkv, attn.q_norm, attn.k_norm
        self.attn_drop, self.norm, self.proj, self.proj_drop = attn.attn_drop, attn.norm, attn.proj, attn.proj_drop
        self.gate = getattr(attn, "gate", None)
        self.q_quant, self.k_quant = q_quant, k_quant

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        b, n, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        attn = self.q_quant(q * self.scale) @ self.k_quant(k).transpose(-2, -1)
        if attn_mask is not None or is_causal:
            from timm.models.vision_transformer import maybe_add_mask, resolve_self_attn_mask

            attn = maybe_add_mask(attn, resolve_self_attn_mask(n, attn, attn_mask, is_causal))
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(b, n, self.attn_dim)
        x = self.norm(x)
        if gate is not None:
            x = x * gate
        return self.proj_drop(self.proj(x))


def quantize_attention_scores(model: nn.Module, make_quant: Any, skip: Any = None) -> list[str]:
    """Replace every timm-style attention block in place; returns their names. ``make_quant()`` gives
    a fresh signed activation quantizer; ``skip(name)`` True leaves a block as it is."""
    names = [n for n, m in model.named_modules() if n and is_timm_attention(m) and not (skip and skip(n))]
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, Int8ScoresAttention(getattr(parent, attr), make_quant(), make_quant()))
    return names
