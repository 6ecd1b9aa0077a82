"""Distillation losses: Hinton KD, reverse KL, FitNets hints with adapters, attention transfer.

All losses take student and teacher tensors for one batch and return a scalar. Losses on logits
need no labels; the hard-label term is added by ``logits_loss`` only when labels exist.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.errors import ConfigError


def hinton_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_teacher^T || p_student^T) * T^2 (Hinton et al. 2015); T^2 keeps gradient scale independent of T."""
    log_ps = F.log_softmax(student_logits / temperature, dim=-1)
    log_pt = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True) * temperature**2


def reverse_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_student^T || p_teacher^T) * T^2: mode-seeking, the student need not cover every teacher mode."""
    log_ps = F.log_softmax(student_logits / temperature, dim=-1)
    log_pt = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(log_pt, log_ps, reduction="batchmean", log_target=True) * temperature**2


def logits_loss(kind: str, student_logits: torch.Tensor, teacher_logits: torch.Tensor | None,
                labels: torch.Tensor | None, temperature: float, alpha: float) -> torch.Tensor:
    """The logits part of the objective: alpha * soft + (1 - alpha) * CE, degrading cleanly — the classification
    case of ``task_losses.objective`` (the one per-output objective the trainer uses).

    kind "ce" or no teacher logits: CE only. No labels: the soft term only.
    """
    from edgekd.tasks import resolve
    from edgekd.train.task_losses import objective

    if (kind == "ce" or teacher_logits is None) and labels is None:
        raise ConfigError("cross-entropy training needs labelled data", where="finetune.loss",
                          hint="use loss = 'hinton' with a teacher for unlabelled or synthetic data")
    spec = resolve(None, output_shapes=[("logits", tuple(student_logits.shape))], labels=None)
    teacher = None if teacher_logits is None else {"logits": teacher_logits}
    return objective(spec, {"logits": student_logits}, teacher, labels, student_logits, logits_kind=kind,
                     temperature=temperature, alpha=alpha)


# ---------------------------------------------------------------- FitNets hints


def make_adapter(student_shape: torch.Size, teacher_shape: torch.Size, where: str) -> nn.Module:
    """A learnable map from the student's feature width to the teacher's (identity if equal).

    4-D (N,C,H,W): 1x1 conv, then average-pooled to the teacher's H,W when they differ.
    2-D/3-D (N,[L,]C): a linear layer on the last axis. Other mismatches are errors.
    """
    s, t = tuple(student_shape[1:]), tuple(teacher_shape[1:])
    if s == t:
        return nn.Identity()
    if len(s) == 3 and len(t) == 3:
        conv = nn.Conv2d(s[0], t[0], kernel_size=1, bias=False)
        if s[1:] == t[1:]:
            return conv
        if s[1] < t[1] or s[2] < t[2]:
            raise ConfigError(f"student feature map {s} is smaller than the teacher's {t}", where=where,
                              hint="pair layers whose student map is at least as large as the teacher's")
        return nn.Sequential(conv, nn.AdaptiveAvgPool2d(t[1:]))
    if len(s) == len(t) and len(s) in (1, 2) and s[:-1] == t[:-1]:
        return nn.Linear(s[-1], t[-1], bias=False)
    raise ConfigError(f"cannot adapt student feature of shape {s} to teacher feature of shape {t}", where=where,
                      hint="pair layers with the same rank (conv map to conv map, tokens to tokens)")


def hint_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(student_feat, teacher_feat)


# ---------------------------------------------------------------- attention transfer (MiniLM)


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Named self-attention layers we know how to read: nn.MultiheadAttention and timm's Attention."""
    def known(mod: nn.Module) -> bool:
        if isinstance(mod, nn.MultiheadAttention):
            return True
        return type(mod).__name__ == "Attention" and hasattr(mod, "qkv") and hasattr(mod, "num_heads")

    return [(name, mod) for name, mod in model.named_modules() if known(mod)]


def attention_probs(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Recompute the softmax attention distribution (N, heads, L, L) from the layer's input ``x``.

    Fused kernels (scaled_dot_product_attention) never expose the probabilities, so we recompute
    them from the layer's own projections; gradients flow into the student's q/k weights.
    """
    if isinstance(module, nn.MultiheadAttention):
        if not module.batch_first:
            x = x.transpose(0, 1)
        n, length, e = x.shape
        heads = module.num_heads
        if module.in_proj_weight is None:
            raise ConfigError("attention transfer needs MultiheadAttention with packed in_proj (kdim == vdim == embed_dim)",
                              where=type(module).__name__)
        w_q, w_k, _ = module.in_proj_weight.chunk(3)
        b_q, b_k = (module.in_proj_bias.chunk(3)[:2] if module.in_proj_bias is not None else (None, None))
        q = F.linear(x, w_q, b_q).view(n, length, heads, e // heads).transpose(1, 2)
        k = F.linear(x, w_k, b_k).view(n, length, heads, e // heads).transpose(1, 2)
        scale = 1.0 / math.sqrt(e // heads)
    else:  # timm Attention: qkv Linear, optional q_norm/k_norm
        n, length, _ = x.shape
        heads = module.num_heads
        qkv = module.qkv(x).reshape(n, length, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
        q = getattr(module, "q_norm", nn.Identity())(q)
        k = getattr(module, "k_norm", nn.Identity())(k)
        scale = float(getattr(module, "scale", q.shape[-1] ** -0.5))
    return torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1)


def attention_loss(student_probs: torch.Tensor, teacher_probs: torch.Tensor, where: str) -> torch.Tensor:
    """KL(teacher attention || student attention) per query row, averaged (MiniLM).

    Different head counts are compared head-averaged; different sequence lengths are an error.
    """
    if student_probs.shape[-1] != teacher_probs.shape[-1]:
        raise ConfigError(f"student attends over {student_probs.shape[-1]} tokens but the teacher over "
                          f"{teacher_probs.shape[-1]}", where=where, hint="use the same patching / sequence length")
    if student_probs.shape[1] != teacher_probs.shape[1]:
        student_probs = student_probs.mean(1, keepdim=True)
        teacher_probs = teacher_probs.mean(1, keepdim=True)
    log_s = torch.log(student_probs.clamp_min(1e-12))
    log_t = torch.log(teacher_probs.clamp_min(1e-12))
    rows = teacher_probs.shape[0] * teacher_probs.shape[1] * teacher_probs.shape[2]
    return (teacher_probs * (log_t - log_s)).sum() / rows
