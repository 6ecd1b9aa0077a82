"""``nn.MultiheadAttention`` and ``nn.TransformerEncoder(Layer)`` rewritten from plain Linear layers, so the
quantizer sees their projections.

PyTorch's attention keeps q/k/v as one ``in_proj_weight`` parameter (no Linear module) and runs the encoder
through a fused fast path (``torch._transformer_encoder_layer_fwd``): neither brevitas's graph nor its
layerwise quantizer can reach the weights, and FX cannot trace the fast path. brevitas's own
``QuantMultiheadAttention`` has no QDQ export edgekd can write exactly. The rewrite computes what PyTorch's
(non-fused) path computes, from ``q_proj``/``k_proj``/``v_proj``/``out_proj`` Linear layers (exported as
integer Gemm/MatMul), with optional quantizers on q and k so q·kᵀ becomes an integer MatMul
(``attention_scores = "int8"``; softmax·v stays float for the reason given in attention.py). LayerNorm,
GELU and softmax stay float: runtimes run them in float between int8 layers. Every kept submodule keeps its
name (``layers.0.linear1``, ``layers.0.self_attn.out_proj``), so exclude globs still match.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

MakeQuant = Callable[[], nn.Module]


def decomposable(mha: nn.MultiheadAttention) -> str | None:
    """Why ``mha`` cannot be rewritten (None when it can)."""
    if mha.bias_k is not None or mha.add_zero_attn:
        return "add_bias_kv / add_zero_attn"
    return None


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


class DecomposedMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` (self- or cross-attention, masks, batch_first) from four Linear layers."""

    def __init__(self, mha: nn.MultiheadAttention, make_quant: MakeQuant | None = None) -> None:
        super().__init__()
        e, self.num_heads, self.batch_first = mha.embed_dim, mha.num_heads, mha.batch_first
        self.head_dim = e // mha.num_heads
        bias = mha.in_proj_bias
        if mha._qkv_same_embed_dim:
            weights = mha.in_proj_weight.detach().chunk(3)
        else:
            weights = (mha.q_proj_weight.detach(), mha.k_proj_weight.detach(), mha.v_proj_weight.detach())
        biases = bias.detach().chunk(3) if bias is not None else (None, None, None)
        self.q_proj, self.k_proj, self.v_proj = (_linear(w, b) for w, b in zip(weights, biases, strict=True))
        self.out_proj = _linear(mha.out_proj.weight.detach(), None if mha.out_proj.bias is None
                                else mha.out_proj.bias.detach())
        self.dropout = mha.dropout
        self.q_quant = make_quant() if make_quant else nn.Identity()
        self.k_quant = make_quant() if make_quant else nn.Identity()

    def _heads(self, x: torch.Tensor, b: int) -> torch.Tensor:
        return x.reshape(b, -1, self.num_heads, self.head_dim).transpose(1, 2)  # (b, heads, n, d)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, None]:
        if not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        b = query.shape[0]
        q = self._heads(self.q_proj(query), b) * (1.0 / math.sqrt(self.head_dim))
        k, v = self._heads(self.k_proj(key), b), self._heads(self.v_proj(value), b)
        scores = self.q_quant(q) @ self.k_quant(k).transpose(-2, -1)
        scores = _masked(scores, attn_mask, key_padding_mask, is_causal)
        weights = F.dropout(scores.softmax(dim=-1), self.dropout, self.training)
        out = (weights @ v).transpose(1, 2).reshape(b, -1, self.num_heads * self.head_dim)
        out = self.out_proj(out)
        return (out if self.batch_first else out.transpose(0, 1)), None


def _masked(scores: torch.Tensor, attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None,
            is_causal: bool) -> torch.Tensor:
    """Scores with PyTorch's mask semantics: a bool mask is True where attention is *not* allowed, a float
    mask is added; ``key_padding_mask`` is (batch, source length)."""
    if is_causal and attn_mask is None:
        attn_mask = torch.ones(scores.shape[-2], scores.shape[-1], dtype=torch.bool, device=scores.device).triu(1)
    for mask in (attn_mask, None if key_padding_mask is None else key_padding_mask[:, None, None, :]):
        if mask is None:
            continue
        if mask.dim() == 3:  # (batch * heads, n, s)
            mask = mask.reshape(-1, scores.shape[1], scores.shape[-2], scores.shape[-1])
        scores = scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return scores


class DecomposedEncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer`` without the fused fast path (same submodules, same arithmetic)."""

    def __init__(self, layer: nn.TransformerEncoderLayer, make_quant: MakeQuant | None = None) -> None:
        super().__init__()
        self.self_attn = DecomposedMultiheadAttention(layer.self_attn, make_quant)
        self.linear1, self.dropout, self.linear2 = layer.linear1, layer.dropout, layer.linear2
        self.norm_first, self.norm1, self.norm2 = layer.norm_first, layer.norm1, layer.norm2
        self.dropout1, self.dropout2 = layer.dropout1, layer.dropout2
        act = layer.activation
        # a function (F.relu / F.gelu) becomes its module, so graph mode quantizes a ReLU like any other
        self.activation = {F.relu: nn.ReLU(), F.gelu: nn.GELU()}.get(act, act) if not isinstance(act, nn.Module) else act

    def _sa(self, x: torch.Tensor, mask: torch.Tensor | None, padding: torch.Tensor | None, causal: bool) -> torch.Tensor:
        return self.dropout1(self.self_attn(x, x, x, attn_mask=mask, key_padding_mask=padding, need_weights=False,
                                            is_causal=causal)[0])

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        x = src
        if self.norm_first:
            x = x + self._sa(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._ff(self.norm2(x))
        x = self.norm1(x + self._sa(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._ff(x))


class DecomposedEncoder(nn.Module):
    """``nn.TransformerEncoder``: its layers in turn, then the optional final norm."""

    def __init__(self, encoder: nn.TransformerEncoder, make_quant: MakeQuant | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_encoder_layer(layer, make_quant) for layer in encoder.layers)
        self.norm = encoder.norm

    def forward(self, src: torch.Tensor, mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None, is_causal: bool | None = None) -> torch.Tensor:
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=bool(is_causal))
        return self.norm(x) if self.norm is not None else x


def _encoder_layer(layer: nn.Module, make_quant: MakeQuant | None) -> nn.Module:
    return DecomposedEncoderLayer(layer, make_quant) if type(layer) is nn.TransformerEncoderLayer else layer


def decompose_attention(model: nn.Module, make_quant: MakeQuant | None = None,
                        skip: Callable[[str], bool] | None = None) -> list[str]:
    """Rewrite every ``TransformerEncoder``, ``TransformerEncoderLayer`` and decomposable ``MultiheadAttention``
    of ``model`` in place (outermost first); returns the names of the attention modules it now holds.
    ``make_quant()`` gives the q/k quantizers (None: identities, q·kᵀ float); ``skip(name)`` True leaves a
    module as it is."""
    done: list[str] = []
    for name, module in list(model.named_modules()):
        if not name or any(name.startswith(prefix + ".") for prefix in done) or (skip and skip(name)):
            continue
        kind = type(module)
        if kind is nn.TransformerEncoder:
            new: nn.Module = DecomposedEncoder(module, make_quant)
        elif kind is nn.TransformerEncoderLayer and decomposable(module.self_attn) is None:
            new = DecomposedEncoderLayer(module, make_quant)
        elif kind is nn.MultiheadAttention and decomposable(module) is None:
            new = DecomposedMultiheadAttention(module, make_quant)
        else:
            continue
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
        done.append(name)
    return [n for n, m in model.named_modules() if isinstance(m, DecomposedMultiheadAttention)]

